/* ossl_peak.so — a measuring preload, not part of secretheap: installs
 * CRYPTO_set_mem_functions hooks over glibc malloc that track the live and
 * peak bytes OpenSSL asked for, and writes them at exit to $OSSL_PEAK_OUT
 * (default stderr) as one JSON line, {"openssl_peak_live_bytes":N,
 * "openssl_allocations":N}. Used by cmd/benchreport to compare secretheap's
 * committed memory with what OpenSSL needs. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *(*m_fn)(size_t, const char *, int);
typedef void *(*r_fn)(void *, size_t, const char *, int);
typedef void (*f_fn)(void *, const char *, int);

static atomic_long live, peak, count;
#define HDR 16 /* keeps 16-byte alignment; holds the requested size */

static void note(long d) {
    long v = atomic_fetch_add(&live, d) + d;
    long p = atomic_load(&peak);
    while (v > p && !atomic_compare_exchange_weak(&peak, &p, v))
        ;
}

static void *pm(size_t n, const char *f, int l) {
    (void)f, (void)l;
    if (n == 0)
        return NULL;
    char *p = malloc(n + HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&count, 1);
    note((long)n);
    return p + HDR;
}

static void pf(void *q, const char *f, int l) {
    (void)f, (void)l;
    if (q == NULL)
        return;
    char *p = (char *)q - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    note(-(long)n);
    free(p);
}

static void *pr(void *q, size_t n, const char *f, int l) {
    if (q == NULL)
        return pm(n, f, l);
    if (n == 0) {
        pf(q, f, l);
        return NULL;
    }
    void *r = pm(n, f, l);
    if (r == NULL)
        return NULL;
    size_t old;
    memcpy(&old, (char *)q - HDR, sizeof old);
    memcpy(r, q, old < n ? old : n);
    pf(q, f, l);
    return r;
}

__attribute__((constructor)) static void init(void) {
    int (*set)(m_fn, r_fn, f_fn);
    *(void **)&set = dlsym(RTLD_DEFAULT, "CRYPTO_set_mem_functions");
    if (set == NULL || !set(pm, pr, pf))
        fprintf(stderr, "ossl_peak: could not hook OpenSSL\n");
}

__attribute__((destructor)) static void fini(void) {
    const char *out = getenv("OSSL_PEAK_OUT");
    int fd = out != NULL ? open(out, O_WRONLY | O_CREAT | O_APPEND, 0644) : 2;
    if (fd < 0)
        return;
    dprintf(fd, "{\"openssl_peak_live_bytes\":%ld,\"openssl_allocations\":%ld}\n", atomic_load(&peak),
            atomic_load(&count));
    if (fd != 2)
        close(fd);
}
