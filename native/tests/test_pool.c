/* Pool operations on a real tmpfs directory (/dev/shm). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pool.h"
#include "vmbeam_pagemover.h"

#define MIB (1ULL << 20)

static char root[] = "/dev/shm/pm-test-XXXXXX";
static char dir[PATH_MAX];

static void rm_rf(const char *path)
{
    char cmd[PATH_MAX + 16];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

/* A child that maps ``path`` shared and waits; returns its pid. */
static pid_t map_in_child(const char *path, size_t size)
{
    int ready[2];
    char ch;
    pid_t pid;

    if (pipe(ready) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        int fd = open(path, O_RDWR);
        void *p = fd < 0 ? MAP_FAILED :
            mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

        if (p == MAP_FAILED)
            _exit(1);
        memcpy(p, "guest ram", 9);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    if (read(ready[0], &ch, 1) != 1)
        pid = -1;
    close(ready[0]);
    return pid;
}

static void kill_child(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_checks(void)
{
    struct pm_ctx ctx;
    struct pm_err err;

    pm_ctx_init(&ctx, dir, getuid(), getgid(), 0, 0);
    CHECK(pm_ready(&ctx, &err) < 0 && strcmp(err.code, PM_E_NO_POOL_DIR) == 0);
    CHECK_STR(err.message, "vmbeam pool init");
    CHECK(pm_allocate(&ctx, "g1", MIB, &err) == NULL);
    CHECK(access(dir, F_OK) < 0);   /* a refused request changes nothing */
    CHECK(pm_ensure_dir(&ctx, &err) == 0);
    CHECK(strcmp(ctx.fstype, "tmpfs") == 0);
    {
        struct stat st;

        CHECK(stat(dir, &st) == 0 && (st.st_mode & 07777) == 0711);
    }
    pm_ctx_free(&ctx);
    /* wrong owner */
    pm_ctx_init(&ctx, dir, 65534, 65534, 0, 0);
    CHECK(pm_ready(&ctx, &err) < 0 &&
          strcmp(err.code, PM_E_WRONG_OWNER) == 0);
    CHECK_STR(err.message, "chown 65534");
    pm_ctx_free(&ctx);
    /* not tmpfs */
    pm_ctx_init(&ctx, "/tmp", getuid(), getgid(), 0, 0);
    if (pm_ready(&ctx, &err) < 0)
        CHECK(strcmp(err.code, PM_E_BAD_FILESYSTEM) == 0 ||
              strcmp(err.code, PM_E_WRONG_OWNER) == 0);
    pm_ctx_free(&ctx);
}

static void test_allocate_release(void)
{
    struct pm_ctx ctx;
    struct pm_err err;
    struct pm_pool *pool;
    char path[PATH_MAX];
    struct stat st;
    pid_t child;

    pm_ctx_init(&ctx, dir, getuid(), getgid(), 8 * MIB, 0);
    CHECK(pm_allocate(&ctx, "../evil", MIB, &err) == NULL &&
          strcmp(err.code, PM_E_BAD_ARGUMENT) == 0);
    CHECK(pm_allocate(&ctx, ".hidden", MIB, &err) == NULL);
    pool = pm_allocate(&ctx, "g1", 4 * MIB, &err);
    CHECK(pool != NULL);
    pm_public_path(&ctx, "g1", path, sizeof(path));
    CHECK(stat(path, &st) == 0 && st.st_size == (off_t)(4 * MIB) &&
          (st.st_mode & 0777) == 0600 && st.st_uid == getuid());
    /* same size: the same pool again; other size: refused */
    CHECK(pm_allocate(&ctx, "g1", 4 * MIB, &err) == pm_find(&ctx, "g1"));
    CHECK(pm_allocate(&ctx, "g1", 2 * MIB, &err) == NULL &&
          strcmp(err.code, PM_E_SIZE_MISMATCH) == 0);
    CHECK(stat(path, &st) == 0 && st.st_size == (off_t)(4 * MIB));
    /* budget: 8 MiB in all */
    CHECK(pm_allocate(&ctx, "g2", 8 * MIB, &err) == NULL &&
          strcmp(err.code, PM_E_OVER_BUDGET) == 0);
    CHECK_STR(err.message, "ram_pool_budget_mib");
    CHECK(pm_find(&ctx, "g2") == NULL);
    pm_public_path(&ctx, "g2", path, sizeof(path));
    CHECK(access(path, F_OK) < 0);
    /* reserve: more than the filesystem has */
    ctx.reserve = 1ULL << 50;
    CHECK(pm_allocate(&ctx, "g3", MIB, &err) == NULL &&
          strcmp(err.code, PM_E_NO_SPACE) == 0);
    ctx.reserve = 0;

    /* residency: nothing touched yet, then one page */
    pool = pm_find(&ctx, "g1");
    CHECK(pm_resident_bytes(pool) == 0);
    pm_public_path(&ctx, "g1", path, sizeof(path));
    child = map_in_child(path, 4 * MIB);
    CHECK(child > 0);
    CHECK(pm_resident_bytes(pool) >= 4096);
    CHECK(pm_mapped_bytes(child, pool->dev, pool->ino) == (long long)(4 * MIB));
    CHECK(pm_mapped_bytes(getpid(), pool->dev, pool->ino) == 0);
    {
        pid_t pids[4];

        CHECK(pm_pids_mapping(pool->dev, pool->ino, pids, 4) == 1 &&
              pids[0] == child);
    }
    /* never freed while mapped */
    CHECK(pm_release(&ctx, "g1", &err) == 0 &&
          strcmp(err.code, PM_E_IN_USE) == 0);
    CHECK(access(path, F_OK) == 0 && pm_find(&ctx, "g1") != NULL);
    kill_child(child);
    CHECK(pm_release(&ctx, "g1", &err) == 1);
    CHECK(access(path, F_OK) < 0 && pm_find(&ctx, "g1") == NULL);
    CHECK(pm_release(&ctx, "g1", &err) < 0 &&
          strcmp(err.code, PM_E_UNKNOWN_POOL) == 0);
    pm_ctx_free(&ctx);
}

static void test_unlink_crash_and_recovery(void)
{
    struct pm_ctx ctx;
    struct pm_err err;
    struct pm_pool *pool;
    char path[PATH_MAX], orphan[PATH_MAX], buf[16] = "";
    pid_t child;
    int fd;

    pm_ctx_init(&ctx, dir, getuid(), getgid(), 0, 0);
    pool = pm_allocate(&ctx, "g4", 2 * MIB, &err);
    CHECK(pool != NULL);
    pm_public_path(&ctx, "g4", path, sizeof(path));
    child = map_in_child(path, 2 * MIB);
    CHECK(child > 0);
    /* An accidental unlink: the name comes back, same inode, same RAM. */
    CHECK(unlink(path) == 0);
    CHECK(pm_path(&ctx, pool, path, sizeof(path), &err) == 0);
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, 9) == 9 && memcmp(buf, "guest ram", 9) == 0);
    close(fd);
    /* The mapper dies: the RAM stays. */
    kill_child(child);
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, 9) == 9 && memcmp(buf, "guest ram", 9) == 0);
    close(fd);

    /* The daemon "crashes"; leftovers of an interrupted allocation and an
     * interrupted release lie around; a file made by hand is there. */
    pm_ctx_free(&ctx);
    unlink(path);
    snprintf(orphan, sizeof(orphan), "%s/" PM_PRIVATE_DIR "/.new-g9.ram", dir);
    fd = open(orphan, O_CREAT | O_WRONLY, 0600);
    close(fd);
    snprintf(orphan, sizeof(orphan), "%s/" PM_PRIVATE_DIR
             "/.released-g8.ram", dir);
    fd = open(orphan, O_CREAT | O_WRONLY, 0600);
    close(fd);
    snprintf(orphan, sizeof(orphan), "%s/handmade.ram", dir);
    fd = open(orphan, O_CREAT | O_WRONLY, 0600);
    CHECK(ftruncate(fd, MIB) == 0);
    close(fd);

    pm_ctx_init(&ctx, dir, getuid(), getgid(), 0, 0);
    CHECK(pm_ready(&ctx, &err) == 0);
    CHECK(ctx.recovered == 1 && ctx.collected == 2 && ctx.adopted == 1 &&
          ctx.relinked == 1);
    CHECK(pm_find(&ctx, "g4") && pm_find(&ctx, "handmade"));
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, 9) == 9 && memcmp(buf, "guest ram", 9) == 0);
    close(fd);
    /* A second owner of the same pool directory is refused. */
    {
        struct pm_ctx other;

        pm_ctx_init(&other, dir, getuid(), getgid(), 0, 0);
        CHECK(pm_ready(&other, &err) < 0 &&
              strcmp(err.code, PM_E_LOCKED) == 0);
        pm_ctx_free(&other);
    }
    CHECK(pm_release(&ctx, "g4", &err) == 1);
    CHECK(pm_release(&ctx, "handmade", &err) == 1);
    CHECK(ctx.npools == 0);
    pm_ctx_free(&ctx);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dir, sizeof(dir), "%s/ram", root);
    test_checks();
    test_allocate_release();
    test_unlink_crash_and_recovery();
    rm_rf(root);
    return check_report("test_pool");
}
