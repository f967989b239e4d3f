/*
 * vmbeam-pagemoverd: the one owner of guest RAM pools on a host.
 *
 * Single-threaded: one poll loop over the listening socket and its
 * clients, one request handled at a time, so pool state needs no locks.
 * Requests come from root, the daemon's own user or the pool owner
 * (SO_PEERCRED); the socket is mode 0600 anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "qmp.h"
#include "vmbeam_pagemover.h"

#define MAX_CLIENTS 64
#define IO_TIMEOUT_S 5

struct conn {
    int fd;
    uid_t uid;
    pid_t pid;
    size_t have;
    uint32_t need;          /* payload length once the header is in */
    int have_header;
    uint8_t buf[PM_HEADER_SIZE + PM_MAX_PAYLOAD];
};

static struct pm_ctx ctx;
/* The user nova-compute runs as, when not root (--client-uid): it may use
 * the daemon, and the socket is its own. (uid_t)-1: none. */
static uid_t client_uid = (uid_t)-1;
static struct conn *conns[MAX_CLIENTS];
static volatile sig_atomic_t stopping;
static int shutdown_requested;
static char socket_path[108];

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    va_list ap;
    time_t t = time(NULL);
    char stamp[32];

    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", gmtime(&t));
    fprintf(stderr, "%s pagemoverd: ", stamp);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void out_error(struct pm_out *out, const char *code,
                      const char *message)
{
    pm_out_begin(out);
    pm_out_bool(out, "ok", 0);
    pm_out_str(out, "error", code);
    pm_out_str(out, "message", message);
    pm_out_int(out, "version", PM_PROTOCOL_VERSION);
}

static void out_pm_err(struct pm_out *out, const struct pm_err *err)
{
    out_error(out, err->code, err->message);
}

static void out_ok(struct pm_out *out)
{
    pm_out_begin(out);
    pm_out_bool(out, "ok", 1);
}

/* The pool a request names, or an error reply. */
static struct pm_pool *want_pool(const struct pm_msg *req, struct pm_out *out)
{
    const char *uuid = pm_get_str(req, "uuid");
    struct pm_pool *pool;
    struct pm_err err;
    char msg[256];

    if (!uuid || !pm_valid_uuid(uuid)) {
        out_error(out, PM_E_BAD_ARGUMENT, "a valid \"uuid\" string is "
                  "required (letters, digits, '-', '_', '.')");
        return NULL;
    }
    if (pm_ready(&ctx, &err) < 0) {
        out_pm_err(out, &err);
        return NULL;
    }
    pool = pm_find(&ctx, uuid);
    if (!pool) {
        snprintf(msg, sizeof(msg), "no pool for guest %s in %s. Allocate "
                 "it first.", uuid, ctx.dir);
        out_error(out, PM_E_UNKNOWN_POOL, msg);
    }
    return pool;
}

static void op_hello(struct pm_out *out)
{
    out_ok(out);
    pm_out_int(out, "version", PM_PROTOCOL_VERSION);
    pm_out_str(out, "daemon", "vmbeam-pagemoverd");
    pm_out_int(out, "pid", getpid());
    pm_out_str(out, "pool_dir", ctx.dir);
    pm_out_int(out, "owner_uid", ctx.uid);
    pm_out_int(out, "budget", (long long)ctx.budget);
    pm_out_int(out, "reserve", (long long)ctx.reserve);
    pm_out_bool(out, "ready", ctx.ready);
    pm_out_int(out, "pools", ctx.npools);
    pm_out_int(out, "total", (long long)pm_total(&ctx));
    pm_out_int(out, "recovered", ctx.recovered);
    pm_out_int(out, "in_use", ctx.in_use);
    pm_out_int(out, "adopted", ctx.adopted);
    pm_out_int(out, "collected", ctx.collected);
    pm_out_int(out, "relinked", ctx.relinked);
}

static void out_pool(struct pm_out *out, struct pm_pool *pool,
                     const char *path)
{
    out_ok(out);
    pm_out_str(out, "uuid", pool->uuid);
    pm_out_str(out, "path", path);
    pm_out_int(out, "size", (long long)pool->size);
    pm_out_int(out, "dev", (long long)pool->dev);
    pm_out_int(out, "ino", (long long)pool->ino);
}

