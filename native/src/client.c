/* Client library: one request, one reply, maybe one descriptor. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmbeam_pagemover.h"

int pm_connect(struct pm_client *client, const char *socket_path)
{
    struct sockaddr_un addr;
    int fd;

    client->fd = -1;
    if (strlen(socket_path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, socket_path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = errno;

        close(fd);
        return -err;
    }
    client->fd = fd;
    return 0;
}

void pm_disconnect(struct pm_client *client)
{
    if (client->fd >= 0)
        close(client->fd);
    client->fd = -1;
}

static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes; the first descriptor that comes along is kept. */
static int recv_all(int fd, void *buf, size_t len, int *fd_out)
{
    char *p = buf;

    while (len) {
        struct iovec iov = { p, len };
        union {
            struct cmsghdr hdr;
            char space[CMSG_SPACE(sizeof(int) * 4)];
        } control;
        struct msghdr mh;
        struct cmsghdr *cm;
        ssize_t n;

        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.space;
        mh.msg_controllen = sizeof(control.space);
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EPROTO;
        for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int count = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                int i, fds[4];

                memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)count);
                for (i = 0; i < count; i++) {
                    if (fd_out && *fd_out < 0)
                        *fd_out = fds[i];
                    else
                        close(fds[i]);
                }
            }
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

long pm_call(struct pm_client *client, const char *request,
             char *reply, size_t reply_size, int *fd_out)
{
    uint8_t hdr[PM_HEADER_SIZE];
    size_t len = strlen(request);
    uint32_t rlen;
    int rc, got_fd = -1;

    if (fd_out)
        *fd_out = -1;
    if (len > PM_MAX_PAYLOAD)
        return -EMSGSIZE;
    pm_header_encode(hdr, PM_KIND_REQUEST, (uint32_t)len);
    if ((rc = send_all(client->fd, hdr, sizeof(hdr))) < 0 ||
        (rc = send_all(client->fd, request, len)) < 0)
        return rc;
    if ((rc = recv_all(client->fd, hdr, sizeof(hdr), &got_fd)) < 0)
        goto fail;
    if (pm_header_decode(hdr, PM_KIND_REPLY, &rlen) != NULL) {
        rc = -EPROTO;
        goto fail;
    }
    if (rlen + 1 > reply_size) {
        rc = -EMSGSIZE;
        goto fail;
    }
    if ((rc = recv_all(client->fd, reply, rlen, &got_fd)) < 0)
        goto fail;
    reply[rlen] = '\0';
    if (fd_out)
        *fd_out = got_fd;
    else if (got_fd >= 0)
        close(got_fd);
    return (long)rlen;
fail:
    if (got_fd >= 0)
        close(got_fd);
    return rc;
}
