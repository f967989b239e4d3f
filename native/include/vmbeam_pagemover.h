/*
 * vmbeam-pagemoverd wire protocol and client library.
 *
 * A message is a 12-byte header followed by a JSON object:
 *
 *   offset 0  4 bytes  magic "VBPM"
 *   offset 4  1 byte   protocol version (PM_PROTOCOL_VERSION)
 *   offset 5  1 byte   kind: 0 request, 1 reply
 *   offset 6  2 bytes  reserved, zero
 *   offset 8  4 bytes  payload length, big-endian, at most PM_MAX_PAYLOAD
 *
 * Requests are flat JSON objects (string, integer, boolean or null values)
 * with an "op" field; replies carry "ok" and, on failure, "error" (one of
 * the codes below) and "message". A reply may come with one descriptor
 * attached (SCM_RIGHTS). See docs/design/pagemover-protocol.md.
 */
#ifndef VMBEAM_PAGEMOVER_H
#define VMBEAM_PAGEMOVER_H

#include <stddef.h>
#include <stdint.h>

#define PM_PROTOCOL_VERSION 1
#define PM_MAGIC "VBPM"
#define PM_HEADER_SIZE 12
#define PM_MAX_PAYLOAD 65536
#define PM_KIND_REQUEST 0
#define PM_KIND_REPLY 1

#define PM_MAX_FIELDS 16
#define PM_MAX_KEY 32
#define PM_MAX_STRING 4096

/* Error codes: the "error" field of a failed reply. */
#define PM_E_MALFORMED "malformed"
#define PM_E_VERSION "unsupported_version"
#define PM_E_UNKNOWN_OP "unknown_op"
#define PM_E_BAD_ARGUMENT "bad_argument"
#define PM_E_UNKNOWN_POOL "unknown_pool"
#define PM_E_SIZE_MISMATCH "size_mismatch"
#define PM_E_WRONG_OWNER "wrong_owner"
#define PM_E_OVER_BUDGET "over_budget"
#define PM_E_NO_SPACE "no_space"
#define PM_E_BAD_FILESYSTEM "bad_filesystem"
#define PM_E_NO_POOL_DIR "pool_dir_missing"
#define PM_E_IN_USE "in_use"
#define PM_E_PERMISSION "permission_denied"
#define PM_E_UNLINKED "unlinked"
#define PM_E_LOCKED "pool_dir_locked"
#define PM_E_QMP "qmp_error"
#define PM_E_SYSTEM "system_error"

/* ---- framing (protocol.c) ---- */

/* Fill a header for a payload of ``len`` bytes. */
void pm_header_encode(uint8_t hdr[PM_HEADER_SIZE], int kind, uint32_t len);

/*
 * Check a received header. Returns NULL and sets *len when it is good,
 * otherwise the error code (PM_E_MALFORMED or PM_E_VERSION).
 */
const char *pm_header_decode(const uint8_t hdr[PM_HEADER_SIZE], int kind,
                             uint32_t *len);

/* ---- flat JSON objects (protocol.c) ---- */

enum pm_type { PM_STR, PM_INT, PM_BOOL, PM_NULL };

struct pm_field {
    char key[PM_MAX_KEY];
    enum pm_type type;
    const char *str;      /* PM_STR: NUL-terminated, in pm_msg.strings */
    long long num;        /* PM_INT, PM_BOOL */
};

struct pm_msg {
    int nfields;
    struct pm_field fields[PM_MAX_FIELDS];
    char strings[PM_MAX_PAYLOAD + PM_MAX_FIELDS];
    size_t used;
};

/*
 * Parse one flat JSON object. Returns 0, or -1 with a reason in ``err``.
 * Nested values, duplicate keys, floats, control characters and trailing
 * bytes are refused.
 */
int pm_parse(const char *buf, size_t len, struct pm_msg *msg,
             char *err, size_t errlen);

const struct pm_field *pm_get(const struct pm_msg *msg, const char *key);
const char *pm_get_str(const struct pm_msg *msg, const char *key);
/* 0 and *out set if ``key`` is an integer, else -1. */
int pm_get_int(const struct pm_msg *msg, const char *key, long long *out);

/* A JSON object being written; overflow is sticky and checked at the end. */
struct pm_out {
    char buf[PM_MAX_PAYLOAD];
    size_t len;
    int overflow;
    int need_comma;
};

void pm_out_begin(struct pm_out *out);
void pm_out_str(struct pm_out *out, const char *key, const char *value);
void pm_out_int(struct pm_out *out, const char *key, long long value);
void pm_out_bool(struct pm_out *out, const char *key, int value);
/* Raw JSON text as the value of ``key`` (arrays the daemon builds). */
void pm_out_raw(struct pm_out *out, const char *key, const char *json);
/* Returns the payload length, or -1 if it did not fit. */
long pm_out_end(struct pm_out *out);
/* A JSON string literal of ``value`` into buf; -1 if it does not fit. */
int pm_json_quote(char *buf, size_t size, const char *value);

/* ---- client library (client.c) ---- */

struct pm_client {
    int fd;
};

/* Connect to the daemon's socket. Returns 0 or -errno. */
int pm_connect(struct pm_client *client, const char *socket_path);
void pm_disconnect(struct pm_client *client);

/*
 * Send ``request`` (a JSON object text) and read the reply into ``reply``
 * (NUL-terminated). If the reply carries a descriptor it is stored in
 * *fd_out (else -1); pass NULL to close any. Returns the reply length or
 * -errno (-EPROTO for a broken reply).
 */
long pm_call(struct pm_client *client, const char *request,
             char *reply, size_t reply_size, int *fd_out);

#endif