static void op_allocate(const struct pm_msg *req, struct pm_out *out)
{
    const char *uuid = pm_get_str(req, "uuid");
    long long size;
    struct pm_pool *pool;
    struct pm_err err;
    char path[PATH_MAX];

    if (!uuid || pm_get_int(req, "size", &size) < 0 || size <= 0) {
        out_error(out, PM_E_BAD_ARGUMENT, "allocate needs \"uuid\" (string) "
                  "and \"size\" (bytes, > 0)");
        return;
    }
    pool = pm_allocate(&ctx, uuid, (uint64_t)size, &err);
    if (!pool) {
        out_pm_err(out, &err);
        return;
    }
    pm_public_path(&ctx, pool->uuid, path, sizeof(path));
    out_pool(out, pool, path);
}

static void op_path(const struct pm_msg *req, struct pm_out *out)
{
    struct pm_pool *pool = want_pool(req, out);
    struct pm_err err;
    char path[PATH_MAX];

    if (!pool)
        return;
    if (pm_path(&ctx, pool, path, sizeof(path), &err) < 0) {
        out_pm_err(out, &err);
        return;
    }
    out_pool(out, pool, path);
}

static void op_fd(const struct pm_msg *req, struct pm_out *out, int *fd_out)
{
    struct pm_pool *pool = want_pool(req, out);
    char path[PATH_MAX];

    if (!pool)
        return;
    pm_public_path(&ctx, pool->uuid, path, sizeof(path));
    out_pool(out, pool, path);
    *fd_out = pool->fd;
}

static void op_verify(const struct pm_msg *req, struct pm_out *out)
{
    struct pm_pool *pool = want_pool(req, out);
    long long pid, bytes;
    char msg[256];

    if (!pool)
        return;
    if (pm_get_int(req, "pid", &pid) < 0 || pid <= 0 || pid > 1 << 30) {
        out_error(out, PM_E_BAD_ARGUMENT, "verify needs \"pid\" (> 0)");
        return;
    }
    /* One maps file read, whatever the number of pools or processes. */
    bytes = pm_mapped_bytes((pid_t)pid, pool->dev, pool->ino);
    if (bytes < 0) {
        snprintf(msg, sizeof(msg), "cannot read the maps of pid %lld: %s",
                 pid, strerror((int)-bytes));
        out_error(out, PM_E_BAD_ARGUMENT, msg);
        return;
    }
    out_ok(out);
    pm_out_bool(out, "maps", (uint64_t)bytes >= pool->size);
    pm_out_int(out, "mapped_bytes", bytes);
    pm_out_int(out, "size", (long long)pool->size);
}

static void op_residency(const struct pm_msg *req, struct pm_out *out)
{
    struct pm_pool *pool = want_pool(req, out);
    struct stat st;

    if (!pool)
        return;
    out_ok(out);
    pm_out_int(out, "size", (long long)pool->size);
    pm_out_int(out, "resident_bytes", pm_resident_bytes(pool));
    pm_out_int(out, "allocated_bytes",
               fstat(pool->fd, &st) == 0 ? (long long)st.st_blocks * 512 : 0);
}

static void op_mapped_by(const struct pm_msg *req, struct pm_out *out)
{
    struct pm_pool *pool = want_pool(req, out);
    pid_t pids[64];
    char list[64 * 12 + 3];
    size_t used = 0;
    int n, i;

    if (!pool)
        return;
    n = pm_pids_mapping(pool->dev, pool->ino, pids, 64);
    list[used++] = '[';
    for (i = 0; i < n; i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%d",
                                 i ? "," : "", (int)pids[i]);
    list[used++] = ']';
    list[used] = '\0';
    out_ok(out);
    pm_out_raw(out, "pids", list);
}

static void op_release(const struct pm_msg *req, struct pm_out *out)
{
    const char *uuid = pm_get_str(req, "uuid");
    struct pm_err err;
    int rc;

    if (!uuid) {
        out_error(out, PM_E_BAD_ARGUMENT, "release needs \"uuid\"");
        return;
    }
    rc = pm_release(&ctx, uuid, &err);
    if (rc <= 0) {
        out_pm_err(out, &err);
        return;
    }
    out_ok(out);
    pm_out_bool(out, "released", 1);
}

