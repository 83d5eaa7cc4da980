/*
 * test_threads.c — concurrency: threads allocate, fill, pass blocks to each
 * other through a locked queue, verify and free them (mimalloc's
 * test-stress pattern); frees after a thread's cache was destroyed; the
 * invariant checker after every phase.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

#define QCAP 1024
/* Sanitizer builds run fewer operations (TSan is ~10x slower per op). */
#ifndef STRESS_OPS
#define STRESS_OPS 20000
#endif

struct item {
    unsigned char *p;
    size_t n;
    unsigned char tag;
};

static struct {
    pthread_mutex_t mu;
    struct item q[QCAP];
    int len;
} queue = {PTHREAD_MUTEX_INITIALIZER, {{0, 0, 0}}, 0};

static _Atomic int errors;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = rnd(s) % 100;
    if (r < 60)
        return 1 + rnd(s) % 256;
    if (r < 90)
        return 1 + rnd(s) % 4096;
    if (r < 99)
        return 1 + rnd(s) % 40000;
    return 1 + rnd(s) % 300000;
}

/* Every byte equals the tag: first byte, and each byte equals the next
 * (memcmp of the block against itself shifted by one; sanitizers check the
 * ranges of intercepted memcmp/memset in one step, not byte by byte). */
static int verify(const struct item *it) { return it->p[0] == it->tag && memcmp(it->p, it->p + 1, it->n - 1) == 0; }

static int is_zero(const unsigned char *p, size_t n) { return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0; }

static void *stress(void *arg) {
    uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    struct item local[64];
    int nlocal = 0;
    for (int op = 0; op < STRESS_OPS; op++) {
        struct item it;
        it.n = pick_size(&seed);
        it.p = secretheap_malloc(it.n);
        if (!it.p) {
            atomic_fetch_add(&errors, 1);
            continue;
        }
        if (!is_zero(it.p, it.n))
            atomic_fetch_add(&errors, 1);
        it.tag = (unsigned char)(rnd(&seed) | 1);
        memset(it.p, it.tag, it.n);
        if (rnd(&seed) & 1) {
            /* Pass it to whichever thread dequeues next. */
            pthread_mutex_lock(&queue.mu);
            if (queue.len < QCAP) {
                queue.q[queue.len++] = it;
                it.p = NULL;
            }
            pthread_mutex_unlock(&queue.mu);
        }
        if (it.p) {
            if (nlocal == 64) {
                int k = (int)(rnd(&seed) % 64);
                if (!verify(&local[k]))
                    atomic_fetch_add(&errors, 1);
                secretheap_free(local[k].p);
                local[k] = it;
            } else {
                local[nlocal++] = it;
            }
        }
        /* Free a block some other thread allocated. */
        struct item got = {NULL, 0, 0};
        pthread_mutex_lock(&queue.mu);
        if (queue.len > 0 && (rnd(&seed) % 3))
            got = queue.q[--queue.len];
        pthread_mutex_unlock(&queue.mu);
        if (got.p) {
            if (!verify(&got))
                atomic_fetch_add(&errors, 1);
            if (rnd(&seed) & 1) {
                got.p = secretheap_realloc(got.p, got.n + 10);
                got.n += 10;
                memset(got.p, got.tag, got.n);
            }
            secretheap_free(got.p);
        }
    }
    for (int i = 0; i < nlocal; i++) {
        if (!verify(&local[i]))
            atomic_fetch_add(&errors, 1);
        secretheap_free(local[i].p);
    }
    return NULL;
}

static void drain_queue(void) {
    pthread_mutex_lock(&queue.mu);
    while (queue.len > 0) {
        struct item it = queue.q[--queue.len];
        if (!verify(&it))
            atomic_fetch_add(&errors, 1);
        secretheap_free(it.p);
    }
    pthread_mutex_unlock(&queue.mu);
}

static void run_threads(int n) {
    pthread_t t[8];
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, stress, (void *)(uintptr_t)(i + 1 + n * 10));
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    drain_queue();
}

static void test_two_threads(void) {
    struct secretheap_stats before, after;
    secretheap_stats(&before, sizeof before);
    run_threads(2);
    CHECK(atomic_load(&errors) == 0);
    CHECK(secretheap_check() == 0);
    secretheap_stats(&after, sizeof after);
    CHECK_MSG(after.live_blocks == before.live_blocks, "live %llu → %llu", (unsigned long long)before.live_blocks,
              (unsigned long long)after.live_blocks);
}

static void test_four_threads(void) {
    run_threads(4);
    CHECK(atomic_load(&errors) == 0);
    CHECK(secretheap_check() == 0);
}

/* A pthread key created after the allocator's: glibc runs destructors in
 * key order, so this one runs after the thread's cache was destroyed. */
static pthread_key_t late_key;
static void *late_ptr;
static _Atomic int late_ok;

