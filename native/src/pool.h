/*
 * The pools vmbeam-pagemoverd owns: one RAM file per guest, kept open.
 *
 * Every pool has two names on the pool filesystem: the public
 * <dir>/<uuid>.ram that QEMU opens, and a private hard link
 * <dir>/.pagemoverd/<uuid>.ram only the daemon can reach. The private
 * links are the daemon's registry: a restarted daemon recovers its pools
 * from them, and an accidentally unlinked public name is linked again from
 * the private one. The daemon also holds a descriptor per pool, so the RAM
 * outlives both names while it runs.
 */
#ifndef PAGEMOVER_POOL_H
#define PAGEMOVER_POOL_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#define PM_UUID_MAX 64
#define PM_PRIVATE_DIR ".pagemoverd"

struct pm_pool {
    char uuid[PM_UUID_MAX];
    uint64_t size;
    dev_t dev;
    ino_t ino;
    int fd;
};

struct pm_ctx {
    char dir[PATH_MAX];
    char priv[PATH_MAX];
    uid_t uid;
    gid_t gid;
    uint64_t budget;          /* bytes of all pools together; 0: no limit */
    uint64_t reserve;         /* bytes that must stay free on the fs */
    int ready;                /* pool dir checked, locked and scanned */
    int lock_fd;
    const char *fstype;
    uint64_t page_size;       /* huge page size on hugetlbfs, else 0 */
    struct pm_pool *pools;
    int npools;
    int cap;
    /* what the start-up scan found */
    int recovered, in_use, collected, adopted, relinked;
};

/* An error: code (PM_E_*) and a message that names the fix. */
struct pm_err {
    const char *code;
    char message[1024];
};

void pm_ctx_init(struct pm_ctx *ctx, const char *dir, uid_t uid, gid_t gid,
                 uint64_t budget, uint64_t reserve);
void pm_ctx_free(struct pm_ctx *ctx);

/* Create the pool directory (mode 0711, owned by the pool owner). */
int pm_ensure_dir(struct pm_ctx *ctx, struct pm_err *err);
/* Check, lock and (the first time) scan the pool directory. */
int pm_ready(struct pm_ctx *ctx, struct pm_err *err);

int pm_valid_uuid(const char *uuid);
struct pm_pool *pm_find(struct pm_ctx *ctx, const char *uuid);
uint64_t pm_total(const struct pm_ctx *ctx);
void pm_public_path(const struct pm_ctx *ctx, const char *uuid, char *buf,
                    size_t size);

struct pm_pool *pm_allocate(struct pm_ctx *ctx, const char *uuid,
                            uint64_t size, struct pm_err *err);
/* The public path of a pool, linked again if it went missing. */
int pm_path(struct pm_ctx *ctx, struct pm_pool *pool, char *buf, size_t size,
            struct pm_err *err);
/* 1 released, 0 refused (err set: in use), -1 error. */
int pm_release(struct pm_ctx *ctx, const char *uuid, struct pm_err *err);

/* Pids that map dev:ino (all of /proc), up to max; returns the count. */
int pm_pids_mapping(dev_t dev, ino_t ino, pid_t *pids, int max);
/* Bytes of dev:ino that ``pid`` maps shared; -errno if unreadable. */
long long pm_mapped_bytes(pid_t pid, dev_t dev, ino_t ino);
/* Bytes of the pool that hold data (SEEK_DATA/SEEK_HOLE walk). */
long long pm_resident_bytes(const struct pm_pool *pool);

#endif
