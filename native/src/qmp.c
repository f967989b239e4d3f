/*
 * Just enough QMP to attach a pool to a hypervisor VM as a PCI device:
 * ivshmem-plain (its BAR is the pool) or virtio-pmem-pci (a pmem region
 * the VM's kernel can map as RAM, through device-DAX).
 *
 * QMP is line-oriented JSON; the answer to a command is the first line
 * with "return" or "error" at its top level (events come as lines with
 * "event"). Commands here are fixed templates, so a substring test on
 * those keys is enough and keeps the daemon free of a JSON tree parser.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"
#include "vmbeam_pagemover.h"

struct qmp {
    int fd;
    char buf[65536];
    size_t have;
    double deadline;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int qmp_err(struct pm_err *err, const char *fmt, ...)
{
    va_list ap;

    err->code = PM_E_QMP;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* Next line into ``line``; 0, or -1 on timeout/EOF. */
static int read_line(struct qmp *q, char *line, size_t size)
{
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->have);
        struct pollfd pfd = { q->fd, POLLIN, 0 };
        double left = q->deadline - now();
        ssize_t n;

        if (nl) {
            size_t len = (size_t)(nl - q->buf);

            if (len >= size)
                len = size - 1;
            memcpy(line, q->buf, len);
            line[len] = '\0';
            q->have -= (size_t)(nl - q->buf) + 1;
            memmove(q->buf, nl + 1, q->have);
            return 0;
        }
        if (q->have == sizeof(q->buf))
            return -1;
        if (left <= 0 || poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
            return -1;
        n = read(q->fd, q->buf + q->have, sizeof(q->buf) - q->have);
        if (n <= 0)
            return -1;
        q->have += (size_t)n;
    }
}

/* Send a command; 0 on "return", -1 with the QMP error text otherwise. */
static int command(struct qmp *q, const char *cmd, char *answer,
                   size_t size)
{
    size_t len = strlen(cmd);

    if (write(q->fd, cmd, len) != (ssize_t)len || write(q->fd, "\n", 1) != 1) {
        snprintf(answer, size, "cannot write to QMP: %s", strerror(errno));
        return -1;
    }
    for (;;) {
        if (read_line(q, answer, size) < 0) {
            snprintf(answer, size, "no answer from QMP");
            return -1;
        }
        if (strncmp(answer, "{\"return\"", 9) == 0)
            return 0;
        if (strncmp(answer, "{\"error\"", 8) == 0)
            return -1;
        /* an event, or the greeting: read on */
    }
}

static int qmp_open(struct qmp *q, const char *path, double timeout,
                    struct pm_err *err)
{
    struct sockaddr_un addr;
    char line[4096];

    q->have = 0;
    q->deadline = now() + timeout;
    if (strlen(path) >= sizeof(addr.sun_path))
        return qmp_err(err, "QMP socket path too long: %s", path);
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0)
        return qmp_err(err, "socket: %s", strerror(errno));
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    if (connect(q->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;

        close(q->fd);
        return qmp_err(err, "cannot connect to the hypervisor VM's QMP "
                       "socket %s: %s. Check the path, and that no other "
                       "client holds that monitor.", path, strerror(e));
    }
    if (read_line(q, line, sizeof(line)) < 0 || !strstr(line, "\"QMP\"") ||
        command(q, "{\"execute\":\"qmp_capabilities\"}", line,
                sizeof(line)) < 0) {
        close(q->fd);
        return qmp_err(err, "%s is not a QMP monitor that answers", path);
    }
    return 0;
}

int pm_qmp_attach(const char *qmp_socket, const char *device_id,
                  const char *model, const char *mem_path, uint64_t size,
                  double timeout, struct pm_err *err)
{
    char cmd[8192], answer[4096], qid[256], qpath[4096 * 6];
    struct qmp q;

    if (pm_json_quote(qid, sizeof(qid), device_id) < 0 ||
        pm_json_quote(qpath, sizeof(qpath), mem_path) < 0)
        return qmp_err(err, "device id or path too long");
    if (qmp_open(&q, qmp_socket, timeout, err) < 0)
        return -1;
    /* The memory backend is named after the device: one pool, one pair. */
    snprintf(cmd, sizeof(cmd), "{\"execute\":\"object-add\",\"arguments\":"
             "{\"qom-type\":\"memory-backend-file\",\"id\":\"%.*s-mem\","
             "\"mem-path\":%s,\"size\":%llu,\"share\":true}}",
             (int)strlen(qid) - 2, qid + 1, qpath, (unsigned long long)size);
    if (command(&q, cmd, answer, sizeof(answer)) < 0) {
        close(q.fd);
        return qmp_err(err, "object-add of %s failed: %s", mem_path, answer);
    }
    snprintf(cmd, sizeof(cmd), "{\"execute\":\"device_add\",\"arguments\":"
             "{\"driver\":\"%s\",\"id\":%s,\"memdev\":"
             "\"%.*s-mem\"}}", model, qid, (int)strlen(qid) - 2, qid + 1);
    if (command(&q, cmd, answer, sizeof(answer)) < 0) {
        char undo[512], ignored[4096];

        snprintf(undo, sizeof(undo), "{\"execute\":\"object-del\","
                 "\"arguments\":{\"id\":\"%.*s-mem\"}}",
                 (int)strlen(qid) - 2, qid + 1);
        command(&q, undo, ignored, sizeof(ignored));
        close(q.fd);
        return qmp_err(err, "device_add %s failed: %s", model, answer);
    }
    close(q.fd);
    return 0;
}

int pm_qmp_detach(const char *qmp_socket, const char *device_id,
                  double timeout, struct pm_err *err)
{
    char cmd[1024], answer[4096], qid[256];
    struct qmp q;

    if (pm_json_quote(qid, sizeof(qid), device_id) < 0)
        return qmp_err(err, "device id too long");
    if (qmp_open(&q, qmp_socket, timeout, err) < 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "{\"execute\":\"device_del\",\"arguments\":"
             "{\"id\":%s}}", qid);
    if (command(&q, cmd, answer, sizeof(answer)) < 0) {
        close(q.fd);
        return qmp_err(err, "device_del %s failed: %s", device_id, answer);
    }
    /* PCI unplug completes when the VM's guest ejects the device. */
    for (;;) {
        if (read_line(&q, answer, sizeof(answer)) < 0) {
            close(q.fd);
            return qmp_err(err, "the hypervisor VM did not release device "
                           "%s within %.0f s; its guest must eject it "
                           "(ACPI PCI hotplug). The pool stays attached.",
                           device_id, timeout);
        }
        if (strstr(answer, "\"DEVICE_DELETED\"") && strstr(answer, qid))
            break;
    }
    snprintf(cmd, sizeof(cmd), "{\"execute\":\"object-del\",\"arguments\":"
             "{\"id\":\"%.*s-mem\"}}", (int)strlen(qid) - 2, qid + 1);
    if (command(&q, cmd, answer, sizeof(answer)) < 0) {
        close(q.fd);
        return qmp_err(err, "object-del %s-mem failed: %s", device_id,
                       answer);
    }
    close(q.fd);
    return 0;
}
