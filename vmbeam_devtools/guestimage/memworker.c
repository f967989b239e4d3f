/*
 * memworker - guest memory workload for nova-vmbeam migration tests.
 *
 * Usage: memworker RAM_MIB DIRTY_MIB_PER_S [REPORT_INTERVAL_MS
 *                                          [VERIFY_MIB_PER_S]]
 *
 * DIRTY_MIB_PER_S 0 only verifies.  VERIFY_MIB_PER_S 0 (the default)
 * verifies as fast as the CPU allows.
 *
 * Allocates RAM_MIB MiB and gives every 4 KiB page content that is a pure
 * function of (page index, sequence number).  The expected sequence number
 * of each page lives in a separate array.  The main loop rewrites pages
 * round-robin at the requested rate (bumping their sequence number) and,
 * with all remaining CPU time, re-verifies pages round-robin.  A page that
 * went missing (zeroed), is stale (older seq) or is corrupted is reported
 * on stdout, which the guest's /init points at the serial console.
 *
 * Single threaded on purpose: dirtying and verifying never race, so any
 * mismatch is a real memory error, not a test artefact.
 *
 * Built with: gcc -static -O2 -o memworker memworker.c (with worker.h)
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

#define PAGE_SIZE 4096u
#define PAGES_PER_MIB (1024u * 1024u / PAGE_SIZE)
#define MAGIC 0x564d4245414d5047ull /* "VMBEAMPG" */
#define FILL_WORDS ((PAGE_SIZE - sizeof(struct page_header)) / 8)
/* Pages handled per loop iteration; small so the clock is checked often. */
#define DIRTY_CHUNK 64u
#define VERIFY_CHUNK 16u
/* Don't flood a 115200 baud console if memory is badly broken. */
#define MAX_ERROR_LINES 100u

struct page_header {
    uint64_t magic;
    uint64_t index;
    uint64_t seq;
    uint64_t checksum; /* over magic, index and seq: catches torn headers */
};

static uint8_t *mem;
static uint32_t *expected_seq; /* outside 'mem', what each page must hold */
static uint64_t npages;
static uint64_t errors;

static inline uint64_t header_checksum(uint64_t index, uint64_t seq)
{
    return mix(MAGIC ^ mix(index) ^ (seq * 0x9e3779b97f4a7c15ull));
}

/* Seed of the fill pattern; differs for every (index, seq) pair. */
static inline uint64_t fill_seed(uint64_t index, uint64_t seq)
{
    return mix((index << 32) ^ seq ^ 0x5555aaaa5555aaaaull);
}

/*
 * Pages (at most 'chunk') due now at 'rate_mib' MiB/s, 'dt' seconds after
 * the previous call.  The debt is capped at one second's worth, so a stall
 * (a paused or migrating VM) is not followed by a burst.
 */
static uint64_t owed(double *debt, uint64_t rate_mib, double dt,
                     uint64_t chunk)
{
    double cap = (double)rate_mib * PAGES_PER_MIB;
    uint64_t n;

    *debt += dt * cap;
    if (*debt > cap)
        *debt = cap;
    n = *debt < chunk ? (uint64_t)*debt : chunk;
    *debt -= n;
    return n;
}

static void write_page(uint64_t index, uint64_t seq)
{
    struct page_header *h = (struct page_header *)(mem + index * PAGE_SIZE);
    uint64_t *w = (uint64_t *)(h + 1);
    uint64_t v = fill_seed(index, seq);
    unsigned i;

    /* Fill first, header last: a page is only "valid" once fully written. */
    for (i = 0; i < FILL_WORDS; i++)
        w[i] = v + i * 0x9e3779b97f4a7c15ull;
    h->magic = MAGIC;
    h->index = index;
    h->seq = seq;
    h->checksum = header_checksum(index, seq);
    expected_seq[index] = (uint32_t)seq;
}

