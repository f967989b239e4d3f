/*
 * The real daemon, through the client library: every operation, the
 * error replies, malformed and fuzzed messages, descriptor handoff, and a
 * kill -9 and restart with a pool in use.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "vmbeam_pagemover.h"

#define MIB (1 << 20)

static const char *daemon_bin;
static char root[] = "/dev/shm/pm-dtest-XXXXXX";
static char dir[512], sock[512], logpath[512];
static char reply[PM_MAX_PAYLOAD + 1];

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static pid_t start_daemon(const char *budget)
{
    pid_t pid = fork();

    if (pid == 0) {
        execl(daemon_bin, daemon_bin, "--socket", sock, "--pool-dir", dir,
              "--budget-mib", budget, "--log", logpath, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct pm_client c;

        if (pm_connect(&c, sock) == 0) {
            pm_disconnect(&c);
            return pid;
        }
        sleep_ms(10);
    }
    return -1;
}

/* One request on a fresh connection; the reply is in ``reply``. */
static long call(const char *request, int *fd_out)
{
    struct pm_client c;
    long n;

    if (pm_connect(&c, sock) < 0)
        return -1;
    n = pm_call(&c, request, reply, sizeof(reply), fd_out);
    pm_disconnect(&c);
    return n;
}

/* Raw bytes on a fresh connection; the reply (if any) is in ``reply``. */
static long raw(const void *bytes, size_t len)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    uint8_t hdr[PM_HEADER_SIZE];
    uint32_t rlen = 0;
    struct timeval tv = { 5, 0 };
    long got = -1;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(addr.sun_path, sock);
    reply[0] = '\0';
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(fd);
        return -2;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (write(fd, bytes, len) == (ssize_t)len) {
        shutdown(fd, SHUT_WR);
        if (recv(fd, hdr, sizeof(hdr), MSG_WAITALL) == sizeof(hdr) &&
            pm_header_decode(hdr, PM_KIND_REPLY, &rlen) == NULL &&
            recv(fd, reply, rlen, MSG_WAITALL) == (ssize_t)rlen) {
            reply[rlen] = '\0';
            got = (long)rlen;
        }
    }
    close(fd);
    return got;
}

static void test_operations(void)
{
    char req[1024], path[600];
    struct stat st;
    int fd = -1;
    char *ram;

    CHECK(call("{\"op\":\"hello\",\"version\":1}", NULL) > 0);
    CHECK_STR(reply, "\"ok\":true");
    CHECK_STR(reply, "\"version\":1");
    CHECK(call("{\"op\":\"allocate\",\"uuid\":\"g1\",\"size\":4194304}",
               NULL) > 0);
    CHECK_STR(reply, "\"error\":\"pool_dir_missing\"");
    CHECK(stat(dir, &st) < 0);
    CHECK(call("{\"op\":\"ensure\"}", NULL) > 0);
    CHECK_STR(reply, "\"fstype\":\"tmpfs\"");
    CHECK(call("{\"op\":\"allocate\",\"uuid\":\"g1\",\"size\":4194304}",
               NULL) > 0);
    CHECK_STR(reply, "\"ok\":true");
    snprintf(path, sizeof(path), "\"path\":\"%s/g1.ram\"", dir);
    CHECK_STR(reply, path);
    /* Bad requests: a clear error, nothing changed. */
    CHECK(call("{\"op\":\"allocate\",\"uuid\":\"g1\",\"size\":8388608}",
               NULL) > 0);
    CHECK_STR(reply, "\"error\":\"size_mismatch\"");
    CHECK(call("{\"op\":\"allocate\",\"uuid\":\"g2\",\"size\":16777216}",
               NULL) > 0);
    CHECK_STR(reply, "\"error\":\"over_budget\"");
    CHECK(call("{\"op\":\"path\",\"uuid\":\"nope\"}", NULL) > 0);
    CHECK_STR(reply, "\"error\":\"unknown_pool\"");
    CHECK(call("{\"op\":\"path\",\"uuid\":\"../etc\"}", NULL) > 0);
    CHECK_STR(reply, "\"error\":\"bad_argument\"");
    CHECK(call("{\"op\":\"list\"}", NULL) > 0);
    CHECK_STR(reply, "[{\"uuid\":\"g1\",\"size\":4194304}]");

    /* Descriptor handoff (SCM_RIGHTS): the very same RAM as the path. */
    CHECK(call("{\"op\":\"fd\",\"uuid\":\"g1\"}", &fd) > 0);
    CHECK(fd >= 0);
    ram = fd < 0 ? MAP_FAILED :
        mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(ram != MAP_FAILED);
    if (ram == MAP_FAILED)
        return;
    close(fd);
    strcpy(ram + MIB, "written through the descriptor");
    snprintf(path, sizeof(path), "%s/g1.ram", dir);
    {
        char buf[64] = "";
        int pfd = open(path, O_RDONLY);

        CHECK(pfd >= 0 && pread(pfd, buf, 30, MIB) == 30);
        CHECK(memcmp(buf, "written through the descriptor", 30) == 0);
        close(pfd);
    }
    snprintf(req, sizeof(req), "{\"op\":\"verify\",\"uuid\":\"g1\","
             "\"pid\":%d}", (int)getpid());
    CHECK(call(req, NULL) > 0);
    CHECK_STR(reply, "\"maps\":true");
    {
        pid_t other = fork();

        if (other == 0) {
            /* a process that does not map the pool */
            munmap(ram, 4 * MIB);
            pause();
            _exit(0);
        }
        sleep_ms(50);
        snprintf(req, sizeof(req), "{\"op\":\"verify\",\"uuid\":\"g1\","
                 "\"pid\":%d}", (int)other);
        CHECK(call(req, NULL) > 0);
        CHECK_STR(reply, "\"maps\":false");
        kill(other, SIGKILL);
        waitpid(other, NULL, 0);
    }
    CHECK(call("{\"op\":\"residency\",\"uuid\":\"g1\"}", NULL) > 0);
    CHECK_STR(reply, "\"resident_bytes\":4096");
    snprintf(req, sizeof(req), "\"pids\":[%d]", (int)getpid());
    CHECK(call("{\"op\":\"mapped_by\",\"uuid\":\"g1\"}", NULL) > 0);
    CHECK_STR(reply, req);
    CHECK(call("{\"op\":\"release\",\"uuid\":\"g1\"}", NULL) > 0);
    CHECK_STR(reply, "\"error\":\"in_use\"");
    CHECK(stat(path, &st) == 0);
    munmap(ram, 4 * MIB);
    CHECK(call("{\"op\":\"release\",\"uuid\":\"g1\"}", NULL) > 0);
    CHECK_STR(reply, "\"released\":true");
    CHECK(stat(path, &st) < 0);
}

