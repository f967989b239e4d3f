/*
 * Fuzz the protocol parser. Built with -DPM_LIBFUZZER (make fuzz, clang)
 * this is a libFuzzer target; otherwise main() runs a deterministic
 * mutation fuzzer (fixed seed, so a failure reproduces) over valid
 * messages: bit flips, byte changes, insertions, deletions, truncation and
 * splices. Under ASan/UBSan any out-of-bounds read or overflow aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmbeam_pagemover.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pm_msg msg;
    static struct pm_out out;
    char err[160];
    uint32_t len;
    int i;

    if (size >= PM_HEADER_SIZE)
        pm_header_decode(data, PM_KIND_REQUEST, &len);
    if (pm_parse((const char *)data, size, &msg, err, sizeof(err)) == 0) {
        /* Whatever parsed must be well-formed: re-encode and re-parse. */
        pm_out_begin(&out);
        for (i = 0; i < msg.nfields; i++) {
            const struct pm_field *f = &msg.fields[i];

            if (f->type == PM_STR)
                pm_out_str(&out, f->key, f->str);
            else if (f->type == PM_INT)
                pm_out_int(&out, f->key, f->num);
            else if (f->type == PM_BOOL)
                pm_out_bool(&out, f->key, (int)f->num);
            else
                pm_out_raw(&out, f->key, "null");
        }
        {
            long n = pm_out_end(&out);
            static struct pm_msg again;

            if (n >= 0 && pm_parse(out.buf, (size_t)n, &again, err,
                                   sizeof(err)) != 0) {
                fprintf(stderr, "re-encoded message does not parse: %s\n",
                        err);
                abort();
            }
            if (n >= 0 && again.nfields != msg.nfields)
                abort();
        }
    } else if (err[0] == '\0') {
        abort();   /* every refusal says why */
    }
    return 0;
}

#ifndef PM_LIBFUZZER
static uint64_t state = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static const char *seeds[] = {
    "{\"op\":\"hello\",\"version\":1}",
    "{\"op\":\"allocate\",\"uuid\":\"0b6f1c2e-5d1a-4e5b-9c3d-2f1e0a9b8c7d\","
    "\"size\":268435456}",
    "{\"op\":\"verify\",\"uuid\":\"g1\",\"pid\":12345}",
    "{\"op\":\"attach\",\"uuid\":\"g1\",\"qmp\":\"/run/x/qmp.sock\","
    "\"device\":\"pool0\",\"timeout\":10}",
    "{\"p\":\"a\\\"b\\\\c\\/d\\n\\u0041\",\"t\":true,\"f\":false,\"n\":null,"
    "\"i\":-9223372036854775807}",
    "  { }  ",
};

int main(int argc, char **argv)
{
    static uint8_t buf[PM_MAX_PAYLOAD + 64];
    long runs = argc > 1 ? atol(argv[1]) : 100000, r;
    size_t nseeds = sizeof(seeds) / sizeof(seeds[0]);

    for (r = 0; r < runs; r++) {
        const char *seed = seeds[next() % nseeds];
        size_t len = strlen(seed), i;
        int edits = 1 + (int)(next() % 8), e;

        memcpy(buf, seed, len);
        for (e = 0; e < edits; e++) {
            size_t at = len ? next() % len : 0;

            switch (next() % 7) {
            case 0:
                if (len)
                    buf[at] ^= (uint8_t)(1u << (next() % 8));
                break;
            case 1:
                if (len)
                    buf[at] = (uint8_t)next();
                break;
            case 2:
                if (len)
                    buf[at] = (uint8_t)"{}[]\":,\\0123456789-etruflsn \n"
                        [next() % 30];
                break;
            case 3:
                if (len < sizeof(buf) - 1) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)next();
                    len++;
                }
                break;
            case 4:
                if (len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 5:
                len = at;
                break;
            default: {
                /* splice in a slice of another seed */
                const char *other = seeds[next() % nseeds];
                size_t olen = strlen(other), from = next() % olen;
                size_t n = 1 + next() % (olen - from);

                if (len + n < sizeof(buf)) {
                    memmove(buf + at + n, buf + at, len - at);
                    memcpy(buf + at, other + from, n);
                    len += n;
                }
            }
            }
        }
        /* Also as a framed message: header, then the payload. */
        if (r % 16 == 0 && len + PM_HEADER_SIZE < sizeof(buf)) {
            memmove(buf + PM_HEADER_SIZE, buf, len);
            pm_header_encode(buf, PM_KIND_REQUEST, (uint32_t)len);
            for (i = 0; i < 2; i++)
                buf[next() % PM_HEADER_SIZE] ^= (uint8_t)next();
            LLVMFuzzerTestOneInput(buf, len + PM_HEADER_SIZE);
            continue;
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("fuzz_protocol: %ld mutated messages, no crash\n", runs);
    return 0;
}
#endif