static void op_list(struct pm_out *out)
{
    static char list[PM_MAX_PAYLOAD];
    size_t used = 0;
    int i;

    list[used++] = '[';
    for (i = 0; i < ctx.npools && used < sizeof(list) - 256; i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used,
                                 "%s{\"uuid\":\"%s\",\"size\":%llu}",
                                 i ? "," : "", ctx.pools[i].uuid,
                                 (unsigned long long)ctx.pools[i].size);
    list[used++] = ']';
    list[used] = '\0';
    out_ok(out);
    pm_out_raw(out, "pools", list);
}

static void op_ivshmem(const struct pm_msg *req, struct pm_out *out,
                       int attach)
{
    struct pm_pool *pool = want_pool(req, out);
    const char *qmp = pm_get_str(req, "qmp");
    const char *device = pm_get_str(req, "device");
    const char *model = pm_get_str(req, "model");
    long long timeout = 10;
    struct pm_err err;
    char path[PATH_MAX];
    int rc;

    if (!pool)
        return;
    pm_get_int(req, "timeout", &timeout);
    if (!qmp || qmp[0] != '/' || !device || !pm_valid_uuid(device) ||
        !((device[0] >= 'a' && device[0] <= 'z') ||
          (device[0] >= 'A' && device[0] <= 'Z')) || strlen(device) > 40 ||
        timeout < 1 || timeout > 600) {
        out_error(out, PM_E_BAD_ARGUMENT, "attach/detach need \"qmp\" (the "
                  "hypervisor VM's QMP socket, an absolute path), "
                  "\"device\" (a QEMU id: a letter, then letters, digits, "
                  "'-', '_', '.'; at most 40) and an optional \"timeout\" "
                  "(1..600 s)");
        return;
    }
    /* Only the two devices a pool can be: a fixed word, never a QEMU
     * driver name taken from the request. */
    if (!model)
        model = "ivshmem-plain";
    if (strcmp(model, "ivshmem-plain") != 0 &&
        strcmp(model, "virtio-pmem-pci") != 0) {
        out_error(out, PM_E_BAD_ARGUMENT, "\"model\" is \"ivshmem-plain\" "
                  "(the default) or \"virtio-pmem-pci\"");
        return;
    }
    if (attach) {
        if (pm_path(&ctx, pool, path, sizeof(path), &err) < 0) {
            out_pm_err(out, &err);
            return;
        }
        rc = pm_qmp_attach(qmp, device, model, path, pool->size,
                           (double)timeout, &err);
    } else {
        rc = pm_qmp_detach(qmp, device, (double)timeout, &err);
    }
    if (rc < 0) {
        out_pm_err(out, &err);
        return;
    }
    logmsg("%s pool %s %s %s as %s (%s)", attach ? "attached" : "detached",
           pool->uuid, attach ? "to" : "from", qmp, device, model);
    out_ok(out);
    pm_out_str(out, "device", device);
}

/* Dispatch one request; *fd_out is a descriptor to send along (not ours). */
static void handle(struct conn *c, const struct pm_msg *req,
                   struct pm_out *out, int *fd_out)
{
    const char *op = pm_get_str(req, "op");
    struct pm_err err;
    long long version;

