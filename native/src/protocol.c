/*
 * Framing and the flat JSON objects of the pagemover protocol.
 *
 * The parser only ever sees bytes from a socket, so it is strict and
 * bounded: every read is checked against the end of the buffer, strings
 * are copied into a fixed arena, and anything outside the small grammar
 * (flat object; string, integer, true, false, null values) is refused.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmbeam_pagemover.h"

void pm_header_encode(uint8_t hdr[PM_HEADER_SIZE], int kind, uint32_t len)
{
    memcpy(hdr, PM_MAGIC, 4);
    hdr[4] = PM_PROTOCOL_VERSION;
    hdr[5] = (uint8_t)kind;
    hdr[6] = hdr[7] = 0;
    hdr[8] = (uint8_t)(len >> 24);
    hdr[9] = (uint8_t)(len >> 16);
    hdr[10] = (uint8_t)(len >> 8);
    hdr[11] = (uint8_t)len;
}

const char *pm_header_decode(const uint8_t hdr[PM_HEADER_SIZE], int kind,
                             uint32_t *len)
{
    uint32_t n;

    if (memcmp(hdr, PM_MAGIC, 4) != 0)
        return PM_E_MALFORMED;
    if (hdr[4] != PM_PROTOCOL_VERSION)
        return PM_E_VERSION;
    if (hdr[5] != kind || hdr[6] || hdr[7])
        return PM_E_MALFORMED;
    n = ((uint32_t)hdr[8] << 24) | ((uint32_t)hdr[9] << 16) |
        ((uint32_t)hdr[10] << 8) | hdr[11];
    if (n > PM_MAX_PAYLOAD)
        return PM_E_MALFORMED;
    *len = n;
    return NULL;
}

struct cursor {
    const char *p;
    const char *end;
    char *err;
    size_t errlen;
};

static int fail(struct cursor *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' ||
                             *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A string at c->p (after the quote) into dst[0..cap), NUL-terminated. */
static int parse_string(struct cursor *c, char *dst, size_t cap, size_t *out)
{
    size_t n = 0;

    for (;;) {
        unsigned char ch;

        if (c->p >= c->end)
            return fail(c, "unterminated string");
        ch = (unsigned char)*c->p++;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return fail(c, "control character in string");
        /* Names, ids and paths are ASCII: anything else is refused rather
         * than passed on half-understood. */
        if (ch >= 0x80)
            return fail(c, "non-ASCII byte in string");
        if (ch == '\\') {
            if (c->p >= c->end)
                return fail(c, "unterminated escape");
            ch = (unsigned char)*c->p++;
            switch (ch) {
            case '"': case '\\': case '/':
                break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                int i, v = 0;

                if (c->end - c->p < 4)
                    return fail(c, "short \\u escape");
                for (i = 0; i < 4; i++) {
                    int h = hexval(c->p[i]);

                    if (h < 0)
                        return fail(c, "bad \\u escape");
                    v = v * 16 + h;
                }
                c->p += 4;
                if (v == 0 || v > 0x7f)
                    return fail(c, "\\u escape outside printable ASCII");
                ch = (unsigned char)v;
                break;
            }
            default:
                return fail(c, "bad escape \\%c", ch);
            }
        }
        if (n + 1 >= cap)
            return fail(c, "string too long");
        dst[n++] = (char)ch;
    }
    dst[n] = '\0';
    *out = n;
    return 0;
}

static int parse_int(struct cursor *c, long long *out)
{
    int neg = 0, digits = 0;
    unsigned long long v = 0;

    if (c->p < c->end && *c->p == '-') {
        neg = 1;
        c->p++;
    }
    if (c->p < c->end && *c->p == '0' && c->end - c->p > 1 &&
        c->p[1] >= '0' && c->p[1] <= '9')
        return fail(c, "leading zero in number");
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');

        if (v > (9223372036854775807ULL - d) / 10)
            return fail(c, "integer out of range");
        v = v * 10 + d;
        c->p++;
        digits++;
    }
    if (!digits)
        return fail(c, "expected a value");
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return fail(c, "only integers are accepted");
    *out = neg ? -(long long)v : (long long)v;
    return 0;
}