static void late_destructor(void *arg) {
    char *p = arg;
    /* The cache is gone: free and malloc still work (central path). */
    int ok = sh_tls_cache == (struct sh_tcache *)1;
    secretheap_free(p);
    char *q = secretheap_malloc(64);
    ok = ok && q != NULL && q[0] == 0;
    q[0] = 1;
    late_ptr = q; /* freed by the main thread */
    atomic_store(&late_ok, ok ? 1 : 2);
}

static void *late_thread(void *arg) {
    (void)arg;
    char *p = secretheap_malloc(64);
    p[0] = 1;
    pthread_setspecific(late_key, p);
    return NULL;
}

static void test_free_after_thread_cache_destroyed(void) {
    void *warm = secretheap_malloc(1); /* the allocator's key exists before ours */
    secretheap_free(warm);
    pthread_key_create(&late_key, late_destructor);
    pthread_t t;
    pthread_create(&t, NULL, late_thread, NULL);
    pthread_join(t, NULL);
    CHECK(atomic_load(&late_ok) == 1);
    CHECK(secretheap_backend(late_ptr) == SECRETHEAP_BACKEND_SECRET);
    secretheap_free(late_ptr);
    CHECK(secretheap_check() == 0);
}

/* Blocks allocated in one thread and freed in another after the first exited. */
static void *alloc_many(void *arg) {
    void **out = arg;
    for (int i = 0; i < 1000; i++) {
        out[i] = secretheap_malloc((size_t)(i % 300) + 1);
        memset(out[i], 0x77, (size_t)(i % 300) + 1);
    }
    return NULL;
}

static void test_free_after_owner_exit(void) {
    static void *blocks[1000];
    pthread_t t;
    pthread_create(&t, NULL, alloc_many, blocks);
    pthread_join(t, NULL);
    CHECK(secretheap_check() == 0);
    for (int i = 0; i < 1000; i++)
        secretheap_free(blocks[i]);
    CHECK(secretheap_check() == 0);
}

/* Two threads' blocks of one class never have their req slots (written on
 * every malloc/free) in the same cache line: each refill takes from the
 * thread's own slab. Both threads are alive while the second refills. */
static pthread_barrier_t bar1, bar2;
#define BATCH 16 /* one refill of class 32 B (half a 32-block magazine) */
static uintptr_t req_line(void *p) {
    struct sh_chunk *c = sh_chunk_of((uintptr_t)p);
    struct sh_span *s = atomic_load(&c->pagemap[((uintptr_t)p - c->base) >> SH_OS_PAGE_SHIFT]);
    uint32_t idx = sh_block_index(s, (uintptr_t)p - s->start);
    return (uintptr_t)&s->req[idx] / 64;
}

/* out[i]: the cache line of block i's req slot, taken while it is live. */
static void *first_thread(void *arg) {
    uintptr_t *out = arg;
    void *p[BATCH];
    for (int i = 0; i < BATCH; i++) {
        p[i] = secretheap_malloc(32);
        out[i] = req_line(p[i]);
    }
    pthread_barrier_wait(&bar1);
    pthread_barrier_wait(&bar2);
    for (int i = 0; i < BATCH; i++)
        secretheap_free(p[i]);
    return NULL;
}
static void *second_thread(void *arg) {
    uintptr_t *out = arg;
    void *p[BATCH];
    pthread_barrier_wait(&bar1);
    for (int i = 0; i < BATCH; i++) {
        p[i] = secretheap_malloc(32);
        out[i] = req_line(p[i]);
    }
    pthread_barrier_wait(&bar2);
    for (int i = 0; i < BATCH; i++)
        secretheap_free(p[i]);
    return NULL;
}