    *fd_out = -1;
    if (pm_get_int(req, "version", &version) == 0 &&
        version != PM_PROTOCOL_VERSION) {
        out_error(out, PM_E_VERSION, "this daemon speaks protocol version 1 "
                  "only. Upgrade the daemon and its client together.");
        return;
    }
    if (!op) {
        out_error(out, PM_E_BAD_ARGUMENT, "\"op\" (string) is required");
        return;
    }
    if (c->uid != 0 && c->uid != getuid() && c->uid != ctx.uid &&
        c->uid != client_uid) {
        out_error(out, PM_E_PERMISSION, "only root, the daemon's user, "
                  "the pool owner and the --client-uid user may use the "
                  "pool daemon");
        return;
    }
    if (strcmp(op, "hello") == 0) {
        op_hello(out);
    } else if (strcmp(op, "check") == 0 || strcmp(op, "ensure") == 0) {
        if ((op[0] == 'e' ? pm_ensure_dir(&ctx, &err) :
             pm_ready(&ctx, &err)) < 0) {
            out_pm_err(out, &err);
            return;
        }
        out_ok(out);
        pm_out_str(out, "fstype", ctx.fstype);
        pm_out_int(out, "page_size", (long long)ctx.page_size);
    } else if (strcmp(op, "allocate") == 0) {
        op_allocate(req, out);
    } else if (strcmp(op, "path") == 0) {
        op_path(req, out);
    } else if (strcmp(op, "fd") == 0) {
        op_fd(req, out, fd_out);
    } else if (strcmp(op, "verify") == 0) {
        op_verify(req, out);
    } else if (strcmp(op, "residency") == 0) {
        op_residency(req, out);
    } else if (strcmp(op, "mapped_by") == 0) {
        op_mapped_by(req, out);
    } else if (strcmp(op, "release") == 0) {
        op_release(req, out);
    } else if (strcmp(op, "list") == 0) {
        if (pm_ready(&ctx, &err) < 0) {
            out_pm_err(out, &err);
            return;
        }
        op_list(out);
    } else if (strcmp(op, "attach") == 0 || strcmp(op, "detach") == 0) {
        op_ivshmem(req, out, op[0] == 'a');
    } else if (strcmp(op, "shutdown") == 0) {
        /* Pools stay: their files and private links outlive the daemon,
         * and the next one recovers them. */
        shutdown_requested = 1;
        out_ok(out);
    } else {
        char msg[128];

        snprintf(msg, sizeof(msg), "unknown op \"%.40s\". Known: hello, "
                 "check, ensure, allocate, path, fd, verify, residency, "
                 "mapped_by, release, list, attach, detach, shutdown", op);
        out_error(out, PM_E_UNKNOWN_OP, msg);
    }
}

static int send_reply(int fd, struct pm_out *out, long len, int pass_fd)
{
    uint8_t hdr[PM_HEADER_SIZE];
    struct iovec iov[2];
    struct msghdr mh;
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int))];
    } control;
    size_t total, sent = 0;

    if (len < 0) {
        out_error(out, PM_E_SYSTEM, "reply too large");
        len = pm_out_end(out);
    }
    pm_header_encode(hdr, PM_KIND_REPLY, (uint32_t)len);
    total = sizeof(hdr) + (size_t)len;
    while (sent < total) {
        ssize_t n;
        int iovcnt = 0;

        if (sent < sizeof(hdr)) {
            iov[iovcnt].iov_base = hdr + sent;
            iov[iovcnt++].iov_len = sizeof(hdr) - sent;
            iov[iovcnt].iov_base = out->buf;
            iov[iovcnt++].iov_len = (size_t)len;
        } else {
            iov[iovcnt].iov_base = out->buf + (sent - sizeof(hdr));
            iov[iovcnt++].iov_len = total - sent;
        }
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)iovcnt;
        if (sent == 0 && pass_fd >= 0) {
            struct cmsghdr *cm;

            mh.msg_control = control.space;
            mh.msg_controllen = sizeof(control.space);
            cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
        }
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        sent += (size_t)n;
    }
    return 0;
}

static void drop_conn(int index)
{
    close(conns[index]->fd);
    free(conns[index]);
    conns[index] = NULL;
}

/* Handle what arrived on a client; returns -1 when it must be closed. */
static int serve(struct conn *c)
{
    static struct pm_msg req;
    static struct pm_out out;
    ssize_t n;

    n = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have,
             MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    c->have += (size_t)n;
    for (;;) {
        char err[160];
        size_t used;
        int pass_fd;

        if (!c->have_header) {
            const char *bad;

            if (c->have < PM_HEADER_SIZE)
                return 0;
            bad = pm_header_decode(c->buf, PM_KIND_REQUEST, &c->need);
            if (bad) {
                /* The stream cannot be resynchronised: say why, close. */
                out_error(&out, bad, strcmp(bad, PM_E_VERSION) == 0 ?
                          "this daemon speaks protocol version 1 only. "
                          "Upgrade the daemon and its client together." :
                          "bad message header (magic \"VBPM\", version, "
                          "kind 0, payload at most 65536 bytes)");
                send_reply(c->fd, &out, pm_out_end(&out), -1);
                return -1;
            }
            c->have_header = 1;
        }
        if (c->have < PM_HEADER_SIZE + c->need)
            return 0;
        if (pm_parse((char *)c->buf + PM_HEADER_SIZE, c->need, &req, err,
                     sizeof(err)) < 0) {
            char msg[256];

            snprintf(msg, sizeof(msg), "request is not a flat JSON object: "
                     "%s", err);
            out_error(&out, PM_E_MALFORMED, msg);
            pass_fd = -1;
        } else {
            handle(c, &req, &out, &pass_fd);
        }
        if (send_reply(c->fd, &out, pm_out_end(&out), pass_fd) < 0)
            return -1;
        used = PM_HEADER_SIZE + c->need;
        memmove(c->buf, c->buf + used, c->have - used);
        c->have -= used;
        c->have_header = 0;
        if (shutdown_requested)
            return -1;
    }
}

