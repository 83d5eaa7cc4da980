/* soak.c — a bounded soak test of the C core: many threads in several
 * processes allocate, fill with patterns, pass blocks between threads,
 * realloc, verify and free for a fixed time, while one thread in each
 * process forks now and then.
 *
 *   soak [-seconds S] [-threads T] [-procs P] [-round-ms R]
 *
 * Defaults: S from SECRETHEAP_SOAK_SECONDS (else 20), T 4, P 2, R 1000.
 *
 * What it checks:
 *   - corruption: every block holds its pattern when it is verified (before
 *     realloc, before free, when another thread receives it);
 *   - the invariant checker: secretheap_check() at the end of each round,
 *     when the threads are parked (it is exact only then), and in every fork
 *     child;
 *   - fork isolation: a fork child verifies the forking thread's blocks,
 *     overwrites and frees them, allocates its own; the parent then checks
 *     that its blocks still hold its pattern (a shared free list or shared
 *     page would show here — Botan#602);
 *   - no leak: at the end of every round every block is freed, and then
 *     live_blocks is 0 and no page run or large region is left; committed
 *     bytes at round ends must not keep growing (last quarter of the rounds
 *     within three chunks of the first half's peak); and once the threads
 *     have exited, the chunks still mapped are at most the idle chunks
 *     (SECRETHEAP_IDLE_CHUNKS, default 2) plus the empty slabs the size
 *     classes keep, each of which can pin one chunk.
 * Exit status 0 only if every process saw none of these fail.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../cshim/include/secretheap.h"

#define NSLOTS 256
#define MAILBOX 64
#define CHUNK_MAX ((uint64_t)2 << 20)
#define MAX_ROUNDS 4096

static int nthreads = 4, nprocs = 2, round_ms = 1000;
static double seconds = 20;

static atomic_int failed;

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "soak[%d]: ", (int)getpid());                                                                  \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fputc('\n', stderr);                                                                                           \
        atomic_store(&failed, 1);                                                                                      \
    } while (0)

struct block {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

/* xorshift64*: per-thread, no shared state. */
static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static unsigned char pat(uint64_t seed, size_t i) { return (unsigned char)((seed >> ((i & 7) * 8)) + i * 131u); }

static void fill(struct block *b) {
    for (size_t i = 0; i < b->n; i++)
        b->p[i] = pat(b->seed, i);
}

static int intact(const struct block *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b->p[i] != pat(b->seed, i))
            return 0;
    return 1;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = rnd(s);
    switch (r & 15) {
    case 0:
        return 32768 + (r >> 8) % (200 * 1024); /* page runs */
    case 1:
        return (r >> 20) % 4096 == 0 ? (size_t)1200 * 1024 : 4096; /* rare own region */
    case 2:
    case 3:
        return 1 + (r >> 8) % 32768; /* any small class */
    default:
        return 1 + (r >> 8) % 512; /* the common case: small secrets */
    }
}

/* The mailbox passes blocks between threads, so that blocks are freed by a
 * thread other than the one that allocated them. */
static pthread_mutex_t mbox_mu = PTHREAD_MUTEX_INITIALIZER;
static struct block mbox[MAILBOX];
static int mbox_n;

static int mbox_put(struct block *b) {
    int ok = 0;
    pthread_mutex_lock(&mbox_mu);
    if (mbox_n < MAILBOX) {
        mbox[mbox_n++] = *b;
        ok = 1;
    }
    pthread_mutex_unlock(&mbox_mu);
    return ok;
}

static int mbox_take(struct block *b) {
    int ok = 0;
    pthread_mutex_lock(&mbox_mu);
    if (mbox_n > 0) {
        *b = mbox[--mbox_n];
        ok = 1;
    }
    pthread_mutex_unlock(&mbox_mu);
    return ok;
}

static void release(struct block *b, const char *who) {
    if (b->p == NULL)
        return;
    if (!intact(b, b->n))
        FAIL("block %p (%zu B) corrupted before %s", (void *)b->p, b->n, who);
    secretheap_free(b->p);
    b->p = NULL;
}

/* Round control: workers run until stop_round is set, then park at the
 * barrier so the main thread can check the heap while nothing moves. */
static atomic_int stop_round, stop_all;
static pthread_barrier_t bar;
static atomic_ulong total_ops, total_forks;

struct worker {
    pthread_t th;
    int id;
    uint64_t rng;
    struct block slots[NSLOTS];
};

/* fork_check forks while the other threads keep allocating. The child has
 * only this thread; its view of this thread's blocks must be intact, and
 * what it writes must not reach the parent. */
