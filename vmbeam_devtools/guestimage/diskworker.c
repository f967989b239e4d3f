/*
 * diskworker - guest block device workload for nova-vmbeam move tests.
 *
 * Usage: diskworker DEVICE [REPORT_INTERVAL_MS]
 *
 * Every interval it writes one 4 KiB record to the next of up to 256 slots
 * in the first MiB of DEVICE, with O_DIRECT and fdatasync() so the record
 * really reaches the virtual disk, and reads records back with O_DIRECT
 * (from the disk, not the page cache) to verify them:
 *   - the record it just wrote,
 *   - the one before it (written one interval earlier, perhaps by the
 *     source QEMU of a move),
 *   - the next 8 slots of a round-robin scrub, so every record on the disk
 *     is re-read every 32 intervals.
 * A record is a header (magic, seq, slot, checksum) and a fill pattern,
 * all a pure function of (seq, slot).  Only slots written by this run are
 * verified: what an earlier run left on the disk does not matter.
 *
 * Console lines (stdout; one write(2) each):
 *   VMBEAM-DISK ready dev=DEV slots=N direct=0|1
 *   VMBEAM-DISK seq=N ok errors=E retries=R io_ms=T
 *       errors: cumulative; retries: cumulative I/O calls that failed and
 *       then succeeded on a retry; io_ms: time this interval's I/O took.
 *   VMBEAM-DISK seq=N ERROR ...   instead of the ok line
 *   VMBEAM-DISK ERROR ...         cannot use DEVICE at all (then exits 1)
 *
 * A disk that stops answering (a paused or moving VM) just blocks the I/O
 * and delays the next line.  A failed read/write/fsync is retried a few
 * times before it counts as an error; either way the worker carries on.
 *
 * Built with: gcc -static -O2 -o diskworker diskworker.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

#define RECORD_SIZE 4096
#define MAX_SLOTS 256u /* 1 MiB */
#define MAGIC 0x4b444d4145424d56ull /* "VMBEAMDK" */
#define FILL_WORDS ((RECORD_SIZE - sizeof(struct record_header)) / 8)
/* Older records re-read per interval: all 256 every 32 intervals. */
#define SCRUB_PER_STEP 8u
#define IO_ATTEMPTS 5
#define RETRY_DELAY_MS 200
/* Don't flood a 115200 baud console if the disk is badly broken. */
#define MAX_ERROR_LINES 100u

struct record_header {
    uint64_t magic;
    uint64_t seq;
    uint64_t slot;
    uint64_t checksum; /* over magic, seq and slot */
};

static int fd;
static const char *device;
static unsigned slots;
static uint64_t *slot_seq; /* seq each slot holds; 0: not written by us */
static uint64_t errors, retries, error_lines;
static uint8_t *wbuf, *rbuf; /* O_DIRECT wants aligned buffers */

static inline uint64_t header_checksum(uint64_t seq, uint64_t slot)
{
    return mix(MAGIC ^ mix(slot) ^ (seq * 0x9e3779b97f4a7c15ull));
}