static void accept_client(int lfd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    struct timeval tv = { IO_TIMEOUT_S, 0 };
    int fd, i;

    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    for (i = 0; i < MAX_CLIENTS && conns[i]; i++)
        ;
    if (i == MAX_CLIENTS ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        close(fd);
        return;
    }
    /* A client that stops reading cannot stall the daemon for long. */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    conns[i] = calloc(1, sizeof(struct conn));
    if (!conns[i]) {
        close(fd);
        return;
    }
    conns[i]->fd = fd;
    conns[i]->uid = cred.uid;
    conns[i]->pid = cred.pid;
}

static int listen_on(const char *path, char *why, size_t size)
{
    struct sockaddr_un addr;
    mode_t old;
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        snprintf(why, size, "socket path too long: %s", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    unlink(path);   /* we hold the pid file lock: any socket here is stale */
    old = umask(077);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 16) < 0) {
        snprintf(why, size, "cannot listen on %s: %s", path,
                 strerror(errno));
        umask(old);
        return -1;
    }
    umask(old);
    /* Mode 0600: only the socket's owner (and root) may connect. */
    if (client_uid != (uid_t)-1 && chown(path, client_uid, (gid_t)-1) < 0) {
        snprintf(why, size, "cannot give %s to uid %u: %s", path,
                 (unsigned)client_uid, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int lock_pidfile(const char *path, char *why, size_t size)
{
    char pid[32];
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        snprintf(why, size, "cannot open pid file %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);

        pid[n > 0 ? n : 0] = '\0';
        snprintf(why, size, "another vmbeam-pagemoverd (pid %s) runs with "
                 "pid file %s", n > 0 ? pid : "?", path);
        close(fd);
        return -1;
    }
    snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0) {
        snprintf(why, size, "cannot write pid file %s", path);
        close(fd);
        return -1;
    }
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vmbeam-pagemoverd --socket PATH --pool-dir DIR "
            "[--owner USER] [--budget-mib N] [--reserve-mib N] "
            "[--client-uid UID] [--pidfile PATH] [--log PATH] "
            "[--daemon]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "pool-dir", required_argument, NULL, 'd' },
        { "owner", required_argument, NULL, 'o' },
        { "budget-mib", required_argument, NULL, 'b' },
        { "reserve-mib", required_argument, NULL, 'r' },
        { "client-uid", required_argument, NULL, 'c' },
        { "pidfile", required_argument, NULL, 'p' },
        { "log", required_argument, NULL, 'l' },
        { "daemon", no_argument, NULL, 'D' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock = NULL, *dir = NULL, *owner = NULL, *pidfile = NULL;
    const char *logfile = NULL;
    unsigned long long budget = 0, reserve = 0;
    int daemonize = 0, ready_pipe[2] = { -1, -1 }, lfd, pfd, opt;
    uid_t uid = getuid();
    gid_t gid = getgid();
    char why[512], pidbuf[PATH_MAX];
    struct sigaction sa;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;

        switch (opt) {
        case 's': sock = optarg; break;
        case 'd': dir = optarg; break;
        case 'o': owner = optarg; break;
        case 'p': pidfile = optarg; break;
        case 'l': logfile = optarg; break;
        case 'D': daemonize = 1; break;
        case 'c':
        case 'b':
        case 'r':
            errno = 0;
            {
                unsigned long long v = strtoull(optarg, &end, 10);

                if (opt == 'b')
                    budget = v;
                else if (opt == 'r')
                    reserve = v;
                else if (v < (uid_t)-1)
                    client_uid = (uid_t)v;
                else
                    errno = ERANGE;
            }
            if (errno || !end || *end || optarg[0] == '-') {
                fprintf(stderr, "vmbeam-pagemoverd: bad number %s\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!sock || !dir || dir[0] != '/' || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (strlen(dir) > PATH_MAX / 2) {
        fprintf(stderr, "vmbeam-pagemoverd: pool directory path too long\n");
        return 2;
    }
    if (owner) {
        struct passwd *pw = getpwnam(owner);

        if (!pw) {
            fprintf(stderr, "vmbeam-pagemoverd: owner %s does not exist. "
                    "Create the user or fix [vmbeam] qemu_user.\n", owner);
            return 2;
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (!pidfile) {
        snprintf(pidbuf, sizeof(pidbuf), "%s.pid", sock);
        pidfile = pidbuf;
    }
    if (daemonize) {
        /* Like virtlogd --daemon: the caller returns once we listen, and
         * we end up in a session of our own, reparented, so neither the
         * caller's process group nor its death takes us down. */
        pid_t child;
        char status[512];
        ssize_t n;

        if (pipe2(ready_pipe, O_CLOEXEC) < 0)
            return 1;
        child = fork();
        if (child < 0)
            return 1;
        if (child > 0) {
            close(ready_pipe[1]);
            n = read(ready_pipe[0], status, sizeof(status) - 1);
            if (n == 1 && status[0] == '\0')
                return 0;
            status[n > 0 ? n : 0] = '\0';
            fprintf(stderr, "vmbeam-pagemoverd: %s\n",
                    n > 0 ? status : "exited during start-up");
            return 1;
        }
        close(ready_pipe[0]);
        setsid();
        child = fork();
        if (child < 0)
            _exit(1);
        if (child > 0)
            _exit(0);
        chdir("/");
    }
    pfd = lock_pidfile(pidfile, why, sizeof(why));
    lfd = pfd < 0 ? -1 : listen_on(sock, why, sizeof(why));
    if (lfd < 0) {
        if (daemonize) {
            if (write(ready_pipe[1], why, strlen(why)) < 0)
                _exit(1);
        } else {
            fprintf(stderr, "vmbeam-pagemoverd: %s\n", why);
        }
        return 1;
    }
    snprintf(socket_path, sizeof(socket_path), "%s", sock);
    if (logfile || daemonize) {
        int fd = open(logfile ? logfile : "/dev/null",
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDWR);

        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            close(null);
        }
    }
    setvbuf(stderr, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    pm_ctx_init(&ctx, dir, uid, gid, (uint64_t)budget << 20,
                (uint64_t)reserve << 20);
    logmsg("pid %d, protocol %d, socket %s, pool %s, owner uid %u, budget "
           "%llu MiB", (int)getpid(), PM_PROTOCOL_VERSION, sock, dir,
           (unsigned)uid, budget);
    {
        /* Recover and collect now if the pool directory is there already;
         * otherwise on the first request that needs it. */
        struct pm_err err;

        if (pm_ready(&ctx, &err) < 0)
            logmsg("pool not ready yet: %s", err.message);
    }
    if (daemonize) {
        if (write(ready_pipe[1], "", 1) < 0)
            return 1;
        close(ready_pipe[1]);
    }

    while (!stopping && !shutdown_requested) {
        struct pollfd pfds[MAX_CLIENTS + 1];
        int idx[MAX_CLIENTS + 1], n = 0, i;

        pfds[n].fd = lfd;
        pfds[n].events = POLLIN;
        idx[n++] = -1;
        for (i = 0; i < MAX_CLIENTS; i++) {
            if (conns[i]) {
                pfds[n].fd = conns[i]->fd;
                pfds[n].events = POLLIN;
                idx[n++] = i;
            }
        }
        if (poll(pfds, (nfds_t)n, -1) < 0)
            continue;   /* EINTR: a signal, checked above */
        for (i = 1; i < n; i++)
            if (pfds[i].revents && conns[idx[i]] &&
                serve(conns[idx[i]]) < 0)
                drop_conn(idx[i]);
        if (pfds[0].revents & POLLIN)
            accept_client(lfd);
    }
    logmsg("stopping (%s); %d pools stay for the next start",
           stopping ? "signal" : "shutdown request", ctx.npools);
    for (opt = 0; opt < MAX_CLIENTS; opt++)
        if (conns[opt])
            drop_conn(opt);
    unlink(socket_path);
    close(lfd);
    pm_ctx_free(&ctx);
    unlink(pidfile);
    close(pfd);
    return 0;
}
