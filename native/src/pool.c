/* Pool files: create, recover, hand out, check who maps them, release. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "pool.h"
#include "vmbeam_pagemover.h"

#define TMPFS_MAGIC_ 0x01021994
#define HUGETLBFS_MAGIC_ 0x958458f6
#define NEW_PREFIX ".new-"
#define RELEASED_PREFIX ".released-"
#define SUFFIX ".ram"

static int set_err(struct pm_err *err, const char *code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

void pm_ctx_init(struct pm_ctx *ctx, const char *dir, uid_t uid, gid_t gid,
                 uint64_t budget, uint64_t reserve)
{
    memset(ctx, 0, sizeof(*ctx));
    snprintf(ctx->dir, sizeof(ctx->dir), "%s", dir);
    snprintf(ctx->priv, sizeof(ctx->priv), "%s/%s", dir, PM_PRIVATE_DIR);
    ctx->uid = uid;
    ctx->gid = gid;
    ctx->budget = budget;
    ctx->reserve = reserve;
    ctx->lock_fd = -1;
    ctx->fstype = "";
}

void pm_ctx_free(struct pm_ctx *ctx)
{
    int i;

    for (i = 0; i < ctx->npools; i++)
        close(ctx->pools[i].fd);
    free(ctx->pools);
    ctx->pools = NULL;
    ctx->npools = ctx->cap = 0;
    if (ctx->lock_fd >= 0)
        close(ctx->lock_fd);
    ctx->lock_fd = -1;
    ctx->ready = 0;
}

int pm_valid_uuid(const char *uuid)
{
    size_t i, n = strlen(uuid);

    if (n == 0 || n >= PM_UUID_MAX || uuid[0] == '.')
        return 0;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)uuid[i]) && uuid[i] != '-' &&
            uuid[i] != '_' && uuid[i] != '.')
            return 0;
    return 1;
}

void pm_public_path(const struct pm_ctx *ctx, const char *uuid, char *buf,
                    size_t size)
{
    snprintf(buf, size, "%s/%s" SUFFIX, ctx->dir, uuid);
}

static void private_path(const struct pm_ctx *ctx, const char *prefix,
                         const char *uuid, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s%s" SUFFIX, ctx->priv, prefix, uuid);
}

struct pm_pool *pm_find(struct pm_ctx *ctx, const char *uuid)
{
    int i;

    for (i = 0; i < ctx->npools; i++)
        if (strcmp(ctx->pools[i].uuid, uuid) == 0)
            return &ctx->pools[i];
    return NULL;
}

uint64_t pm_total(const struct pm_ctx *ctx)
{
    uint64_t total = 0;
    int i;

    for (i = 0; i < ctx->npools; i++)
        total += ctx->pools[i].size;
    return total;
}

/* Take ownership of ``fd`` as the pool ``uuid``. */
static struct pm_pool *add_pool(struct pm_ctx *ctx, const char *uuid, int fd)
{
    struct stat st;
    struct pm_pool *pool;

    if (fstat(fd, &st) < 0) {
        close(fd);
        return NULL;
    }
    if (ctx->npools == ctx->cap) {
        int cap = ctx->cap ? ctx->cap * 2 : 16;
        struct pm_pool *grown = realloc(ctx->pools, sizeof(*grown) * cap);

        if (!grown) {
            close(fd);
            return NULL;
        }
        ctx->pools = grown;
        ctx->cap = cap;
    }
    pool = &ctx->pools[ctx->npools++];
    memset(pool, 0, sizeof(*pool));
    snprintf(pool->uuid, sizeof(pool->uuid), "%s", uuid);
    pool->size = (uint64_t)st.st_size;
    pool->dev = st.st_dev;
    pool->ino = st.st_ino;
    pool->fd = fd;
    return pool;
}

static void drop_pool(struct pm_ctx *ctx, struct pm_pool *pool)
{
    int index = (int)(pool - ctx->pools);

    close(pool->fd);
    ctx->pools[index] = ctx->pools[--ctx->npools];
}