static void test_malformed(void)
{
    uint8_t msg[PM_HEADER_SIZE + 64];
    const char *body = "{\"op\":\"hello\"}";
    struct pm_client c;

    /* Not JSON: an error, and the same connection still works. */
    CHECK(pm_connect(&c, sock) == 0);
    CHECK(pm_call(&c, "{\"op\":", reply, sizeof(reply), NULL) > 0);
    CHECK_STR(reply, "\"error\":\"malformed\"");
    CHECK(pm_call(&c, "{\"op\":\"frobnicate\"}", reply, sizeof(reply),
                  NULL) > 0);
    CHECK_STR(reply, "\"error\":\"unknown_op\"");
    CHECK(pm_call(&c, "{\"uuid\":\"x\"}", reply, sizeof(reply), NULL) > 0);
    CHECK_STR(reply, "\"error\":\"bad_argument\"");
    CHECK(pm_call(&c, "{\"op\":\"hello\",\"version\":7}", reply,
                  sizeof(reply), NULL) > 0);
    CHECK_STR(reply, "\"error\":\"unsupported_version\"");
    CHECK(pm_call(&c, body, reply, sizeof(reply), NULL) > 0);
    CHECK_STR(reply, "\"ok\":true");
    pm_disconnect(&c);

    /* A header from another protocol version: said so, then closed. */
    pm_header_encode(msg, PM_KIND_REQUEST, (uint32_t)strlen(body));
    msg[4] = 2;
    memcpy(msg + PM_HEADER_SIZE, body, strlen(body));
    CHECK(raw(msg, PM_HEADER_SIZE + strlen(body)) > 0);
    CHECK_STR(reply, "\"error\":\"unsupported_version\"");
    /* Garbage, and a length past the limit. */
    CHECK(raw("GET / HTTP/1.0\r\n\r\n", 18) > 0);
    CHECK_STR(reply, "\"error\":\"malformed\"");
    pm_header_encode(msg, PM_KIND_REQUEST, 0);
    msg[8] = 0x7f;
    CHECK(raw(msg, PM_HEADER_SIZE) > 0);
    CHECK_STR(reply, "\"error\":\"malformed\"");
    /* A client that hangs up mid-message. */
    pm_header_encode(msg, PM_KIND_REQUEST, 40);
    CHECK(raw(msg, PM_HEADER_SIZE + 3) == -1);
}