/* An ERROR line for record 'seq', and one more error counted. */
static void fail(uint64_t seq, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    errors++;
    if (++error_lines > MAX_ERROR_LINES)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    say("VMBEAM-DISK seq=%llu ERROR %s", (unsigned long long)seq, msg);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * One record-sized pwrite, pread or fdatasync, retried IO_ATTEMPTS times.
 * Returns 0, or -1 after reporting an ERROR line for 'seq'.
 */
static int do_io(char op, unsigned slot, uint64_t seq)
{
    off_t off = (off_t)slot * RECORD_SIZE;
    const char *name = op == 'w' ? "write" : op == 'r' ? "read" : "fsync";
    const char *reason = NULL;
    ssize_t n;
    int attempt;

    for (attempt = 1; attempt <= IO_ATTEMPTS; attempt++) {
        if (attempt > 1)
            sleep_ms(RETRY_DELAY_MS);
        if (op == 'w')
            n = pwrite(fd, wbuf, RECORD_SIZE, off);
        else if (op == 'r')
            n = pread(fd, rbuf, RECORD_SIZE, off);
        else
            n = fdatasync(fd) == 0 ? RECORD_SIZE : -1;
        if (n == RECORD_SIZE) {
            retries += attempt - 1;
            return 0;
        }
        reason = n < 0 ? strerror(errno) : "short transfer";
    }
    fail(seq, "op=%s slot=%u attempts=%d reason=%s", name, slot,
         IO_ATTEMPTS, reason);
    return -1;
}

static void fill_record(uint8_t *buf, uint64_t seq, unsigned slot)
{
    struct record_header *h = (struct record_header *)buf;
    uint64_t *w = (uint64_t *)(h + 1);
    uint64_t v = mix(seq ^ ((uint64_t)slot << 48) ^ 0xa5a55a5aa5a55a5aull);
    unsigned i;

    h->magic = MAGIC;
    h->seq = seq;
    h->slot = slot;
    h->checksum = header_checksum(seq, slot);
    for (i = 0; i < FILL_WORDS; i++)
        w[i] = v + i * 0x9e3779b97f4a7c15ull;
}

/* Read slot back from the disk and check it holds record 'want'. */
static void verify_slot(uint64_t seq, unsigned slot)
{
    const struct record_header *h = (const struct record_header *)rbuf;
    uint64_t want = slot_seq[slot];
    const char *reason = NULL;

    if (want == 0 || do_io('r', slot, seq) < 0)
        return;
    fill_record(wbuf, want, slot); /* the expected content */
    if (h->magic != MAGIC)
        reason = "magic";
    else if (h->slot != slot)
        reason = "slot";
    else if (h->seq != want)
        reason = "seq";
    else if (h->checksum != header_checksum(h->seq, h->slot))
        reason = "checksum";
    else if (memcmp(rbuf, wbuf, RECORD_SIZE) != 0)
        reason = "pattern";
    if (reason == NULL)
        return;
    fail(seq, "op=verify slot=%u expected_seq=%llu found_seq=%llu"
         " reason=%s", slot, (unsigned long long)want,
         (unsigned long long)h->seq, reason);
    /* Forget it so one bad record is counted once, not on every scrub. */
    slot_seq[slot] = 0;
}

/* Write record 'seq'; verify it, its predecessor and a few others. */
static void step(uint64_t seq)
{
    static unsigned scrub;
    unsigned slot = (unsigned)((seq - 1) % slots);
    unsigned prev = (slot + slots - 1) % slots;
    unsigned written = seq < slots ? (unsigned)seq : slots;
    unsigned i;

    fill_record(wbuf, seq, slot);
    slot_seq[slot] = 0; /* unknown until written and synced */
    if (do_io('w', slot, seq) < 0 || do_io('s', slot, seq) < 0)
        return;
    slot_seq[slot] = seq;
    verify_slot(seq, slot);
    if (prev != slot)
        verify_slot(seq, prev);
    for (i = 0; i < SCRUB_PER_STEP && i < written; i++) {
        scrub = (scrub + 1) % written;
        if (scrub != slot && scrub != prev)
            verify_slot(seq, scrub);
    }
}

int main(int argc, char **argv)
{
    uint64_t report_ms, seq = 0, errors_before;
    double start, next;
    off_t size;
    int direct = 1;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s DEVICE [REPORT_INTERVAL_MS]\n", argv[0]);
        return 2;
    }
    device = argv[1];
    report_ms = argc > 2 ? strtoull(argv[2], NULL, 10) : 500;
    if (report_ms == 0)
        report_ms = 500;

    fd = open(device, O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0 && errno == EINVAL) {
        /* No O_DIRECT (not a block device?): synchronous, cached I/O. */
        direct = 0;
        fd = open(device, O_RDWR | O_DSYNC | O_CLOEXEC);
    }
    if (fd < 0) {
        say("VMBEAM-DISK ERROR cannot open %s: %s", device, strerror(errno));
        return 1;
    }
    size = lseek(fd, 0, SEEK_END);
    slots = size < 0 ? 0 : size / RECORD_SIZE;
    if (slots > MAX_SLOTS)
        slots = MAX_SLOTS;
    slot_seq = calloc(MAX_SLOTS, sizeof(*slot_seq));
    if (slots == 0 || slot_seq == NULL ||
        posix_memalign((void **)&wbuf, RECORD_SIZE, RECORD_SIZE) ||
        posix_memalign((void **)&rbuf, RECORD_SIZE, RECORD_SIZE)) {
        say("VMBEAM-DISK ERROR cannot use %s: size=%lld", device,
            (long long)size);
        return 1;
    }
    say("VMBEAM-DISK ready dev=%s slots=%u direct=%d", device, slots,
        direct);

    next = now_s();
    for (;;) {
        seq++;
        errors_before = errors;
        start = now_s();
        step(seq);
        if (errors == errors_before)
            say("VMBEAM-DISK seq=%llu ok errors=%llu retries=%llu"
                " io_ms=%.0f", (unsigned long long)seq,
                (unsigned long long)errors, (unsigned long long)retries,
                (now_s() - start) * 1000);

        /* Re-anchor after a long stall (e.g. paused VM): no bursts. */
        next += report_ms / 1000.0;
        if (next < now_s())
            next = now_s();
        else
            sleep_ms((unsigned)((next - now_s()) * 1000));
    }
}