/* Make the public name point at the pool again if it went missing. */
static int relink_public(struct pm_ctx *ctx, struct pm_pool *pool)
{
    char pub[PATH_MAX], priv[PATH_MAX];
    struct stat st;

    pm_public_path(ctx, pool->uuid, pub, sizeof(pub));
    if (lstat(pub, &st) == 0)
        return st.st_dev == pool->dev && st.st_ino == pool->ino ? 0 : -EEXIST;
    if (errno != ENOENT)
        return -errno;
    private_path(ctx, "", pool->uuid, priv, sizeof(priv));
    if (link(priv, pub) < 0)
        return -errno;
    fprintf(stderr, "pagemoverd: linked missing %s again\n", pub);
    ctx->relinked++;
    return 1;
}

/* Name of a pool file ("<uuid>.ram") after ``prefix``; NULL if not one. */
static const char *uuid_of(const char *name, const char *prefix, char *buf)
{
    size_t np = strlen(prefix), n = strlen(name), ns = strlen(SUFFIX);

    if (n <= np + ns || strncmp(name, prefix, np) != 0 ||
        strcmp(name + n - ns, SUFFIX) != 0 || n - np - ns >= PM_UUID_MAX)
        return NULL;
    memcpy(buf, name + np, n - np - ns);
    buf[n - np - ns] = '\0';
    return pm_valid_uuid(buf) ? buf : NULL;
}

static int mapped(dev_t dev, ino_t ino)
{
    pid_t pid;

    return pm_pids_mapping(dev, ino, &pid, 1) > 0;
}

/*
 * Start-up scan: recover the registered pools, finish interrupted
 * releases, collect the leftovers of interrupted allocations, adopt pool
 * files made without the daemon.
 */
static void scan(struct pm_ctx *ctx)
{
    DIR *dir;
    struct dirent *de;
    char uuid[PM_UUID_MAX], path[PATH_MAX], path2[PATH_MAX];
    int i;

    if ((dir = opendir(ctx->priv)) != NULL) {
        while ((de = readdir(dir)) != NULL) {
            struct stat st;

            snprintf(path, sizeof(path), "%s/%s", ctx->priv, de->d_name);
            if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                continue;
            if (strncmp(de->d_name, NEW_PREFIX, strlen(NEW_PREFIX)) == 0 ||
                uuid_of(de->d_name, RELEASED_PREFIX, uuid)) {
                const char *kind = de->d_name[1] == 'n' ?
                    "unfinished allocation" : "unfinished release";

                if (mapped(st.st_dev, st.st_ino)) {
                    if (!uuid_of(de->d_name, RELEASED_PREFIX, uuid))
                        continue;   /* mapped half-made file: leave it */
                    /* Released while something mapped it after all:
                     * keep it as a pool. */
                    private_path(ctx, "", uuid, path2, sizeof(path2));
                    if (rename(path, path2) == 0)
                        fprintf(stderr, "pagemoverd: kept mapped %s\n",
                                path2);
                    continue;
                }
                if (unlink(path) == 0) {
                    ctx->collected++;
                    fprintf(stderr, "pagemoverd: collected %s (%s)\n",
                            path, kind);
                }
            }
        }
        rewinddir(dir);
        while ((de = readdir(dir)) != NULL) {
            int fd;

            if (!uuid_of(de->d_name, "", uuid) || pm_find(ctx, uuid))
                continue;
            snprintf(path, sizeof(path), "%s/%s", ctx->priv, de->d_name);
            fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0 || !add_pool(ctx, uuid, fd))
                continue;
            ctx->recovered++;
        }
        closedir(dir);
    }
    if ((dir = opendir(ctx->dir)) != NULL) {
        while ((de = readdir(dir)) != NULL) {
            struct stat st;
            int fd;

            if (!uuid_of(de->d_name, "", uuid) || pm_find(ctx, uuid))
                continue;
            snprintf(path, sizeof(path), "%s/%s", ctx->dir, de->d_name);
            if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
                st.st_uid != ctx->uid)
                continue;
            private_path(ctx, "", uuid, path2, sizeof(path2));
            if (link(path, path2) < 0)
                continue;
            fd = open(path2, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0 || !add_pool(ctx, uuid, fd))
                continue;
            ctx->adopted++;
            fprintf(stderr, "pagemoverd: adopted %s\n", path);
        }
        closedir(dir);
    }
    for (i = 0; i < ctx->npools; i++) {
        struct pm_pool *pool = &ctx->pools[i];

        if (relink_public(ctx, pool) == -EEXIST)
            fprintf(stderr, "pagemoverd: %s.ram is another file now; pool "
                    "%s stays reachable by descriptor only\n", pool->uuid,
                    pool->uuid);
        if (mapped(pool->dev, pool->ino))
            ctx->in_use++;
    }
    fprintf(stderr, "pagemoverd: %s: %d pools recovered (%d in use), %d "
            "adopted, %d orphans collected, %d names linked again\n",
            ctx->dir, ctx->recovered, ctx->in_use, ctx->adopted,
            ctx->collected, ctx->relinked);
}

