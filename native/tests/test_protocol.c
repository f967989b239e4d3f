/* Framing and the flat JSON parser/writer. */
#include <stdlib.h>

#include "check.h"
#include "vmbeam_pagemover.h"

static struct pm_msg msg;

static int parses(const char *text)
{
    char err[160];

    return pm_parse(text, strlen(text), &msg, err, sizeof(err)) == 0;
}

static const char *parse_error(const char *text)
{
    static char err[160];

    err[0] = '\0';
    if (pm_parse(text, strlen(text), &msg, err, sizeof(err)) == 0)
        return "(parsed)";
    return err;
}

static void test_header(void)
{
    uint8_t hdr[PM_HEADER_SIZE];
    uint32_t len = 0;

    pm_header_encode(hdr, PM_KIND_REQUEST, 70000);
    CHECK(memcmp(hdr, "VBPM", 4) == 0);
    CHECK(pm_header_decode(hdr, PM_KIND_REQUEST, &len) != NULL); /* too big */
    pm_header_encode(hdr, PM_KIND_REQUEST, 513);
    CHECK(pm_header_decode(hdr, PM_KIND_REQUEST, &len) == NULL && len == 513);
    CHECK(hdr[8] == 0 && hdr[9] == 0 && hdr[10] == 2 && hdr[11] == 1);
    CHECK(pm_header_decode(hdr, PM_KIND_REPLY, &len) != NULL);
    hdr[4] = 2;
    CHECK(strcmp(pm_header_decode(hdr, PM_KIND_REQUEST, &len),
                 PM_E_VERSION) == 0);
    hdr[4] = PM_PROTOCOL_VERSION;
    hdr[0] = 'X';
    CHECK(strcmp(pm_header_decode(hdr, PM_KIND_REQUEST, &len),
                 PM_E_MALFORMED) == 0);
    pm_header_encode(hdr, PM_KIND_REQUEST, 1);
    hdr[7] = 1;
    CHECK(pm_header_decode(hdr, PM_KIND_REQUEST, &len) != NULL);
}

static void test_parse_good(void)
{
    long long v;

    CHECK(parses("{}") && msg.nfields == 0);
    CHECK(parses(" {\"op\" : \"allocate\", \"uuid\":\"a-1\",\n"
                 "\"size\": 268435456, \"x\": true, \"y\": null, "
                 "\"z\": -5} "));
    CHECK(msg.nfields == 6);
    CHECK(strcmp(pm_get_str(&msg, "op"), "allocate") == 0);
    CHECK(pm_get_int(&msg, "size", &v) == 0 && v == 268435456LL);
    CHECK(pm_get_int(&msg, "z", &v) == 0 && v == -5);
    CHECK(pm_get_int(&msg, "op", &v) < 0);
    CHECK(pm_get_str(&msg, "size") == NULL);
    CHECK(pm_get(&msg, "x")->type == PM_BOOL && pm_get(&msg, "x")->num == 1);
    CHECK(pm_get(&msg, "y")->type == PM_NULL);
    CHECK(pm_get(&msg, "missing") == NULL);
    CHECK(parses("{\"p\":\"a\\\"b\\\\c\\/d\\n\\u0041\"}"));
    CHECK(strcmp(pm_get_str(&msg, "p"), "a\"b\\c/d\nA") == 0);
    CHECK(parses("{\"n\":9223372036854775807}"));
    CHECK(parses("{\"n\":0}"));
}

static void test_parse_bad(void)
{
    char big[PM_MAX_STRING + 64];
    char many[1024];
    int i;

    CHECK_STR(parse_error(""), "expected a JSON object");
    CHECK_STR(parse_error("[]"), "expected a JSON object");
    CHECK_STR(parse_error("{\"a\":1"), "unterminated object");
    CHECK_STR(parse_error("{\"a\":1,}"), "expected a key");
    CHECK_STR(parse_error("{\"a\":{}}"), "nested");
    CHECK_STR(parse_error("{\"a\":[1]}"), "nested");
    CHECK_STR(parse_error("{\"a\":1.5}"), "only integers");
    CHECK_STR(parse_error("{\"a\":1e3}"), "only integers");
    CHECK_STR(parse_error("{\"a\":01}"), "leading zero");
    CHECK_STR(parse_error("{\"a\":99999999999999999999}"), "out of range");
    CHECK_STR(parse_error("{\"a\":1,\"a\":2}"), "duplicate key");
    CHECK_STR(parse_error("{\"a\":\"x\ny\"}"), "control character");
    CHECK_STR(parse_error("{\"a\":\"\\u00e9\"}"), "ASCII");
    CHECK_STR(parse_error("{\"a\":\"\\u0000\"}"), "ASCII");
    CHECK_STR(parse_error("{\"a\":\"\xc3\xa9\"}"), "non-ASCII");
    CHECK_STR(parse_error("{\"a\":\"\\q\"}"), "bad escape");
    CHECK_STR(parse_error("{\"a\":\"\\u12\"}"), "escape");
    CHECK_STR(parse_error("{\"a\":tru}"), "expected a value");
    CHECK_STR(parse_error("{\"a\":1} x"), "trailing");
    CHECK_STR(parse_error("{\"a\":\"x"), "unterminated string");
    CHECK_STR(parse_error("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}"),
              "too long");
    big[0] = '\0';
    strcat(big, "{\"a\":\"");
    for (i = 0; i < PM_MAX_STRING; i++)
        strcat(big, "x");
    strcat(big, "\"}");
    CHECK_STR(parse_error(big), "too long");
    strcpy(many, "{");
    for (i = 0; i <= PM_MAX_FIELDS; i++)
        sprintf(many + strlen(many), "%s\"k%d\":%d", i ? "," : "", i, i);
    strcat(many, "}");
    CHECK_STR(parse_error(many), "more than");
    /* Embedded NUL: the length, not the terminator, bounds the parse. */
    CHECK(pm_parse("{\"a\":1}\0junk", 12, &msg, big, 100) < 0);
}

static void test_writer_round_trip(void)
{
    static struct pm_out out;
    long long v;
    long len;

    pm_out_begin(&out);
    pm_out_bool(&out, "ok", 1);
    pm_out_str(&out, "path", "/dev/shm/x \"y\"\\z\n\x01");
    pm_out_int(&out, "size", -42);
    len = pm_out_end(&out);
    CHECK(len > 0);
    CHECK(pm_parse(out.buf, (size_t)len, &msg, (char[160]){0}, 160) == 0);
    CHECK(strcmp(pm_get_str(&msg, "path"), "/dev/shm/x \"y\"\\z\n\x01") == 0);
    CHECK(pm_get_int(&msg, "size", &v) == 0 && v == -42);
    /* An overflowing reply is detected, not truncated into bad JSON. */
    pm_out_begin(&out);
    {
        char *chunk = malloc(4000);
        int i;

        memset(chunk, 'a', 3999);
        chunk[3999] = '\0';
        for (i = 0; i < 20; i++)
            pm_out_str(&out, "k", chunk);
        free(chunk);
    }
    CHECK(pm_out_end(&out) == -1);
}

int main(void)
{
    test_header();
    test_parse_good();
    test_parse_bad();
    test_writer_round_trip();
    return check_report("test_protocol");
}
