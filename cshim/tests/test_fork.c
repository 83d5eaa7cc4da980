/*
 * test_fork.c — fork safety. Copy policy (default): children see the
 * parent's blocks, allocate/free/verify heavily, and neither side ever sees
 * the other's writes; a fork while another thread allocates leaves a
 * consistent child. Dontfork policy: a child (tested in a grandchild) gets
 * SIGSEGV on touching an inherited block, and can still allocate.
 * Controls: a MAP_SHARED anonymous page does show writes across fork (so the
 * "never shows" checks can fail), and under copy a grandchild can read.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NB 300
/* Sanitizer builds run fewer operations per child (TSan: ~10x per op, and
 * every fork copies its shadow state). */
#ifndef STRESS_OPS
#define STRESS_OPS 20000
#endif

static unsigned char *blocks[NB];
static size_t lens[NB];

static size_t len_of(int i) {
    static const size_t l[] = {16, 40, 100, 300, 1000, 4000, 20000, 50000};
    return l[i % 8] + (size_t)i;
}

static void fill(unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag + i * 31);
}

static int check_fill(const unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag + i * 31))
            return 0;
    return 1;
}

static void parent_alloc(void) {
    for (int i = 0; i < NB; i++) {
        lens[i] = len_of(i);
        blocks[i] = secretheap_malloc(lens[i]);
        fill(blocks[i], lens[i], (unsigned char)i);
    }
}

/* Child body: verify the parent's data, overwrite it, churn, verify. */
static int child_work(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < NB; i++)
        if (!check_fill(blocks[i], lens[i], (unsigned char)i))
            return 10;
    for (int i = 0; i < NB; i++)
        fill(blocks[i], lens[i], (unsigned char)(i + 100 + seed));
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    if (st.fork_reprivatised == 0)
        return 11;
    unsigned char *mine[200] = {0};
    size_t ml[200];
    for (int op = 0; op < STRESS_OPS; op++) {
        int k = (int)((seed * 2654435761u + (unsigned)op * 40503u) % 200);
        if (mine[k]) {
            if (!check_fill(mine[k], ml[k], (unsigned char)k))
                return 12;
            secretheap_free(mine[k]);
            mine[k] = NULL;
        } else {
            ml[k] = len_of(op) % 5000 + 1;
            mine[k] = secretheap_malloc(ml[k]);
            for (size_t j = 0; j < ml[k]; j++)
                if (mine[k][j])
                    return 13;
            fill(mine[k], ml[k], (unsigned char)k);
        }
        if (op % 2500 == 0 && secretheap_check() != 0)
            return 14;
    }
    for (int i = 0; i < NB; i++)
        if (!check_fill(blocks[i], lens[i], (unsigned char)(i + 100 + seed)))
            return 15;
    for (int k = 0; k < 200; k++)
        secretheap_free(mine[k]);
    for (int i = 0; i < NB; i++)
        secretheap_free(blocks[i]);
    return secretheap_check() == 0 ? 0 : 16;
}

