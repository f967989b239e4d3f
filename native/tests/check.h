/* The smallest test harness: CHECK records a failure and carries on. */
#ifndef PAGEMOVER_CHECK_H
#define PAGEMOVER_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond) do { \
    check_count++; \
    if (!(cond)) { \
        check_failures++; \
        fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
    } \
} while (0)

#define CHECK_STR(haystack, needle) do { \
    const char *check_h_ = (haystack); \
    check_count++; \
    if (!check_h_ || !strstr(check_h_, (needle))) { \
        check_failures++; \
        fprintf(stderr, "%s:%d: FAILED: \"%s\" not in \"%s\"\n", __FILE__, \
                __LINE__, (needle), check_h_ ? check_h_ : "(null)"); \
    } \
} while (0)

static int check_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
