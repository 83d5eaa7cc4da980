/* harness.c — see harness.h. */
#include "harness.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int h_failed_now;
static int passed, failed;

void h_fail_at(const char *file, int line, const char *what) {
    fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what);
    h_failed_now = 1;
}

void h_run(const char *name, void (*fn)(void)) {
    h_failed_now = 0;
    fn();
    if (h_failed_now) {
        failed++;
        fprintf(stderr, "--- FAIL %s\n", name);
    } else {
        passed++;
        fprintf(stderr, "ok   %s\n", name);
    }
}

int h_done(void) {
    fflush(stdout);
    fprintf(stderr, "%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

static void collect(pid_t pid, int fd, struct h_child *out) {
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out->err + n, sizeof out->err - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == sizeof out->err - 1) {
            char sink[4096];
            while (read(fd, sink, sizeof sink) > 0)
                ;
            break;
        }
    }
    out->err[n] = 0;
    close(fd);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    out->exited = WIFEXITED(st);
    out->code = out->exited ? WEXITSTATUS(st) : -1;
    out->signaled = WIFSIGNALED(st);
    out->sig = out->signaled ? WTERMSIG(st) : 0;
}

/* Clears out and opens the pipe that carries a child's output. */
static void child_pipe(int p[2], struct h_child *out) {
    memset(out, 0, sizeof *out);
    fflush(NULL);
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
}

/* In the child: stdout and stderr go to the pipe. */
static void output_to(int p[2]) {
    close(p[0]);
    dup2(p[1], 2);
    dup2(p[1], 1);
    close(p[1]);
}

void h_fork(int (*fn)(void *), void *arg, struct h_child *out) {
    int p[2];
    child_pipe(p, out);
    pid_t pid = fork();
    if (pid == 0) {
        output_to(p);
        signal(SIGABRT, SIG_DFL);
        _exit(fn(arg));
    }
    close(p[1]);
    collect(pid, p[0], out);
}

void h_reexec(const char *mode, const char *const *env, long uid, size_t memlock, struct h_child *out) {
    int p[2];
    child_pipe(p, out);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        perror("readlink");
        exit(2);
    }
    exe[n] = 0;
    pid_t pid = fork();
    if (pid == 0) {
        output_to(p);
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        if (uid >= 0) {
            struct rlimit rl = {memlock, memlock};
            if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 ||
                setuid((uid_t)uid) != 0) {
                perror("dropping privileges");
                _exit(3);
            }
        }
        char *argv[] = {exe, (char *)mode, NULL};
        execv(exe, argv);
        perror("execv");
        _exit(4);
    }
    close(p[1]);
    collect(pid, p[0], out);
}

int h_dispatch(int argc, char **argv, const struct h_mode *modes) {
    if (argc < 2) {
        /* The test program itself (not a re-executed mode). As root, lift
         * RLIMIT_MEMLOCK: on the new accounting model root's default 8 MiB
         * is a budget with no CAP_IPC_LOCK bypass, shared by every child the
         * tests start, and tests that are not about the limit would fall
         * back. Tests about it set their own limit (h_reexec, setrlimit).
         * 1 GiB rather than RLIM_INFINITY: a bound keeps a runaway test
         * from locking the machine's memory. */
        struct rlimit inf = {(rlim_t)1 << 30, (rlim_t)1 << 30};
        if (geteuid() == 0)
            setrlimit(RLIMIT_MEMLOCK, &inf);
        return -1;
    }
    for (const struct h_mode *m = modes; m->name; m++)
        if (strcmp(m->name, argv[1]) == 0)
            return m->fn();
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}

int h_contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

void h_smaps_flags(const void *p, char *flags, size_t n) {
    flags[0] = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    char buf[512];
    int in = 0;
    while (fgets(buf, sizeof buf, f)) {
        unsigned long lo, hi;
        char dash;
        if (sscanf(buf, "%lx%c%lx", &lo, &dash, &hi) == 3 && dash == '-') {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (in && strncmp(buf, "VmFlags:", 8) == 0) {
            snprintf(flags, n, "%s", buf);
            break;
        }
    }
    fclose(f);
}