static void fork_check(struct worker *w) {
    pid_t pid = fork();
    if (pid < 0) {
        FAIL("fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        int bad = 0;
        if (secretheap_check() != 0) {
            fprintf(stderr, "soak[%d]: secretheap_check failed in fork child\n", (int)getpid());
            bad = 1;
        }
        for (int i = 0; i < NSLOTS; i++) {
            struct block *b = &w->slots[i];
            if (b->p == NULL)
                continue;
            if (!intact(b, b->n)) {
                fprintf(stderr, "soak[%d]: fork child sees block %d corrupted\n", (int)getpid(), i);
                bad = 1;
            }
            memset(b->p, 0xEE, b->n); /* must not reach the parent */
            if (i & 1) {
                secretheap_free(b->p);
                b->p = NULL;
            }
        }
        for (int i = 0; i < 64; i++) {
            struct block nb = {secretheap_malloc(pick_size(&w->rng)), 0, rnd(&w->rng)};
            if (nb.p == NULL) {
                bad = 1;
                break;
            }
            nb.n = secretheap_usable_size(nb.p);
            fill(&nb);
            if (!intact(&nb, nb.n))
                bad = 1;
            secretheap_free(nb.p);
        }
        if (secretheap_check() != 0)
            bad = 1;
        _exit(bad);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("fork child %d failed (status 0x%x)", (int)pid, st);
    for (int i = 0; i < NSLOTS; i++)
        if (w->slots[i].p != NULL && !intact(&w->slots[i], w->slots[i].n))
            FAIL("fork child's writes reached the parent's block %d", i);
    atomic_fetch_add(&total_forks, 1);
}

static void *work(void *arg) {
    struct worker *w = arg;
    unsigned long ops = 0;
    while (!atomic_load(&stop_all)) {
        while (!atomic_load(&stop_round)) {
            uint64_t r = rnd(&w->rng);
            struct block *b = &w->slots[(r >> 8) % NSLOTS];
            switch (r & 7) {
            case 0:
            case 1:
            case 2: { /* (re)place */
                release(b, "free");
                size_t n = pick_size(&w->rng);
                b->p = secretheap_malloc(n);
                if (b->p == NULL) {
                    FAIL("malloc(%zu) failed: %s", n, strerror(errno));
                    break;
                }
                b->n = n;
                b->seed = rnd(&w->rng);
                fill(b);
                break;
            }
            case 3: { /* realloc keeps the prefix */
                if (b->p == NULL)
                    break;
                size_t n = pick_size(&w->rng);
                if (!intact(b, b->n))
                    FAIL("block corrupted before realloc");
                unsigned char *p = secretheap_realloc(b->p, n);
                if (p == NULL) {
                    FAIL("realloc(%zu) failed", n);
                    break;
                }
                b->p = p;
                size_t keep = b->n < n ? b->n : n;
                if (!intact(b, keep))
                    FAIL("realloc %zu -> %zu lost the contents", b->n, n);
                b->n = n;
                fill(b);
                break;
            }
            case 4: /* hand a block to another thread */
                if (b->p != NULL && mbox_put(b))
                    b->p = NULL;
                break;
            case 5: { /* take one from another thread, check, free */
                struct block in;
                if (mbox_take(&in))
                    release(&in, "cross-thread free");
                break;
            }
            case 6:
                release(b, "free");
                break;
            default:
                if (w->id == 0 && (r >> 16) % 2048 == 0)
                    fork_check(w);
                else if (b->p != NULL && !intact(b, b->n))
                    FAIL("block corrupted while live");
                break;
            }
            ops++;
        }
        for (int i = 0; i < NSLOTS; i++)
            release(&w->slots[i], "free at round end");
        pthread_barrier_wait(&bar); /* everything freed by this thread */
        pthread_barrier_wait(&bar); /* main has checked; next round */
    }
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int soak_process(int proc) {
    long idle = 2;
    const char *e = getenv("SECRETHEAP_IDLE_CHUNKS");
    if (e != NULL && *e)
        idle = strtol(e, NULL, 10);
    struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
    if (ws == NULL)
        return 1;
    pthread_barrier_init(&bar, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        ws[i].id = i;
        ws[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(proc * 1000 + i + 1) ^ (uint64_t)time(NULL);
        if (pthread_create(&ws[i].th, NULL, work, &ws[i]) != 0)
            return 1;
    }
    double end = now() + seconds;
    int round = 0;
    uint64_t max_committed = 0;
    static uint64_t committed[MAX_ROUNDS];
    for (;;) {
        struct timespec ts = {round_ms / 1000, (long)(round_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        atomic_store(&stop_round, 1);
        pthread_barrier_wait(&bar);
        /* Threads are parked and hold no blocks; the mailbox still may. */
        struct block b;
        while (mbox_take(&b))
            release(&b, "mailbox drain");
        round++;
        if (secretheap_check() != 0)
            FAIL("secretheap_check failed after round %d", round);
        struct secretheap_stats st;
        if (secretheap_stats(&st, sizeof st) != 0)
            FAIL("secretheap_stats failed");
        uint64_t chunks = st.chunks_mapped;
        if (st.live_blocks != 0 || st.reserved_bytes != 0 || st.large_regions != 0 || st.large_regions_mapped != 0 ||
            st.run_blocks != 0)
            FAIL("round %d: leak: live_blocks %llu, reserved %llu B, large regions %llu live / %llu mapped, "
                 "page runs %llu",
                 round, (unsigned long long)st.live_blocks, (unsigned long long)st.reserved_bytes,
                 (unsigned long long)st.large_regions, (unsigned long long)st.large_regions_mapped,
                 (unsigned long long)st.run_blocks);
        if (round <= MAX_ROUNDS)
            committed[round - 1] = st.committed_bytes;
        if (st.committed_bytes > max_committed)
            max_committed = st.committed_bytes;
        if (getenv("SOAK_VERBOSE") != NULL)
            fprintf(stderr, "soak[%d]: round %d: chunks %llu, committed %llu B\n", (int)getpid(), round,
                    (unsigned long long)chunks, (unsigned long long)st.committed_bytes);
        int last = now() >= end || atomic_load(&failed);
        if (last)
            atomic_store(&stop_all, 1);
        atomic_store(&stop_round, 0);
        pthread_barrier_wait(&bar);
        if (last)
            break;
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(ws[i].th, NULL);

    /* Committed memory must not grow from round to round once warm: the
     * last quarter of the rounds may not end above the first half's peak by
     * more than three chunks (commits are lazy, in growing runs, and stay
     * with a kept chunk, so the early rounds still rise and a rare large
     * request adds a step; a leak keeps rising round after round). */
    int nr = round < MAX_ROUNDS ? round : MAX_ROUNDS;
    if (nr >= 4) {
        uint64_t first = 0, last = 0;
        for (int i = 0; i < nr; i++) {
            if (i < nr / 2)
                first = committed[i] > first ? committed[i] : first;
            else if (i >= nr - nr / 4)
                last = committed[i] > last ? committed[i] : last;
        }
        if (last > first + 3 * CHUNK_MAX)
            FAIL("committed bytes grow across rounds: first half peak %llu B, last quarter %llu B",
                 (unsigned long long)first, (unsigned long long)last);
    }

    /* The threads have exited, so their magazines went back to the central
     * lists and no block is live. A chunk may stay mapped only as one of
     * the idle chunks or because it holds the one empty slab a size class
     * keeps (cshim/heap.c put_blocks): anything beyond is a leaked chunk. */
    struct secretheap_stats st;
    if (secretheap_stats(&st, sizeof st) != 0)
        FAIL("secretheap_stats failed");
    if (secretheap_check() != 0)
        FAIL("secretheap_check failed at the end");
    uint64_t kept = 0;
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        kept += st.classes[i].slabs;
        if (getenv("SOAK_VERBOSE") != NULL && st.classes[i].slabs > 1)
            fprintf(stderr, "soak[%d]: class %llu B keeps %llu empty slabs\n", (int)getpid(),
                    (unsigned long long)st.classes[i].size, (unsigned long long)st.classes[i].slabs);
    }
    if (st.live_blocks != 0 || st.chunks_mapped > (uint64_t)idle + kept ||
        st.committed_bytes > ((uint64_t)idle + kept) * CHUNK_MAX)
        FAIL("at the end: %llu live blocks, %llu chunks mapped, %llu B committed "
             "(bound: %ld idle chunks + %llu kept empty slabs)",
             (unsigned long long)st.live_blocks, (unsigned long long)st.chunks_mapped,
             (unsigned long long)st.committed_bytes, idle, (unsigned long long)kept);
    printf("soak[%d]: %d rounds, %lu ops, %lu forks, committed at round ends <= %llu B, at exit %llu B in %llu "
           "chunks (%llu empty slabs kept), %s\n",
           (int)getpid(), round, atomic_load(&total_ops), atomic_load(&total_forks), (unsigned long long)max_committed,
           (unsigned long long)st.committed_bytes, (unsigned long long)st.chunks_mapped, (unsigned long long)kept,
           atomic_load(&failed) ? "FAILED" : "ok");
    free(ws);
    return atomic_load(&failed) ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *e = getenv("SECRETHEAP_SOAK_SECONDS");
    if (e != NULL && *e)
        seconds = atof(e);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-threads"))
            nthreads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-procs"))
            nprocs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-round-ms"))
            round_ms = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: soak [-seconds S] [-threads T] [-procs P] [-round-ms R]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nprocs < 1 || round_ms < 10 || seconds <= 0) {
        fprintf(stderr, "soak: bad arguments\n");
        return 2;
    }
    fflush(stdout);
    pid_t *kids = calloc((size_t)nprocs, sizeof *kids);
    if (kids == NULL)
        return 1;
    for (int p = 0; p < nprocs; p++) {
        kids[p] = fork();
        if (kids[p] == 0) {
            int r = soak_process(p);
            fflush(stdout);
            _exit(r);
        }
        if (kids[p] < 0) {
            perror("soak: fork");
            return 1;
        }
    }
    int bad = 0;
    for (int p = 0; p < nprocs; p++) {
        int st;
        if (waitpid(kids[p], &st, 0) != kids[p] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "soak: process %d failed (status 0x%x)\n", (int)kids[p], st);
            bad = 1;
        }
    }
    free(kids);
    printf("soak: %d processes x %d threads, %.0f s: %s\n", nprocs, nthreads, seconds, bad ? "FAILED" : "ok");
    return bad;
}