int pm_ensure_dir(struct pm_ctx *ctx, struct pm_err *err)
{
    if (mkdir(ctx->dir, 0711) == 0) {
        if (chown(ctx->dir, ctx->uid, ctx->gid) < 0) {
            int e = errno;

            rmdir(ctx->dir);
            return set_err(err, PM_E_WRONG_OWNER, "cannot give %s to uid "
                           "%u: %s. Run vmbeam-pagemoverd as root or as "
                           "the pool owner.", ctx->dir, (unsigned)ctx->uid,
                           strerror(e));
        }
        /* mkdir honours the umask; the pool needs exactly 0711. */
        chmod(ctx->dir, 0711);
    } else if (errno != EEXIST) {
        return set_err(err, PM_E_SYSTEM, "cannot create %s: %s", ctx->dir,
                       strerror(errno));
    }
    return pm_ready(ctx, err);
}

int pm_ready(struct pm_ctx *ctx, struct pm_err *err)
{
    struct statfs sfs;
    struct stat st;

    if (stat(ctx->dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return set_err(err, PM_E_NO_POOL_DIR, "RAM pool %s: directory does "
                       "not exist. Create it (mkdir -m 0711 %s) on tmpfs, "
                       "or run \"vmbeam pool init\".", ctx->dir, ctx->dir);
    if (statfs(ctx->dir, &sfs) < 0)
        return set_err(err, PM_E_SYSTEM, "statfs %s: %s", ctx->dir,
                       strerror(errno));
    if ((unsigned long)sfs.f_type == TMPFS_MAGIC_) {
        ctx->fstype = "tmpfs";
        ctx->page_size = 0;
    } else if ((unsigned long)sfs.f_type == HUGETLBFS_MAGIC_) {
        ctx->fstype = "hugetlbfs";
        ctx->page_size = (uint64_t)sfs.f_bsize;
    } else {
        return set_err(err, PM_E_BAD_FILESYSTEM, "RAM pool %s: is not on "
                       "tmpfs or hugetlbfs. Mount tmpfs there (mount -t "
                       "tmpfs -o mode=0711 vmbeam-ram %s), or hugetlbfs "
                       "for huge pages, or point [vmbeam] ram_pool_path at "
                       "a directory under /dev/shm.", ctx->dir, ctx->dir);
    }
    if (st.st_uid != ctx->uid)
        return set_err(err, PM_E_WRONG_OWNER, "RAM pool %s: is owned by "
                       "uid %u, not by uid %u, the user QEMU runs as. Run: "
                       "chown %u %s", ctx->dir, (unsigned)st.st_uid,
                       (unsigned)ctx->uid, (unsigned)ctx->uid, ctx->dir);
    if (ctx->ready)
        return 0;
    if (mkdir(ctx->priv, 0700) < 0 && errno != EEXIST)
        return set_err(err, PM_E_SYSTEM, "cannot create %s: %s", ctx->priv,
                       strerror(errno));
    ctx->lock_fd = open(ctx->priv, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ctx->lock_fd < 0)
        return set_err(err, PM_E_SYSTEM, "cannot open %s: %s", ctx->priv,
                       strerror(errno));
    if (flock(ctx->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        close(ctx->lock_fd);
        ctx->lock_fd = -1;
        return set_err(err, PM_E_LOCKED, "RAM pool %s: another "
                       "vmbeam-pagemoverd owns it. Talk to that daemon "
                       "([vmbeam] pagemoverd_socket) or stop it first.",
                       ctx->dir);
    }
    scan(ctx);
    ctx->ready = 1;
    return 0;
}

int pm_path(struct pm_ctx *ctx, struct pm_pool *pool, char *buf, size_t size,
            struct pm_err *err)
{
    struct stat st;
    int rc = relink_public(ctx, pool);

    pm_public_path(ctx, pool->uuid, buf, size);
    if (rc == -EEXIST)
        return set_err(err, PM_E_UNLINKED, "pool %s: %s is another file "
                       "now. Remove that file; the pool is still held by "
                       "the daemon and reachable by descriptor.",
                       pool->uuid, buf);
    if (rc < 0) {
        if (fstat(pool->fd, &st) == 0 && st.st_nlink == 0)
            return set_err(err, PM_E_UNLINKED, "pool %s: both of its names "
                           "were removed; its RAM is kept alive only by "
                           "the daemon's descriptor. Hand it over by "
                           "descriptor (op \"fd\") or release it.",
                           pool->uuid);
        return set_err(err, PM_E_SYSTEM, "pool %s: cannot link %s: %s",
                       pool->uuid, buf, strerror(-rc));
    }
    return 0;
}

struct pm_pool *pm_allocate(struct pm_ctx *ctx, const char *uuid,
                            uint64_t size, struct pm_err *err)
{
    char pub[PATH_MAX], tmp[PATH_MAX], priv[PATH_MAX];
    struct pm_pool *pool;
    struct statvfs vfs;
    struct stat st;
    uint64_t free_bytes;
    int fd;

    if (!pm_valid_uuid(uuid)) {
        set_err(err, PM_E_BAD_ARGUMENT, "bad guest UUID \"%s\": use letters, "
                "digits, '-', '_' and '.', not first", uuid);
        return NULL;
    }
    if (size == 0 || size > (1ULL << 50)) {
        set_err(err, PM_E_BAD_ARGUMENT, "bad pool size %llu bytes",
                (unsigned long long)size);
        return NULL;
    }
    if (pm_ready(ctx, err) < 0)
        return NULL;
    pm_public_path(ctx, uuid, pub, sizeof(pub));
    pool = pm_find(ctx, uuid);
    if (!pool && lstat(pub, &st) == 0) {
        /* A pool file made without the daemon: adopt it if it fits. */
        private_path(ctx, "", uuid, priv, sizeof(priv));
        if (!S_ISREG(st.st_mode) || st.st_uid != ctx->uid) {
            set_err(err, PM_E_WRONG_OWNER, "RAM pool %s: %s is not a "
                    "regular file owned by uid %u. Remove it.", ctx->dir,
                    pub, (unsigned)ctx->uid);
            return NULL;
        }
        if ((uint64_t)st.st_size == size && link(pub, priv) == 0) {
            fd = open(priv, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0)
                pool = add_pool(ctx, uuid, fd);
        } else if ((uint64_t)st.st_size != size) {
            set_err(err, PM_E_SIZE_MISMATCH, "RAM pool %s: %s exists with "
                    "%lld bytes, not %llu. Release it first (it belongs to "
                    "another incarnation of guest %s)", ctx->dir, pub,
                    (long long)st.st_size, (unsigned long long)size, uuid);
            return NULL;
        }
    }
    if (pool) {
        if (pool->size != size) {
            set_err(err, PM_E_SIZE_MISMATCH, "RAM pool %s: %s exists with "
                    "%llu bytes, not %llu. Release it first (it belongs to "
                    "another incarnation of guest %s)", ctx->dir, pub,
                    (unsigned long long)pool->size,
                    (unsigned long long)size, uuid);
            return NULL;
        }
        return pm_path(ctx, pool, pub, sizeof(pub), err) < 0 ? NULL : pool;
    }
    if (ctx->page_size && size % ctx->page_size) {
        set_err(err, PM_E_BAD_ARGUMENT, "RAM of %llu bytes is not a multiple "
                "of the huge page size %llu of %s", (unsigned long long)size,
                (unsigned long long)ctx->page_size, ctx->dir);
        return NULL;
    }
    if (ctx->budget && pm_total(ctx) + size > ctx->budget) {
        set_err(err, PM_E_OVER_BUDGET, "RAM pool %s: %llu MiB more would "
                "exceed the budget of %llu MiB (%llu MiB in %d pools). "
                "Release pools of deleted guests or raise [vmbeam] "
                "ram_pool_budget_mib.", ctx->dir,
                (unsigned long long)(size >> 20),
                (unsigned long long)(ctx->budget >> 20),
                (unsigned long long)(pm_total(ctx) >> 20), ctx->npools);
        return NULL;
    }
    if (statvfs(ctx->dir, &vfs) < 0) {
        set_err(err, PM_E_SYSTEM, "statvfs %s: %s", ctx->dir,
                strerror(errno));
        return NULL;
    }
    free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (free_bytes < size + ctx->reserve) {
        set_err(err, PM_E_NO_SPACE, "RAM pool %s: too small: %llu MiB free, "
                "%llu MiB needed (+%llu MiB reserve). Grow it (mount -o "
                "remount,size=... %s), free RAM files of deleted guests, or "
                "lower [vmbeam] ram_pool_reserve_mib.", ctx->dir,
                (unsigned long long)(free_bytes >> 20),
                (unsigned long long)(size >> 20),
                (unsigned long long)(ctx->reserve >> 20), ctx->dir);
        return NULL;
    }
    private_path(ctx, NEW_PREFIX, uuid, tmp, sizeof(tmp));
    private_path(ctx, "", uuid, priv, sizeof(priv));
    unlink(tmp);
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, PM_E_SYSTEM, "cannot create %s: %s", tmp,
                strerror(errno));
        return NULL;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        set_err(err, PM_E_SYSTEM, "cannot size %s to %llu bytes: %s", tmp,
                (unsigned long long)size, strerror(errno));
        goto undo;
    }
    if (fchown(fd, ctx->uid, ctx->gid) < 0) {
        set_err(err, PM_E_WRONG_OWNER, "cannot give %s to uid %u: %s. Run "
                "vmbeam-pagemoverd as root or as the pool owner.", tmp,
                (unsigned)ctx->uid, strerror(errno));
        goto undo;
    }
    fchmod(fd, 0600);
    /* Registered (private name) first, published (public name) last: a
     * crash in between leaves a pool the next start links again. */
    if (rename(tmp, priv) < 0) {
        set_err(err, PM_E_SYSTEM, "cannot register %s: %s", priv,
                strerror(errno));
        goto undo;
    }
    if (link(priv, pub) < 0) {
        set_err(err, PM_E_SYSTEM, "cannot publish %s: %s", pub,
                strerror(errno));
        unlink(priv);
        close(fd);
        return NULL;
    }
    pool = add_pool(ctx, uuid, fd);
    if (!pool) {
        unlink(pub);
        unlink(priv);
        set_err(err, PM_E_SYSTEM, "out of memory");
        return NULL;
    }
    fprintf(stderr, "pagemoverd: allocated %s (%llu MiB)\n", pub,
            (unsigned long long)(size >> 20));
    return pool;
undo:
    unlink(tmp);
    close(fd);
    return NULL;
}

int pm_release(struct pm_ctx *ctx, const char *uuid, struct pm_err *err)
{
    char pub[PATH_MAX], priv[PATH_MAX], gone[PATH_MAX], list[256];
    struct pm_pool *pool;
    struct stat st;
    pid_t pids[16];
    int n, i;
    size_t used = 0;

    if (!pm_valid_uuid(uuid))
        return set_err(err, PM_E_BAD_ARGUMENT, "bad guest UUID \"%s\"", uuid);
    if (pm_ready(ctx, err) < 0)
        return -1;
    pool = pm_find(ctx, uuid);
    if (!pool)
        return set_err(err, PM_E_UNKNOWN_POOL, "RAM pool %s: no pool for "
                       "guest %s. Nothing to release.", ctx->dir, uuid);
    n = pm_pids_mapping(pool->dev, pool->ino, pids, 16);
    if (n > 0) {
        list[0] = '\0';
        for (i = 0; i < n && i < 16 && used < sizeof(list) - 16; i++)
            used += (size_t)snprintf(list + used, sizeof(list) - used,
                                     "%s%d", i ? ", " : "", (int)pids[i]);
        set_err(err, PM_E_IN_USE, "RAM of guest %s is still mapped by pid(s) "
                "%s. Stop the guest first; RAM is never freed while a QEMU "
                "maps it.", uuid, list);
        return 0;
    }
    pm_public_path(ctx, uuid, pub, sizeof(pub));
    private_path(ctx, "", uuid, priv, sizeof(priv));
    private_path(ctx, RELEASED_PREFIX, uuid, gone, sizeof(gone));
    if (rename(priv, gone) < 0 && errno != ENOENT)
        return set_err(err, PM_E_SYSTEM, "cannot release %s: %s", priv,
                       strerror(errno));
    if (lstat(pub, &st) == 0 && st.st_dev == pool->dev &&
        st.st_ino == pool->ino)
        unlink(pub);
    unlink(gone);
    drop_pool(ctx, pool);
    fprintf(stderr, "pagemoverd: released %s\n", pub);
    return 1;
}

/* Scan one maps file for dev:ino; shared-only bytes if ``shared_only``. */
static long long maps_bytes(pid_t pid, dev_t dev, ino_t ino, int shared_only)
{
    char path[64], line[512];
    long long total = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        unsigned long start, end, offset, inode;
        unsigned maj, min;
        char perms[8];

        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms,
                   &offset, &maj, &min, &inode) != 7)
            continue;
        if (inode == (unsigned long)ino && makedev(maj, min) == dev &&
            (!shared_only || perms[3] == 's'))
            total += (long long)(end - start);
        /* A line longer than the buffer: skip the rest of it. */
        while (!strchr(line, '\n') && fgets(line, sizeof(line), f))
            ;
    }
    fclose(f);
    return total;
}

long long pm_mapped_bytes(pid_t pid, dev_t dev, ino_t ino)
{
    return maps_bytes(pid, dev, ino, 1);
}

int pm_pids_mapping(dev_t dev, ino_t ino, pid_t *pids, int max)
{
    DIR *proc = opendir("/proc");
    struct dirent *de;
    int n = 0;

    if (!proc)
        return 0;
    while (n < max && (de = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);

        if (*end || pid <= 0 || pid == getpid())
            continue;
        if (maps_bytes((pid_t)pid, dev, ino, 0) > 0)
            pids[n++] = (pid_t)pid;
    }
    closedir(proc);
    return n;
}

long long pm_resident_bytes(const struct pm_pool *pool)
{
    off_t pos = 0, end = (off_t)pool->size;
    long long total = 0;

    while (pos < end) {
        off_t data = lseek(pool->fd, pos, SEEK_DATA), hole;

        if (data < 0)
            break;   /* ENXIO: no data past pos */
        hole = lseek(pool->fd, data, SEEK_HOLE);
        if (hole < 0 || hole > end)
            hole = end;
        total += hole - data;
        pos = hole;
    }
    return total;
}