static void test_children_private_copies(void) {
    parent_alloc();
    pid_t pids[4];
    for (int c = 0; c < 4; c++) {
        pids[c] = fork();
        if (pids[c] == 0)
            _exit(child_work((void *)(uintptr_t)(c + 1)));
    }
    for (int c = 0; c < 4; c++) {
        int st;
        waitpid(pids[c], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %#x", c, st);
    }
    /* The children overwrote every block: none of it shows here. */
    for (int i = 0; i < NB; i++)
        CHECK_MSG(check_fill(blocks[i], lens[i], (unsigned char)i), "parent block %d changed by a child", i);
    CHECK(secretheap_check() == 0);
}

/* The parent writes after fork; the child must still see the old data. */
static void test_parent_writes_invisible_to_child(void) {
    int go[2], done[2];
    CHECK(pipe(go) == 0 && pipe(done) == 0);
    /* Control: shared anonymous memory shows the parent's write. */
    volatile unsigned char *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared[0] = 1;
    pid_t pid = fork();
    if (pid == 0) {
        char b;
        if (read(go[0], &b, 1) != 1)
            _exit(20);
        int code = 0;
        if (shared[0] != 2)
            code = 21; /* control failed: the test could not see sharing */
        for (int i = 0; i < NB && !code; i++)
            if (!check_fill(blocks[i], lens[i], (unsigned char)i))
                code = 22;
        _exit(code);
    }
    for (int i = 0; i < NB; i++)
        fill(blocks[i], lens[i], (unsigned char)(i + 7));
    shared[0] = 2;
    CHECK(write(go[1], "x", 1) == 1);
    int st;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    for (int i = 0; i < NB; i++)
        fill(blocks[i], lens[i], (unsigned char)i);
    munmap((void *)shared, 4096);
    close(go[0]);
    close(go[1]);
    close(done[0]);
    close(done[1]);
}

/* A thread allocates and frees while the main thread forks repeatedly. */
static _Atomic int stop;
static void *churn(void *arg) {
    (void)arg;
    void *p[64] = {0};
    unsigned i = 0;
    while (!atomic_load(&stop)) {
        unsigned k = (i * 7919u) % 64;
        if (p[k])
            secretheap_free(p[k]);
        p[k] = secretheap_malloc((i * 37u) % 3000 + 1);
        i++;
    }
    for (int k = 0; k < 64; k++)
        secretheap_free(p[k]);
    return NULL;
}

static int child_after_threaded_fork(void *arg) {
    (void)arg;
    if (secretheap_check() != 0)
        return 30;
    return child_work((void *)(uintptr_t)9);
}

static void test_fork_with_threads_alive(void) {
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    for (int r = 0; r < 5; r++) {
        struct h_child ch;
        h_fork(child_after_threaded_fork, NULL, &ch);
        CHECK_MSG(ch.exited && ch.code == 0, "round %d: exit %d sig %d: %s", r, ch.code, ch.sig, ch.err);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    CHECK(secretheap_check() == 0);
}

/* Threads that allocate and free page runs (and whole slabs of a large
 * class) while the main thread forks: the child, the only thread left,
 * must find the heap exact (secretheap_check), including runs and slabs
 * another thread held between its lock-free steps at fork time — a run
 * whose req was cleared by free but not yet given back, a run returned by
 * the chunk layer but not yet marked live, a slab taken off its class
 * list to be released. Exact because the child has one thread. */
static _Atomic int run_stop;
static void *run_churn(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    void *p[8] = {0};
    while (!atomic_load(&run_stop)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned k = (unsigned)(x >> 40) % 8;
        secretheap_free(p[k]);
        size_t n = (x & 3) ? 32769 + (size_t)(x >> 20) % (240000 - 32769) : 16384 + (size_t)(x >> 20) % 16384;
        p[k] = secretheap_malloc(n);
    }
    for (int k = 0; k < 8; k++)
        secretheap_free(p[k]);
    return NULL;
}

static int child_check_only(void *arg) {
    (void)arg;
    return secretheap_check() == 0 ? 0 : 1;
}

static void test_fork_while_threads_move_runs(void) {
    pthread_t t[3];
    atomic_store(&run_stop, 0);
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, run_churn, (void *)(uintptr_t)(i + 1));
    int bad = 0;
    for (int r = 0; r < 30; r++) {
        struct h_child ch;
        h_fork(child_check_only, NULL, &ch);
        if (!(ch.exited && ch.code == 0) && bad++ < 3)
            CHECK_MSG(0, "fork %d: exit %d sig %d: %s", r, ch.code, ch.sig, ch.err);
    }
    CHECK_MSG(bad == 0, "%d of 30 fork children failed secretheap_check", bad);
    atomic_store(&run_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    CHECK(secretheap_check() == 0);
}

/* Deterministic: a thread is inside put_blocks' release window (empty
 * slabs off their class list, not yet given back to the chunk) while the
 * main thread forks. */
static _Atomic int hook_armed, in_window, forked;
static void release_hook(void) {
    int one = 1;
    if (!atomic_compare_exchange_strong(&hook_armed, &one, 0))
        return;
    atomic_store(&in_window, 1);
    while (!atomic_load(&forked))
        sched_yield();
}
static void *release_slabs(void *arg) {
    (void)arg;
    void *p[8];
    for (int i = 0; i < 8; i++) /* class 32 KiB: one block per slab */
        p[i] = secretheap_malloc(32768);
    atomic_store(&hook_armed, 1);
    for (int i = 0; i < 8; i++) /* overflows the 4-block magazine: put_blocks releases */
        secretheap_free(p[i]);
    return NULL;
}

static void test_fork_inside_slab_release(void) {
    pthread_t t;
    atomic_store(&in_window, 0);
    atomic_store(&forked, 0);
    sh_test_hook_release = release_hook;
    pthread_create(&t, NULL, release_slabs, NULL);
    while (!atomic_load(&in_window))
        sched_yield();
    struct h_child ch;
    h_fork(child_check_only, NULL, &ch);
    atomic_store(&forked, 1);
    pthread_join(t, NULL);
    sh_test_hook_release = NULL;
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    CHECK(secretheap_check() == 0);
}

/* ---- dontfork, in a fresh process with SECRETHEAP_FORK=dontfork ---- */

static int touch_in_grandchild(volatile unsigned char *p) {
    pid_t g = fork();
    if (g == 0) {
        signal(SIGSEGV, SIG_DFL);
        volatile unsigned char v = p[0];
        (void)v;
        _exit(0);
    }
    int st;
    waitpid(g, &st, 0);
    return st;
}

static int mode_dontfork(void) {
    unsigned char *p = secretheap_malloc(64);
    memset(p, 0x42, 64);
    pid_t pid = fork();
    if (pid == 0) {
        int st = touch_in_grandchild(p);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
            _exit(40);
        /* The hole is a guard again, and like every guard MADV_DONTDUMP. */
        char fl[512];
        h_smaps_flags(p, fl, sizeof fl);
        if (!strstr(fl, " dd"))
            _exit(43);
        secretheap_free(p); /* the block went with the mapping: ignored */
        unsigned char *q = secretheap_malloc(64);
        if (!q || q[0] != 0 || secretheap_backend(q) == SECRETHEAP_BACKEND_NONE)
            _exit(41);
        memset(q, 1, 64);
        secretheap_free(q);
        _exit(secretheap_check() == 0 ? 0 : 42);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st))
        return 50;
    if (WEXITSTATUS(st))
        return WEXITSTATUS(st);
    /* The parent keeps its block. */
    for (int i = 0; i < 64; i++)
        if (p[i] != 0x42)
            return 51;
    return 0;
}

/* Control under copy: the grandchild reads the inherited block fine. */
static int mode_copy_grandchild(void) {
    unsigned char *p = secretheap_malloc(64);
    pid_t pid = fork();
    if (pid == 0) {
        int st = touch_in_grandchild(p);
        _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 60);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 61;
}

static void test_dontfork(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_FORK=dontfork", NULL};
    h_reexec("dontfork", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    h_reexec("copy_grandchild", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "control: exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static const struct h_mode modes[] = {
    {"dontfork", mode_dontfork},
    {"copy_grandchild", mode_copy_grandchild},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_children_private_copies);
    RUN(test_parent_writes_invisible_to_child);
    RUN(test_fork_with_threads_alive);
    RUN(test_fork_while_threads_move_runs);
    RUN(test_fork_inside_slab_release);
    RUN(test_dontfork);
    return h_done();
}