static void test_fuzz(pid_t daemon, int rounds)
{
    static const char *seeds[] = {
        "{\"op\":\"allocate\",\"uuid\":\"fz\",\"size\":1048576}",
        "{\"op\":\"verify\",\"uuid\":\"fz\",\"pid\":1}",
        "{\"op\":\"release\",\"uuid\":\"fz\"}",
        "{\"op\":\"attach\",\"uuid\":\"fz\",\"qmp\":\"/nonexistent\","
        "\"device\":\"d0\",\"timeout\":1}",
        "{\"op\":\"residency\",\"uuid\":\"fz\"}",
    };
    uint8_t msg[PM_HEADER_SIZE + 256];
    uint64_t s = 42;
    int r;

    for (r = 0; r < rounds; r++) {
        const char *seed = seeds[r % 5];
        size_t len = strlen(seed), i;

        pm_header_encode(msg, PM_KIND_REQUEST, (uint32_t)len);
        memcpy(msg + PM_HEADER_SIZE, seed, len);
        for (i = 0; i < 1 + (size_t)(r % 4); i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            /* mostly the payload, sometimes the header */
            msg[(r % 8 ? PM_HEADER_SIZE : 0) +
                s % (r % 8 ? len : PM_HEADER_SIZE)] ^= (uint8_t)(s >> 32);
        }
        raw(msg, PM_HEADER_SIZE + len);
    }
    CHECK(kill(daemon, 0) == 0);
    CHECK(waitpid(daemon, NULL, WNOHANG) == 0);
    CHECK(call("{\"op\":\"hello\"}", NULL) > 0);
    CHECK_STR(reply, "\"ok\":true");
    call("{\"op\":\"release\",\"uuid\":\"fz\"}", NULL);
}

static void test_crash_and_recovery(pid_t *daemon)
{
    char *ram;
    int fd = -1, status;

    CHECK(call("{\"op\":\"allocate\",\"uuid\":\"g5\",\"size\":2097152}",
               NULL) > 0);
    CHECK(call("{\"op\":\"fd\",\"uuid\":\"g5\"}", &fd) > 0 && fd >= 0);
    ram = mmap(NULL, 2 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(ram != MAP_FAILED);
    close(fd);
    if (ram == MAP_FAILED)
        return;
    strcpy(ram, "survives the daemon");
    kill(*daemon, SIGKILL);
    waitpid(*daemon, NULL, 0);
    *daemon = start_daemon("8");
    CHECK(*daemon > 0);
    CHECK(call("{\"op\":\"hello\"}", NULL) > 0);
    /* g5, and whatever the fuzz run allocated; only g5 is in use */
    CHECK(!strstr(reply, "\"recovered\":0"));
    CHECK_STR(reply, "\"in_use\":1");
    CHECK(call("{\"op\":\"fd\",\"uuid\":\"g5\"}", &fd) > 0 && fd >= 0);
    {
        char buf[32] = "";

        CHECK(pread(fd, buf, 19, 0) == 19 &&
              memcmp(buf, "survives the daemon", 19) == 0);
        close(fd);
    }
    munmap(ram, 2 * MIB);
    CHECK(call("{\"op\":\"release\",\"uuid\":\"g5\"}", NULL) > 0);
    CHECK_STR(reply, "\"released\":true");
    /* Shutdown: the daemon says ok and exits cleanly. */
    CHECK(call("{\"op\":\"shutdown\"}", NULL) > 0);
    CHECK(waitpid(*daemon, &status, 0) == *daemon && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
    *daemon = -1;
}

static void test_daemon_mode(void)
{
    char cmd[2048], pidfile[600];
    FILE *f;
    int pid = 0;

    snprintf(cmd, sizeof(cmd), "%s --daemon --socket %s --pool-dir %s "
             "--log %s", daemon_bin, sock, dir, logpath);
    CHECK(system(cmd) == 0);
    /* A second one on the same socket refuses to start, and says why. */
    snprintf(cmd, sizeof(cmd), "%s --daemon --socket %s --pool-dir %s "
             "2>&1 | grep -q 'another vmbeam-pagemoverd'", daemon_bin, sock,
             dir);
    CHECK(system(cmd) == 0);
    snprintf(pidfile, sizeof(pidfile), "%s.pid", sock);
    f = fopen(pidfile, "r");
    CHECK(f && fscanf(f, "%d", &pid) == 1);
    if (f)
        fclose(f);
    /* a session of its own (double fork: not its leader), not ours */
    CHECK(pid > 0 && getsid(pid) > 0 && getsid(pid) != getsid(0));
    CHECK(call("{\"op\":\"shutdown\"}", NULL) > 0);
    for (int i = 0; i < 500 && pid > 0 && kill(pid, 0) == 0; i++)
        sleep_ms(10);
    CHECK(pid > 0 && kill(pid, 0) < 0);
}

int main(int argc, char **argv)
{
    pid_t daemon;
    char cmd[600];

    daemon_bin = argc > 1 ? argv[1] : "build/vmbeam-pagemoverd";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dir, sizeof(dir), "%s/ram", root);
    snprintf(sock, sizeof(sock), "%s/pagemoverd.sock", root);
    snprintf(logpath, sizeof(logpath), "%s/pagemoverd.log", root);
    daemon = start_daemon("8");
    CHECK(daemon > 0);
    if (daemon > 0) {
        test_operations();
        test_malformed();
        test_fuzz(daemon, 3000);
        test_crash_and_recovery(&daemon);
        if (daemon > 0) {
            kill(daemon, SIGTERM);
            waitpid(daemon, NULL, 0);
        }
        test_daemon_mode();
    }
    if (check_failures) {
        snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", logpath);
        if (system(cmd) != 0)
            fprintf(stderr, "no daemon log\n");
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return check_report("test_daemon");
}