static int match_word(struct cursor *c, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

int pm_parse(const char *buf, size_t len, struct pm_msg *msg,
             char *err, size_t errlen)
{
    struct cursor c = { buf, buf + len, err, errlen };

    msg->nfields = 0;
    msg->used = 0;
    if (len > PM_MAX_PAYLOAD)
        return fail(&c, "payload too large");
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{')
        return fail(&c, "expected a JSON object");
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
        goto done;
    }
    for (;;) {
        struct pm_field *f;
        size_t n;
        int i;

        if (msg->nfields >= PM_MAX_FIELDS)
            return fail(&c, "more than %d fields", PM_MAX_FIELDS);
        f = &msg->fields[msg->nfields];
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != '"')
            return fail(&c, "expected a key");
        if (parse_string(&c, f->key, sizeof(f->key), &n) < 0)
            return -1;
        for (i = 0; i < msg->nfields; i++)
            if (strcmp(msg->fields[i].key, f->key) == 0)
                return fail(&c, "duplicate key \"%s\"", f->key);
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != ':')
            return fail(&c, "expected ':'");
        skip_ws(&c);
        if (c.p >= c.end)
            return fail(&c, "expected a value");
        f->str = NULL;
        f->num = 0;
        if (*c.p == '"') {
            size_t room = sizeof(msg->strings) - msg->used;
            char *dst = msg->strings + msg->used;

            c.p++;
            if (room > PM_MAX_STRING)
                room = PM_MAX_STRING;
            if (parse_string(&c, dst, room, &n) < 0)
                return -1;
            f->type = PM_STR;
            f->str = dst;
            msg->used += n + 1;
        } else if (match_word(&c, "true")) {
            f->type = PM_BOOL;
            f->num = 1;
        } else if (match_word(&c, "false")) {
            f->type = PM_BOOL;
        } else if (match_word(&c, "null")) {
            f->type = PM_NULL;
        } else if (*c.p == '{' || *c.p == '[') {
            return fail(&c, "nested values are not accepted");
        } else {
            if (parse_int(&c, &f->num) < 0)
                return -1;
            f->type = PM_INT;
        }
        msg->nfields++;
        skip_ws(&c);
        if (c.p >= c.end)
            return fail(&c, "unterminated object");
        if (*c.p == ',') {
            c.p++;
            continue;
        }
        if (*c.p == '}') {
            c.p++;
            break;
        }
        return fail(&c, "expected ',' or '}'");
    }
done:
    skip_ws(&c);
    if (c.p != c.end)
        return fail(&c, "trailing bytes after the object");
    return 0;
}

const struct pm_field *pm_get(const struct pm_msg *msg, const char *key)
{
    int i;

    for (i = 0; i < msg->nfields; i++)
        if (strcmp(msg->fields[i].key, key) == 0)
            return &msg->fields[i];
    return NULL;
}

const char *pm_get_str(const struct pm_msg *msg, const char *key)
{
    const struct pm_field *f = pm_get(msg, key);

    return f && f->type == PM_STR ? f->str : NULL;
}

int pm_get_int(const struct pm_msg *msg, const char *key, long long *out)
{
    const struct pm_field *f = pm_get(msg, key);

    if (!f || f->type != PM_INT)
        return -1;
    *out = f->num;
    return 0;
}

int pm_json_quote(char *buf, size_t size, const char *value)
{
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)value;

#define PUT(ch) do { if (n + 1 >= size) return -1; buf[n++] = (ch); } while (0)
    PUT('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            PUT('\\');
            PUT((char)*s);
        } else if (*s < 0x20 || *s >= 0x7f) {
            /* Paths and messages are ASCII in practice; escape the rest
             * byte-wise so the reply is always valid JSON. */
            char esc[8];
            int i;

            snprintf(esc, sizeof(esc), "\\u%04x", *s);
            for (i = 0; esc[i]; i++)
                PUT(esc[i]);
        } else {
            PUT((char)*s);
        }
    }
    PUT('"');
#undef PUT
    buf[n] = '\0';
    return (int)n;
}

static void out_append(struct pm_out *out, const char *text, size_t n)
{
    if (out->overflow || out->len + n >= sizeof(out->buf)) {
        out->overflow = 1;
        return;
    }
    memcpy(out->buf + out->len, text, n);
    out->len += n;
    out->buf[out->len] = '\0';
}

static void out_key(struct pm_out *out, const char *key)
{
    char quoted[PM_MAX_KEY * 6 + 3];

    if (out->need_comma)
        out_append(out, ",", 1);
    out->need_comma = 1;
    if (pm_json_quote(quoted, sizeof(quoted), key) < 0) {
        out->overflow = 1;
        return;
    }
    out_append(out, quoted, strlen(quoted));
    out_append(out, ":", 1);
}

void pm_out_begin(struct pm_out *out)
{
    out->len = 0;
    out->overflow = 0;
    out->need_comma = 0;
    out_append(out, "{", 1);
}

void pm_out_str(struct pm_out *out, const char *key, const char *value)
{
    static char quoted[PM_MAX_STRING * 6 + 3];

    out_key(out, key);
    if (pm_json_quote(quoted, sizeof(quoted), value) < 0) {
        out->overflow = 1;
        return;
    }
    out_append(out, quoted, strlen(quoted));
}

void pm_out_int(struct pm_out *out, const char *key, long long value)
{
    char num[32];

    out_key(out, key);
    snprintf(num, sizeof(num), "%lld", value);
    out_append(out, num, strlen(num));
}

void pm_out_bool(struct pm_out *out, const char *key, int value)
{
    out_key(out, key);
    out_append(out, value ? "true" : "false", value ? 4 : 5);
}

void pm_out_raw(struct pm_out *out, const char *key, const char *json)
{
    out_key(out, key);
    out_append(out, json, strlen(json));
}

long pm_out_end(struct pm_out *out)
{
    out_append(out, "}", 1);
    return out->overflow ? -1 : (long)out->len;
}
