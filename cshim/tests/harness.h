/*
 * harness.h — a tiny test harness for the C core: CHECK records a failure
 * and goes on, each test function runs in the test process (or in a child
 * for death tests and option variants), and the program ends with the line
 * "N passed, N failed" that `make c-test` sums up.
 */
#ifndef SECRETHEAP_HARNESS_H
#define SECRETHEAP_HARNESS_H

#include <stddef.h>
#include <stdio.h>

extern int h_failed_now;

void h_fail_at(const char *file, int line, const char *what);
#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            h_fail_at(__FILE__, __LINE__, #c);                                                                         \
    } while (0)
#define CHECK_MSG(c, ...)                                                                                              \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            h_fail_at(__FILE__, __LINE__, #c);                                                                         \
            fprintf(stderr, "    ");                                                                                   \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
        }                                                                                                              \
    } while (0)

/* Runs one test and counts it. */
void h_run(const char *name, void (*fn)(void));
#define RUN(fn) h_run(#fn, fn)
/* Prints "N passed, N failed"; returns the exit code. */
int h_done(void);

/* Result of a child process. */
struct h_child {
    int exited, code;  /* normal exit and its code */
    int signaled, sig; /* killed by a signal */
    char err[8192];    /* its stderr (and stdout), NUL-terminated, cut if longer */
};

/* Runs fn(arg) in a forked child (stderr captured; exit code = fn's return). */
void h_fork(int (*fn)(void *), void *arg, struct h_child *out);
/*
 * Re-executes this test program as `prog mode` with extra environment
 * entries ("NAME=value", NULL-terminated) — a fresh process whose options
 * are read from that environment. uid/memlock: if uid >= 0, the child drops
 * to that uid/gid after setting RLIMIT_MEMLOCK to memlock bytes.
 */
void h_reexec(const char *mode, const char *const *env, long uid, size_t memlock, struct h_child *out);
/* Dispatches `prog mode` to the function of that name; returns -1 if none. */
struct h_mode {
    const char *name;
    int (*fn)(void);
};
int h_dispatch(int argc, char **argv, const struct h_mode *modes);

/* True if s contains sub. */
int h_contains(const char *s, const char *sub);

/* The VmFlags line of the /proc/self/smaps entry covering p, or "". */
void h_smaps_flags(const void *p, char *flags, size_t n);

#endif
