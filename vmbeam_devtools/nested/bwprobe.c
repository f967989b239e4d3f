/*
 * vmbeam-bwprobe: memory bandwidth of a mapping, for the nested sibling's
 * caching question (docs/design/nested.md).
 *
 *   vmbeam-bwprobe anon MIB         anonymous memory (the reference)
 *   vmbeam-bwprobe FILE MIB         MIB of FILE mapped shared (a BAR's
 *                                   resource2 / resource2_wc in an L1)
 *
 * Writes, then reads, the region a few times with 64-bit words and prints
 * one line: "bwprobe target=... mib=N write_mb_s=W read_mb_s=R".
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s anon|FILE MIB\n", argv[0]);
        return 2;
    }
    size_t bytes = (size_t)strtoul(argv[2], NULL, 10) << 20;
    if (bytes == 0) {
        fprintf(stderr, "MIB must be a positive number\n");
        return 2;
    }
    volatile uint64_t *p;
    if (strcmp(argv[1], "anon") == 0) {
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    } else {
        int fd = open(argv[1], O_RDWR);
        if (fd < 0) {
            perror(argv[1]);
            return 1;
        }
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    }
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    size_t words = bytes / sizeof(uint64_t);
    const int rounds = 3;
    uint64_t sum = 0;
    double t0 = now();
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < words; i++)
            p[i] = i + r;
    double t1 = now();
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < words; i++)
            sum += p[i];
    double t2 = now();
    double mb = (double)bytes * rounds / 1e6;
    printf("bwprobe target=%s mib=%s write_mb_s=%.1f read_mb_s=%.1f "
           "checksum=%llu\n", argv[1], argv[2], mb / (t1 - t0),
           mb / (t2 - t1), (unsigned long long)sum);
    return 0;
}
