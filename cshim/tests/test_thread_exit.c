/*
 * test_thread_exit.c — a thread's exit costs in proportion to its own cache,
 * not to the heap. Before (458779e), the exit destructor walked every span
 * of the heap holding every lock: 10.1 ms with 512 MiB live in 64-byte
 * blocks against 24.8 us with 1 MiB (408x; 1011x on a quieter run). Measured
 * as a ratio in one run: the fastest exit of short-lived threads with 1 MiB
 * live and with 512 MiB live, the states interleaved (1 MiB, 512, 1, 512, 1),
 * each keeping its fastest of all rounds, which a busy machine disturbs
 * least, and divided by the same ratio for a bare thread (one that never
 * calls the allocator), measured in the same moments: what the kernel and
 * the C library add with the heap is not the library's. Sanitizer builds
 * use 64 MiB (ASan's and TSan's shadow memory). Measured here: 1.00x-1.30x
 * raw; 1.06x-1.42x raw before the trim walk stopped at a chunk's first span
 * in use.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "internal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BIG_MIB 64
#define BOUND                                                                                                          \
    5.0 /* timing under the runtimes is not the claim: plain builds measure it (TSan 1.01x, ASan 1.09x here) */
#else
#define BIG_MIB 512
#define BOUND 1.5 /* the library's share measured 0.67x-1.01x; 458779e: 410x */
#endif
#define ROUNDS 2

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Fills magazines of a few classes and owns slabs, then returns: what is
 * timed is its exit (the cache destructor) and the join. */
static void *short_thread(void *arg) {
    void *p[64];
    for (int i = 0; i < 64; i++)
        p[i] = secretheap_malloc((size_t)(16 + i * 24 % 2000));
    for (int i = 0; i < 64; i++)
        secretheap_free(p[i]);
    *(uint64_t *)arg = now_ns();
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A thread that never calls the allocator: what the C library and the
 * kernel cost to end a thread, in the same state of the process. */
static void *bare_thread(void *arg) {
    *(uint64_t *)arg = now_ns();
    return NULL;
}

/* The fastest of 21 exits of fn's threads, a bare thread's exit between
 * each (so that both see the same moments of a busy machine). */
static void exit_costs(uint64_t *with_cache, uint64_t *bare) {
    enum { N = 21 };
    uint64_t v[N], b[N];
    for (int r = 0; r < N; r++) {
        pthread_t t;
        uint64_t t0 = 0;
        pthread_create(&t, NULL, short_thread, &t0);
        pthread_join(t, NULL);
        v[r] = now_ns() - t0;
        pthread_create(&t, NULL, bare_thread, &t0);
        pthread_join(t, NULL);
        b[r] = now_ns() - t0;
    }
    qsort(v, N, sizeof v[0], cmp_u64);
    qsort(b, N, sizeof b[0], cmp_u64);
    if (v[0] < *with_cache)
        *with_cache = v[0];
    if (b[0] < *bare)
        *bare = b[0];
}

/*
 * The heap goes from 1 MiB to BIG_MIB and back ROUNDS times, the exits
 * measured in each state; each state keeps the fastest of all its rounds,
 * so a busy stretch of the machine has to last through every round of one
 * state and none of the other to fail the bound. What a thread exit costs
 * the C library and the kernel (a bare thread) is printed beside it: with
 * secret memory committed it grows by itself (fewer direct-map huge pages).
 */
static void test_thread_exit_independent_of_heap_size(void) {
    size_t per_mib = (1u << 20) / 64, n = (size_t)BIG_MIB * per_mib;
    void **blk = malloc(n * sizeof *blk);
    CHECK(blk != NULL);
    if (!blk)
        return;
    for (size_t i = 0; i < per_mib; i++)
        blk[i] = secretheap_malloc(64);
    uint64_t small = UINT64_MAX, big = UINT64_MAX, small_bare = UINT64_MAX, big_bare = UINT64_MAX;
    for (int round = 0; round < ROUNDS; round++) {
        exit_costs(&small, &small_bare);
        for (size_t i = per_mib; i < n; i++)
            blk[i] = secretheap_malloc(64);
        exit_costs(&big, &big_bare);
        for (size_t i = per_mib; i < n; i++)
            secretheap_free(blk[i]);
    }
    exit_costs(&small, &small_bare);
    /* The library's share: the exit's ratio over the bare thread's ratio
     * between the two states, so that the kernel's own shift (a bare exit
     * moved 9.5 -> 11.8 us with 512 MiB of secret memory committed on a
     * busy run) does not count against it. */
    double ratio = (double)big / (double)small;
    double lib = ratio / ((double)big_bare / (double)small_bare);
    fprintf(stderr,
            "    thread exit: %.1f us with 1 MiB live, %.1f us with %d MiB live (%.2fx); "
            "a bare thread's exit %.1f us and %.1f us; the library's share %.2fx\n",
            small / 1e3, big / 1e3, BIG_MIB, ratio, small_bare / 1e3, big_bare / 1e3, lib);
    CHECK_MSG(lib < BOUND,
              "a thread exit with %d MiB live cost %.2fx the exit with 1 MiB live (%.2fx beyond a bare thread's)",
              BIG_MIB, ratio, lib);
    for (size_t i = 0; i < per_mib; i++)
        secretheap_free(blk[i]);
    free(blk);
    CHECK(secretheap_check() == 0);
}

/* A thread's full slabs still name it as owner after it exits; a block
 * freed into one later (by another thread) must list the slab as nobody's,
 * and a new thread that reuses the exited thread's cache must find a
 * consistent heap. */
static void *fill_slab(void *arg) {
    void **out = arg;
    for (int i = 0; i < 256; i++)
        out[i] = secretheap_malloc(48);
    return NULL;
}

static void *churn_a_little(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++)
        secretheap_free(secretheap_malloc((size_t)(i % 700) + 1));
    return NULL;
}

static void test_full_slabs_of_an_exited_thread(void) {
    void *b[256];
    pthread_t t;
    pthread_create(&t, NULL, fill_slab, b);
    pthread_join(t, NULL);
    CHECK(secretheap_check() == 0);
    for (int i = 0; i < 256; i += 2)
        secretheap_free(b[i]);
    CHECK(secretheap_check() == 0);
    pthread_create(&t, NULL, churn_a_little, NULL); /* reuses the pooled cache */
    pthread_join(t, NULL);
    for (int i = 1; i < 256; i += 2)
        secretheap_free(b[i]);
    CHECK(secretheap_check() == 0);
}

int main(void) {
    RUN(test_full_slabs_of_an_exited_thread);
    RUN(test_thread_exit_independent_of_heap_size);
    return h_done();
}