static void verify_page(uint64_t index)
{
    struct page_header *h = (struct page_header *)(mem + index * PAGE_SIZE);
    const uint64_t *w = (const uint64_t *)(h + 1);
    uint64_t seq = expected_seq[index];
    uint64_t v = fill_seed(index, seq);
    const char *reason = NULL;
    unsigned i;

    if (h->magic != MAGIC)
        reason = "magic";
    else if (h->index != index)
        reason = "index";
    else if (h->seq != seq)
        reason = "seq";
    else if (h->checksum != header_checksum(index, seq))
        reason = "checksum";
    else
        for (i = 0; i < FILL_WORDS; i++)
            if (w[i] != v + i * 0x9e3779b97f4a7c15ull) {
                reason = "pattern";
                break;
            }
    if (reason == NULL)
        return;

    errors++;
    if (errors <= MAX_ERROR_LINES)
        say("VMBEAM-WORKER ERROR page=%llu expected_seq=%llu found_seq=%llu"
            " reason=%s", (unsigned long long)index,
            (unsigned long long)seq, (unsigned long long)h->seq, reason);
    /* Repair it so one bad page is counted once, not on every pass. */
    write_page(index, seq + 1);
}

int main(int argc, char **argv)
{
    uint64_t ram_mib, dirty_rate, report_ms, verify_rate, n;
    uint64_t dirty_next = 0, verify_next = 0;
    uint64_t dirtied_pages = 0, passes = 0, tick = 0, i;
    double dirty_debt = 0, verify_debt = 0, last, next_report, now;
    int idle;

    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s RAM_MIB DIRTY_MIB_PER_S"
                " [REPORT_INTERVAL_MS [VERIFY_MIB_PER_S]]\n", argv[0]);
        return 2;
    }
    ram_mib = strtoull(argv[1], NULL, 10);
    dirty_rate = strtoull(argv[2], NULL, 10);
    report_ms = argc > 3 ? strtoull(argv[3], NULL, 10) : 500;
    verify_rate = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    if (ram_mib == 0 || report_ms == 0) {
        fprintf(stderr, "memworker: RAM_MIB and REPORT_INTERVAL_MS must be"
                " > 0\n");
        return 2;
    }

    npages = ram_mib * PAGES_PER_MIB;
    /* mmap rather than malloc: page aligned, and never shrunk/reused. */
    mem = mmap(NULL, npages * PAGE_SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expected_seq = calloc(npages, sizeof(*expected_seq));
    if (mem == MAP_FAILED || expected_seq == NULL) {
        say("VMBEAM-WORKER FATAL cannot allocate %llu MiB",
            (unsigned long long)ram_mib);
        return 1;
    }
    /* Touch every page now so the whole working set is resident. */
    for (i = 0; i < npages; i++)
        write_page(i, 1);

    say("VMBEAM-WORKER ready ram_mib=%llu dirty_mib_s=%llu",
        (unsigned long long)ram_mib, (unsigned long long)dirty_rate);

    last = now_s();
    next_report = last + report_ms / 1000.0;
    for (;;) {
        now = now_s();

        /*
         * Dirty the pages the rate says we owe by now.  Done in bounded
         * chunks so verification still makes progress if the requested
         * rate is more than the (emulated) CPU can deliver.
         */
        n = owed(&dirty_debt, dirty_rate, now - last, DIRTY_CHUNK);
        for (i = 0; i < n; i++) {
            write_page(dirty_next, expected_seq[dirty_next] + 1);
            dirty_next = (dirty_next + 1) % npages;
        }
        dirtied_pages += n;
        idle = n == 0;

        /*
         * Verify a slice.  Unlimited (rate 0) it soaks up all the CPU left;
         * rate limited, the guest can idle and spare the host's CPUs.
         */
        n = verify_rate ? owed(&verify_debt, verify_rate, now - last,
                               VERIFY_CHUNK) : VERIFY_CHUNK;
        for (i = 0; i < n; i++) {
            verify_page(verify_next);
            if (++verify_next == npages) {
                verify_next = 0;
                passes++;
            }
        }
        idle = idle && n == 0;
        last = now;

        if (idle) {
            struct timespec ms = {0, 1000000};

            nanosleep(&ms, NULL);
        }

        if (now >= next_report) {
            tick++;
            say("VMBEAM-WORKER tick=%llu passes=%llu dirtied_mib=%llu"
                " errors=%llu", (unsigned long long)tick,
                (unsigned long long)passes,
                (unsigned long long)(dirtied_pages / PAGES_PER_MIB),
                (unsigned long long)errors);
            /* Re-anchor after a long stall (e.g. paused VM): no bursts. */
            next_report += report_ms / 1000.0;
            if (next_report < now)
                next_report = now + report_ms / 1000.0;
        }
    }
}
