/*
 * bench.c — glibc malloc vs secretheap_malloc, side by side in one run.
 *
 *   pair   malloc(n) + one store + free, n = 32, 256, 4096, 17000 B,
 *          with 1 and 2 threads (each thread its own loop; ns per pair)
 *   churn  4,096 live blocks of 16–2,048 B; each step frees a random one
 *          and allocates a new random size (ns per step)
 *
 * Each figure is the median of 7 runs after a warm-up, in thread CPU time
 * per operation; the ratio column is secretheap / glibc from the same run. Calls go through volatile function
 * pointers so the compiler cannot pair up and drop a malloc/free.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "secretheap.h"

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

struct impl {
    const char *name;
    malloc_fn volatile m;
    free_fn volatile f;
};

static struct impl impls[2] = {
    {"glibc", malloc, free},
    {"secretheap", secretheap_malloc, secretheap_free},
};

/* CPU time of the calling thread: the machine is shared (other jobs, a
 * nested VM), and CPU time per operation is far steadier than wall time
 * there, while still counting everything the allocator does, kernel
 * included. */
static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

struct pair_arg {
    struct impl *im;
    size_t n;
    long iters;
    double ns;
    pthread_barrier_t *bar;
};

static void *pair_loop(void *a) {
    struct pair_arg *pa = a;
    malloc_fn m = pa->im->m;
    free_fn f = pa->im->f;
    for (long i = 0; i < pa->iters / 10; i++) { /* warm-up */
        char *p = m(pa->n);
        p[0] = 1;
        f(p);
    }
    if (pa->bar)
        pthread_barrier_wait(pa->bar);
    double t0 = now_ns();
    for (long i = 0; i < pa->iters; i++) {
        char *p = m(pa->n);
        p[0] = (char)i;
        f(p);
    }
    pa->ns = (now_ns() - t0) / (double)pa->iters;
    return NULL;
}

static double pair(struct impl *im, size_t n, int threads, long iters) {
    struct pair_arg args[2];
    pthread_t t[2];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        args[i] = (struct pair_arg){im, n, iters, 0, threads > 1 ? &bar : NULL};
        pthread_create(&t[i], NULL, pair_loop, &args[i]);
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        sum += args[i].ns;
    }
    pthread_barrier_destroy(&bar);
    return sum / threads;
}

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define LIVE 4096

static double churn(struct impl *im, long steps) {
    static char *live[LIVE];
    uint64_t seed = 88172645463325252ULL;
    malloc_fn m = im->m;
    free_fn f = im->f;
    for (int i = 0; i < LIVE; i++) {
        live[i] = m(16 + rnd(&seed) % 2033);
        live[i][0] = 1;
    }
    for (long i = 0; i < steps / 4; i++) { /* warm-up */
        int k = (int)(rnd(&seed) % LIVE);
        f(live[k]);
        live[k] = m(16 + rnd(&seed) % 2033);
        live[k][0] = 1;
    }
    double t0 = now_ns();
    for (long i = 0; i < steps; i++) {
        int k = (int)(rnd(&seed) % LIVE);
        f(live[k]);
        live[k] = m(16 + rnd(&seed) % 2033);
        live[k][0] = (char)i;
    }
    double ns = (now_ns() - t0) / (double)steps;
    for (int i = 0; i < LIVE; i++)
        f(live[i]);
    return ns;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define RUNS 7

static double median(double *v) {
    qsort(v, RUNS, sizeof *v, cmp);
    return v[RUNS / 2];
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    static const size_t sizes[] = {32, 256, 4096, 17000};
    printf("secretheap %s C API vs glibc malloc (CPU ns per op, median of %d runs; ratio = secretheap/glibc)\n",
           secretheap_version(), RUNS);
    printf("%-28s %12s %12s %8s\n", "benchmark", "glibc ns", "secretheap", "ratio");
    for (int threads = 1; threads <= 2; threads++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            double v[2][RUNS];
            for (int r = 0; r < RUNS; r++)
                for (int i = 0; i < 2; i++)
                    v[i][r] = pair(&impls[i], sizes[s], threads, iters);
            double g = median(v[0]), h = median(v[1]);
            char name[64];
            snprintf(name, sizeof name, "pair %zu B, %d thread%s", sizes[s], threads, threads > 1 ? "s" : "");
            printf("%-28s %12.1f %12.1f %7.2fx\n", name, g, h, h / g);
        }
    }
    double v[2][RUNS];
    for (int r = 0; r < RUNS; r++)
        for (int i = 0; i < 2; i++)
            v[i][r] = churn(&impls[i], iters);
    double g = median(v[0]), h = median(v[1]);
    printf("%-28s %12.1f %12.1f %7.2fx\n", "churn 4096 live 16-2048 B", g, h, h / g);
    if (secretheap_check() != 0)
        return 1;
    return 0;
}