/* Runs fa(a) and fb(b) on two threads and waits for both. */
static void run_pair(void *(*fa)(void *), void *a, void *(*fb)(void *), void *b) {
    pthread_t ta, tb;
    pthread_create(&ta, NULL, fa, a);
    pthread_create(&tb, NULL, fb, b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
}

static void test_no_false_sharing_of_req_slots(void) {
    for (int round = 0; round < 3; round++) {
        uintptr_t a[BATCH] = {0}, b[BATCH] = {0};
        pthread_barrier_init(&bar1, NULL, 2);
        pthread_barrier_init(&bar2, NULL, 2);
        run_pair(first_thread, a, second_thread, b);
        pthread_barrier_destroy(&bar1);
        pthread_barrier_destroy(&bar2);
        int shared = 0;
        for (int i = 0; i < BATCH; i++)
            for (int j = 0; j < BATCH; j++)
                shared += a[i] == b[j];
        CHECK_MSG(shared == 0, "round %d: %d pairs of blocks of two threads share a req cache line", round, shared);
    }
    CHECK(secretheap_check() == 0);
}

/*
 * A refill takes the thread's own partial slabs before carving a new one,
 * however many partial slabs of other threads the class has: thread A
 * frees half of its blocks, then thread B does the same in as many slabs
 * of the same class, then A allocates fewer blocks than it freed — and
 * the class carves no slab. (With one list per class, scanned for an own
 * slab among its first 8, B's slabs at the head made A carve: two churn
 * threads committed 1.7-2.0x their live bytes.)
 */
#define OWN_N 320 /* 2048-B blocks: 80 slabs of 4 */
static pthread_barrier_t own_bar;
static _Atomic int own_carved = -1;
static uint64_t class_slabs(size_t size) {
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        if (st.classes[i].size == size)
            return st.classes[i].slabs;
    return 0;
}
static void own_half(void **p) {
    for (int i = 0; i < OWN_N; i++)
        p[i] = secretheap_malloc(2048);
    for (int i = 1; i < OWN_N; i += 2) {
        secretheap_free(p[i]);
        p[i] = NULL;
    }
}
static void *own_a(void *arg) {
    (void)arg;
    void *p[OWN_N], *q[OWN_N / 4];
    own_half(p);
    pthread_barrier_wait(&own_bar); /* B frees half of its blocks now */
    pthread_barrier_wait(&own_bar);
    uint64_t before = class_slabs(2048);
    for (int i = 0; i < OWN_N / 4; i++)
        q[i] = secretheap_malloc(2048);
    atomic_store(&own_carved, (int)(class_slabs(2048) - before));
    pthread_barrier_wait(&own_bar);
    for (int i = 0; i < OWN_N / 4; i++)
        secretheap_free(q[i]);
    for (int i = 0; i < OWN_N; i++)
        secretheap_free(p[i]);
    return NULL;
}
static void *own_b(void *arg) {
    (void)arg;
    void *p[OWN_N];
    pthread_barrier_wait(&own_bar);
    own_half(p);
    pthread_barrier_wait(&own_bar);
    pthread_barrier_wait(&own_bar); /* A has allocated: B's slabs may go */
    for (int i = 0; i < OWN_N; i++)
        secretheap_free(p[i]);
    return NULL;
}
static void test_refill_prefers_own_slabs(void) {
    pthread_barrier_init(&own_bar, NULL, 2);
    run_pair(own_a, NULL, own_b, NULL);
    pthread_barrier_destroy(&own_bar);
    CHECK_MSG(atomic_load(&own_carved) == 0, "thread A carved %d new slabs while its own held %d free blocks",
              atomic_load(&own_carved), OWN_N / 2);
    CHECK(secretheap_check() == 0);
}

/*
 * After every thread that allocated has exited (their magazines flushed at
 * exit) and nothing is live, the heap keeps at most the idle chunks
 * (SECRETHEAP_IDLE_CHUNKS, default 2) plus what one empty slab per class
 * needs — not empty slabs of 40 classes scattered over as many chunks.
 * Runs in a fresh process; the main thread allocates nothing (its
 * magazine would legitimately pin slabs).
 */
static void *drain_thread(void *arg) {
    (void)arg;
    drain_queue();
    return NULL;
}
static int mode_exit_trim(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, stress, (void *)(uintptr_t)(i + 101));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_create(&t[0], NULL, drain_thread, NULL);
    pthread_join(t[0], NULL);
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    uint64_t slab_bytes = 0, max_per_class = 0;
    for (int i = 0; i < SH_NUM_CLASSES; i++) {
        slab_bytes += st.classes[i].slabs * sh_class_slab_pages[i] * SH_OS_PAGE;
        if (st.classes[i].slabs > max_per_class)
            max_per_class = st.classes[i].slabs;
    }
    uint64_t bound = (uint64_t)sh_opt.idle_chunks + (slab_bytes + SH_CHUNK_MAX - 1) / SH_CHUNK_MAX;
    printf("chunks=%llu bound=%llu max_per_class=%llu live=%llu committed=%llu errors=%d\n",
           (unsigned long long)st.chunks_mapped, (unsigned long long)bound, (unsigned long long)max_per_class,
           (unsigned long long)st.live_blocks, (unsigned long long)st.committed_bytes, atomic_load(&errors));
    if (atomic_load(&errors) || st.live_blocks || secretheap_check())
        return 1;
    if (max_per_class > 1)
        return 2;
    if (st.chunks_mapped > bound || st.committed_bytes > bound * SH_CHUNK_MAX)
        return 3;
    return 0;
}

static void test_empty_slabs_do_not_pin_chunks(void) {
    struct h_child ch;
    h_reexec("exit_trim", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    const char *env[] = {"SECRETHEAP_IDLE_CHUNKS=0", NULL};
    h_reexec("exit_trim", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "IDLE_CHUNKS=0: exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static const struct h_mode modes[] = {
    {"exit_trim", mode_exit_trim},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_two_threads);
    RUN(test_four_threads);
    RUN(test_free_after_thread_cache_destroyed);
    RUN(test_free_after_owner_exit);
    RUN(test_no_false_sharing_of_req_slots);
    RUN(test_refill_prefers_own_slabs);
    RUN(test_empty_slabs_do_not_pin_chunks);
    return h_done();
}
