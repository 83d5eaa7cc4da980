/*
 * allocbench — alloc/free micro-benchmarks of every secret-memory allocator a
 * C program can choose from, one backend per process, driven by
 * cmd/benchreport (which interleaves backends round by round and takes
 * medians; this program only measures and prints JSON lines on stdout).
 *
 * Usage:
 *   allocbench check   BACKEND [--sabotage]         self-check only
 *   allocbench time    BACKEND [-m MS] [-t 1,2]     workloads pair32 pair256
 *                                                   pair4096 pair17000 churn
 *   allocbench locked  BACKEND N                    VmLck per 32-byte secret
 *                                                   (all of VmLck ÷ N: a plain process
 *                                                   locks nothing, so fixed costs such
 *                                                   as a library constructor's chunk
 *                                                   or the secure heap's arena count)
 *   allocbench frames  BACKEND N SIZE               N live blocks of SIZE bytes: secret
 *                                                   OS pages committed and the 2 MiB
 *                                                   physical frames they occupy (root:
 *                                                   /proc/self/pagemap), ideal pages/512
 *   allocbench first   BACKEND                      setup + first allocation
 *   allocbench faultin                              a chunk's first fault-in
 *   allocbench fork    BACKEND MIB REPS             fork → child ready, parent blocked,
 *                                                   and committing MIB of fresh secret pages
 *   allocbench forktear BACKEND N                   N children forked while a thread
 *                                                   rewrites a 4 KiB secret: copies that
 *                                                   match no single instant of the parent
 *
 * Backends:
 *   glibc        malloc/free
 *   openssl      OPENSSL_malloc/OPENSSL_free, OpenSSL's default allocator
 *   secure       CRYPTO_secure_malloc/free after CRYPTO_secure_malloc_init(32 MiB, 16)
 *   sodium       sodium_malloc/sodium_free
 *   memfd        one memfd_secret file per allocation (the naive way)
 *   secretheap   secretheap_malloc/free (needs LD_PRELOAD=libsecretheap.so)
 *   preload      OPENSSL_malloc/OPENSSL_free hooked by libsecretheap.so
 *
 * The library is reached through dlsym(RTLD_DEFAULT) rather than linked, so
 * that the processes measuring OpenSSL's own allocator do not carry its hooks.
 *
 * Every backend checks, before it is timed, that it does what it claims
 * (OpenSSL's secure heap really initialised and serving the block, the block
 * really in a secretmem mapping, sodium's page really locked, ...). A failed
 * check prints the reason on stderr and exits with status 3; --sabotage
 * removes the step that makes each claim true, so tests can see the check fail.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sodium.h>

#include "secretheap.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

#define OS_PAGE 4096u

/* ---- small helpers ---------------------------------------------------- */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* thread_cpu_ns: CPU time of the calling thread, kernel time included. On a
 * shared machine it leaves out the time other processes had the CPU, which
 * wall time cannot; wall time keeps what CPU time leaves out (waiting for a
 * lock another thread holds). Both are reported. */
static uint64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("allocbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static char check_reason[512];

/* check_fail records why a self-check failed; the caller returns -1. */
__attribute__((format(printf, 1, 2))) static int check_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(check_reason, sizeof check_reason, fmt, ap);
    va_end(ap);
    return -1;
}

/* vmlck_kb returns VmLck from /proc/self/status in KiB (-1 if unreadable). */
static long vmlck_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmLck:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* mapping_name copies the /proc/self/maps path column of the mapping holding
 * p into out ("" for anonymous); returns -1 if no mapping holds p. */
static int mapping_name(const void *p, char *out, size_t outlen) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return -1;
    char line[1024];
    int found = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        int off = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s%n", &lo, &hi, &off) < 2)
            continue;
        if (a < lo || a >= hi)
            continue;
        const char *name = line + off;
        while (*name == ' ')
            name++;
        size_t n = strcspn(name, "\n");
        if (n >= outlen)
            n = outlen - 1;
        memcpy(out, name, n);
        out[n] = 0;
        found = 0;
        break;
    }
    fclose(f);
    return found;
}

static int in_secretmem(const void *p) {
    char name[512];
    if (mapping_name(p, name, sizeof name) != 0)
        return 0;
    return strstr(name, "secretmem") != NULL;
}

/* ---- the library, found at run time ----------------------------------- */

static void *(*sh_malloc)(size_t);
static void (*sh_free)(void *);
static int (*sh_backend)(const void *);
static int (*sh_stats)(struct secretheap_stats *, size_t);

static int find_library(void) {
    sh_malloc = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "secretheap_malloc");
    sh_free = (void (*)(void *))dlsym(RTLD_DEFAULT, "secretheap_free");
    sh_backend = (int (*)(const void *))dlsym(RTLD_DEFAULT, "secretheap_backend");
    sh_stats = (int (*)(struct secretheap_stats *, size_t))dlsym(RTLD_DEFAULT, "secretheap_stats");
    return sh_malloc && sh_free && sh_backend && sh_stats ? 0 : -1;
}

/* ---- backends --------------------------------------------------------- */

struct backend {
    const char *name;
    int (*setup)(int sabotage); /* -1 with check_reason set on failure */
    void *(*alloc)(size_t n);
    void (*release)(void *p, size_t n);
    int (*check)(void); /* the claim, verified on a live 32-byte block */
};

static int setup_none(int sabotage) {
    (void)sabotage;
    return 0;
}

/* glibc */
static void *glibc_alloc(size_t n) { return malloc(n); }
static void glibc_free(void *p, size_t n) {
    (void)n;
    free(p);
}
static int glibc_check(void) {
    /* The claim: malloc is glibc's own, not an interposer's. */
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL)
        return check_fail("glibc: cannot locate malloc");
    if (strstr(info.dli_fname, "libc.so") == NULL)
        return check_fail("glibc: malloc comes from %s, not libc", info.dli_fname);
    void *p = malloc(32);
    if (p == NULL)
        return check_fail("glibc: malloc(32) failed");
    if (malloc_usable_size(p) < 32)
        return check_fail("glibc: usable size < 32");
    if (in_secretmem(p))
        return check_fail("glibc: block is in secretmem?");
    free(p);
    return 0;
}

/* OpenSSL default allocator */
static void *ossl_alloc(size_t n) { return OPENSSL_malloc(n); }
static void ossl_free(void *p, size_t n) {
    (void)n;
    OPENSSL_free(p);
}

static void *sabotage_malloc(size_t n, const char *f, int l) {
    (void)f, (void)l;
    return malloc(n);
}
static void *sabotage_realloc(void *p, size_t n, const char *f, int l) {
    (void)f, (void)l;
    return realloc(p, n);
}
static void sabotage_free(void *p, const char *f, int l) {
    (void)f, (void)l;
    free(p);
}

static int ossl_setup(int sabotage) {
    /* Sabotage: somebody else's hook, as a preloaded library would install. */
    if (sabotage)
        CRYPTO_set_mem_functions(sabotage_malloc, sabotage_realloc, sabotage_free);
    return 0;
}
static int ossl_check(void) {
    CRYPTO_malloc_fn m;
    CRYPTO_realloc_fn r;
    CRYPTO_free_fn f;
    CRYPTO_get_mem_functions(&m, &r, &f);
    if (m != CRYPTO_malloc || f != CRYPTO_free)
        return check_fail("openssl: OpenSSL's allocator is hooked (not the default)");
    if (dlsym(RTLD_DEFAULT, "secretheap_backend") != NULL)
        return check_fail("openssl: libsecretheap is loaded in this process");
    void *p = OPENSSL_malloc(32);
    if (p == NULL)
        return check_fail("openssl: OPENSSL_malloc(32) failed");
    if (malloc_usable_size(p) < 32)
        return check_fail("openssl: block is not from libc malloc");
    OPENSSL_free(p);
    return 0;
}

/* OpenSSL secure heap */
static void *secure_alloc(size_t n) { return OPENSSL_secure_malloc(n); }
static void secure_free(void *p, size_t n) {
    (void)n;
    OPENSSL_secure_free(p);
}
static int secure_setup(int sabotage) {
    if (sabotage)
        return 0; /* not initialised: CRYPTO_secure_malloc falls back to malloc */
    if (CRYPTO_secure_malloc_init(32u << 20, 16) != 1)
        return check_fail("secure: CRYPTO_secure_malloc_init(32 MiB, 16) failed");
    return 0;
}
static int secure_check(void) {
    if (!CRYPTO_secure_malloc_initialized())
        return check_fail("secure: OpenSSL secure heap not initialised");
    void *p = OPENSSL_secure_malloc(32);
    if (p == NULL)
        return check_fail("secure: CRYPTO_secure_malloc(32) failed");
    int ok = CRYPTO_secure_allocated(p);
    OPENSSL_secure_free(p);
    if (!ok)
        return check_fail("secure: block is not inside the secure heap");
    return 0;
}

/* libsodium */
static void *sodium_alloc(size_t n) { return sodium_malloc(n); }
static void sodium_release(void *p, size_t n) {
    (void)n;
    sodium_free(p);
}

/* drop_memlock removes CAP_IPC_LOCK and sets RLIMIT_MEMLOCK to 0, as in an
 * unprivileged container: mlock then fails. */
static void drop_memlock(void) {
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        die("capget: %s", strerror(errno));
    d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
    if (syscall(SYS_capset, &h, d) != 0)
        die("capset: %s", strerror(errno));
    struct rlimit rl = {0, 0};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
        die("setrlimit: %s", strerror(errno));
}

static int sodium_setup(int sabotage) {
    if (sodium_init() < 0)
        return check_fail("sodium: sodium_init failed");
    if (sabotage)
        drop_memlock();
    return 0;
}
static int sodium_check(void) {
    /* sodium_malloc ignores a failing mlock: check the page really got locked. */
    long before = vmlck_kb();
    void *p = sodium_malloc(32);
    long after = vmlck_kb();
    if (p == NULL)
        return check_fail("sodium: sodium_malloc(32) failed");
    sodium_free(p);
    if (before < 0 || after - before < (long)(OS_PAGE / 1024))
        return check_fail("sodium: sodium_malloc(32) did not lock a page (VmLck %ld -> %ld kB)", before, after);
    return 0;
}

/* naive memfd_secret per allocation */
static int memfd_sabotage;

static void *memfd_alloc(size_t n) {
    size_t len = (n + OS_PAGE - 1) & ~(size_t)(OS_PAGE - 1);
    int fd = memfd_sabotage ? (int)syscall(SYS_memfd_create, "notsecret", MFD_CLOEXEC)
                            : (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (ftruncate(fd, (off_t)len) != 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return NULL;
    for (size_t off = 0; off < len; off += OS_PAGE)
        ((volatile char *)p)[off] = 0; /* commit */
    return p;
}
static void memfd_release(void *p, size_t n) {
    size_t len = (n + OS_PAGE - 1) & ~(size_t)(OS_PAGE - 1);
    munmap(p, len);
}
static int memfd_setup(int sabotage) {
    memfd_sabotage = sabotage;
    return 0;
}
static int memfd_check(void) {
    void *p = memfd_alloc(32);
    if (p == NULL)
        return check_fail("memfd: memfd_secret mapping failed: %s", strerror(errno));
    int ok = in_secretmem(p);
    memfd_release(p, 32);
    if (!ok)
        return check_fail("memfd: block is not in a secretmem mapping");
    return 0;
}

/* the library through its C API */
static void *sh_alloc(size_t n) { return sh_malloc(n); }
static void sh_release(void *p, size_t n) {
    (void)n;
    sh_free(p);
}
static int sh_setup(int sabotage) {
    (void)sabotage; /* sabotage from outside: no LD_PRELOAD, or SECRETHEAP_BACKEND=locked */
    if (find_library() != 0)
        return check_fail("secretheap: libsecretheap.so is not loaded (run with LD_PRELOAD)");
    return 0;
}
static int sh_check(void) {
    void *p = sh_malloc(32);
    if (p == NULL)
        return check_fail("secretheap: secretheap_malloc(32) failed");
    int b = sh_backend(p);
    int sm = in_secretmem(p);
    sh_free(p);
    if (b != SECRETHEAP_BACKEND_SECRET)
        return check_fail("secretheap: secretheap_backend = %d, want %d (secret)", b, SECRETHEAP_BACKEND_SECRET);
    if (!sm)
        return check_fail("secretheap: block is not in a secretmem mapping");
    return 0;
}

/* OPENSSL_malloc under LD_PRELOAD=libsecretheap.so */
static int preload_check(void) {
    void *p = OPENSSL_malloc(32);
    if (p == NULL)
        return check_fail("preload: OPENSSL_malloc(32) failed");
    int b = sh_backend(p);
    int sm = in_secretmem(p);
    OPENSSL_free(p);
    if (b != SECRETHEAP_BACKEND_SECRET)
        return check_fail("preload: OPENSSL_malloc block not served by secretheap "
                          "(secretheap_backend = %d): OpenSSL hook inactive",
                          b);
    if (!sm)
        return check_fail("preload: block is not in a secretmem mapping");
    return 0;
}

static const struct backend backends[] = {
    {"glibc", setup_none, glibc_alloc, glibc_free, glibc_check},
    {"openssl", ossl_setup, ossl_alloc, ossl_free, ossl_check},
    {"secure", secure_setup, secure_alloc, secure_free, secure_check},
    {"sodium", sodium_setup, sodium_alloc, sodium_release, sodium_check},
    {"memfd", memfd_setup, memfd_alloc, memfd_release, memfd_check},
    {"secretheap", sh_setup, sh_alloc, sh_release, sh_check},
    {"preload", sh_setup, ossl_alloc, ossl_free, preload_check},
};

static const struct backend *find_backend(const char *name) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, name) == 0)
            return &backends[i];
    die("unknown backend %s", name);
    return NULL;
}

/* setup_and_check prepares the backend and aborts the run if it does not do
 * what it claims. */
static void setup_and_check(const struct backend *b, int sabotage) {
    if (b->setup(sabotage) != 0 || b->check() != 0) {
        fprintf(stderr, "allocbench: self-check failed: %s\n", check_reason);
        exit(3);
    }
}

/* ---- timed workloads -------------------------------------------------- */

/* Called through these (not directly) so the compiler cannot pair up and
 * drop a malloc/free; every backend pays the same indirect call. */
static void *(*volatile alloc_fn)(size_t);
static void (*volatile free_fn)(void *, size_t);

#define CHURN_LIVE 4096

struct worker {
    pthread_t tid;
    size_t size; /* 0: churn */
    uint64_t budget_ns;
    pthread_barrier_t *bar;
    uint64_t ops, start, end, cpu;
    uint64_t rng;
    void *slot[CHURN_LIVE];
    size_t slot_size[CHURN_LIVE];
};

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static size_t churn_size(uint64_t *rng) { return 16 + (size_t)(xorshift(rng) % (2048 - 16 + 1)); }

static void *xalloc(size_t n) {
    void *p = alloc_fn(n);
    if (p == NULL)
        die("allocation of %zu bytes failed", n);
    ((volatile char *)p)[0] = 1;
    return p;
}

static void run_ops(struct worker *w, uint64_t n) {
    if (w->size != 0) {
        for (uint64_t i = 0; i < n; i++)
            free_fn(xalloc(w->size), w->size);
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        size_t k = (size_t)(xorshift(&w->rng) % CHURN_LIVE);
        free_fn(w->slot[k], w->slot_size[k]);
        w->slot_size[k] = churn_size(&w->rng);
        w->slot[k] = xalloc(w->slot_size[k]);
    }
}

/* timed_loop runs batches until the budget is spent; a batch grows until it
 * lasts ≥ 50 µs so that reading the clock costs < 0.1%. */
static uint64_t timed_loop(struct worker *w, uint64_t budget) {
    uint64_t ops = 0, batch = 1, t0 = now_ns(), t = t0;
    while (t - t0 < budget) {
        uint64_t b0 = t;
        run_ops(w, batch);
        ops += batch;
        t = now_ns();
        if (t - b0 < 50000 && batch < (1u << 20))
            batch *= 2;
    }
    return ops;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    if (w->size == 0)
        for (int k = 0; k < CHURN_LIVE; k++) {
            w->slot_size[k] = churn_size(&w->rng);
            w->slot[k] = xalloc(w->slot_size[k]);
        }
    /* Warm-up, not counted: per-thread caches filled, slabs committed. */
    timed_loop(w, w->budget_ns / 5 > 30000000u ? w->budget_ns / 5 : 30000000u);
    pthread_barrier_wait(w->bar);
    uint64_t c0 = thread_cpu_ns();
    w->start = now_ns();
    w->ops = timed_loop(w, w->budget_ns);
    w->end = now_ns();
    w->cpu = thread_cpu_ns() - c0;
    pthread_barrier_wait(w->bar); /* timing done: main reads the stats */
    pthread_barrier_wait(w->bar); /* stats read: blocks may go */
    if (w->size == 0)
        for (int k = 0; k < CHURN_LIVE; k++)
            free_fn(w->slot[k], w->slot_size[k]);
    return NULL;
}

static void print_stats(const char *backend, const char *workload, int threads) {
    struct secretheap_stats st;
    if (sh_stats == NULL || sh_stats(&st, sizeof st) != 0)
        return;
    printf("{\"kind\":\"stats\",\"backend\":\"%s\",\"workload\":\"%s\",\"threads\":%d,"
           "\"bytes_mapped\":%" PRIu64 ",\"committed_bytes\":%" PRIu64 ",\"requested_bytes\":%" PRIu64
           ",\"reserved_bytes\":%" PRIu64 ",\"live_blocks\":%" PRIu64 ",\"chunks_secret\":%" PRIu64
           ",\"fallbacks\":%" PRIu64 "}\n",
           backend, workload, threads, st.bytes_mapped, st.committed_bytes, st.requested_bytes, st.reserved_bytes,
           st.live_blocks, st.chunks_secret, st.fallbacks);
}

/* measure runs one workload with the given threads; for churn under the
 * library it also reports committed ÷ live requested bytes at the end. */
static void measure(const struct backend *b, const char *wname, size_t size, int threads, uint64_t budget) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
    struct worker *w = calloc((size_t)threads, sizeof *w);
    if (w == NULL)
        die("out of memory");
    for (int i = 0; i < threads; i++) {
        w[i].size = size;
        w[i].budget_ns = budget;
        w[i].bar = &bar;
        w[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&bar); /* all warmed up and set up */
    pthread_barrier_wait(&bar); /* all done timing; churn blocks still live */
    if (size == 0 && sh_stats != NULL)
        print_stats(b->name, wname, threads);
    pthread_barrier_wait(&bar);
    uint64_t ops = 0, start = UINT64_MAX, end = 0, cpu = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].tid, NULL);
        ops += w[i].ops;
        cpu += w[i].cpu;
        if (w[i].start < start)
            start = w[i].start;
        if (w[i].end > end)
            end = w[i].end;
    }
    /* ns/op = wall time ÷ all threads' operations (Go's RunParallel
     * convention); cpu_ns_per_op = all threads' CPU time ÷ their operations. */
    printf("{\"kind\":\"time\",\"backend\":\"%s\",\"workload\":\"%s\",\"threads\":%d,"
           "\"ns_per_op\":%.3f,\"cpu_ns_per_op\":%.3f,\"ops\":%" PRIu64 ",\"wall_ns\":%" PRIu64 "}\n",
           b->name, wname, threads, (double)(end - start) / (double)ops, (double)cpu / (double)ops, ops, end - start);
    fflush(stdout);
    free(w);
    pthread_barrier_destroy(&bar);
}

static void cmd_time(const struct backend *b, int argc, char **argv) {
    uint64_t budget_ms = 100;
    const char *threads = "1,2";
    const char *only = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            budget_ms = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            threads = argv[++i];
        else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc)
            only = argv[++i];
        else
            die("time: unknown argument %s", argv[i]);
    }
    static const struct {
        const char *name;
        size_t size;
    } wl[] = {{"pair32", 32}, {"pair256", 256}, {"pair4096", 4096}, {"pair17000", 17000}, {"churn", 0}};
    setup_and_check(b, 0);
    alloc_fn = b->alloc;
    free_fn = b->release;
    for (const char *t = threads; *t;) {
        int n = (int)strtol(t, (char **)&t, 10);
        if (n < 1 || n > 64)
            die("bad thread count");
        for (size_t i = 0; i < sizeof wl / sizeof wl[0]; i++)
            if (only == NULL || strstr(only, wl[i].name) != NULL)
                measure(b, wl[i].name, wl[i].size, n, budget_ms * 1000000u);
        if (*t == ',')
            t++;
    }
}

/* ---- locked memory per secret ---------------------------------------- */

static void cmd_locked(const struct backend *b, long n) {
    long base = vmlck_kb();
    setup_and_check(b, 0);
    long after_setup = vmlck_kb();
    void **p = calloc((size_t)n, sizeof *p);
    if (p == NULL)
        die("out of memory");
    for (long i = 0; i < n; i++) {
        p[i] = b->alloc(32);
        if (p[i] == NULL)
            die("allocation %ld failed", i);
        memset(p[i], 0x5a, 32);
    }
    long after = vmlck_kb();
    for (long i = 0; i < n; i++)
        b->release(p[i], 32);
    free(p);
    printf("{\"kind\":\"locked\",\"backend\":\"%s\",\"n\":%ld,\"vmlck_base_kb\":%ld,"
           "\"vmlck_setup_kb\":%ld,\"vmlck_after_kb\":%ld,\"bytes_per_secret\":%.1f,"
           "\"marginal_bytes_per_secret\":%.1f}\n",
           b->name, n, base, after_setup, after, (double)after * 1024.0 / (double)n,
           (double)(after - after_setup) * 1024.0 / (double)n);
}

/* ---- direct-map frames ------------------------------------------------ */

/* Present OS pages of every /secretmem mapping and the distinct 2 MiB
 * frames (PFN >> 9) holding them; frames -1 when pagemap hides PFNs. */
static void secret_frames(long *pages, long *frames) {
    *pages = 0;
    *frames = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (f == NULL || pm < 0)
        die("cannot read /proc/self/maps or pagemap");
    size_t cap = 1024, n = 0;
    uint64_t *seen = malloc(cap * sizeof *seen);
    char line[512];
    int hidden = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (strstr(line, "/secretmem") == NULL || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        for (unsigned long a = lo; a < hi; a += 4096) {
            uint64_t e;
            if (pread(pm, &e, 8, (off_t)(a / 4096 * 8)) != 8 || !(e >> 63))
                continue;
            (*pages)++;
            uint64_t pfn = e & ((1ULL << 55) - 1);
            if (pfn == 0) {
                hidden = 1;
                continue;
            }
            size_t k;
            for (k = 0; k < n && seen[k] != pfn >> 9; k++)
                ;
            if (k < n)
                continue;
            if (n == cap)
                seen = realloc(seen, (cap *= 2) * sizeof *seen);
            seen[n++] = pfn >> 9;
        }
    }
    fclose(f);
    close(pm);
    free(seen);
    *frames = hidden ? -1 : (long)n;
}

static void cmd_frames(const struct backend *b, long n, size_t size) {
    setup_and_check(b, 0);
    void **p = calloc((size_t)n, sizeof *p);
    if (p == NULL)
        die("out of memory");
    for (long i = 0; i < n; i++) {
        if ((p[i] = b->alloc(size)) == NULL)
            die("allocation %ld failed", i);
        memset(p[i], 0x5a, size);
    }
    long pages, frames;
    secret_frames(&pages, &frames);
    for (long i = 0; i < n; i++)
        b->release(p[i], size);
    free(p);
    printf("{\"kind\":\"frames\",\"backend\":\"%s\",\"n\":%ld,\"size\":%zu,\"pages\":%ld,\"frames\":%ld,"
           "\"ideal\":%ld}\n",
           b->name, n, size, pages, frames, (pages + 511) / 512);
}

/* ---- first use -------------------------------------------------------- */

static void cmd_first(const struct backend *b) {
    uint64_t t0 = now_ns();
    if (b->setup(0) != 0) {
        fprintf(stderr, "allocbench: self-check failed: %s\n", check_reason);
        exit(3);
    }
    uint64_t t1 = now_ns();
    void *p = b->alloc(32);
    uint64_t t2 = now_ns();
    if (p == NULL)
        die("first allocation failed");
    ((volatile char *)p)[0] = 1;
    b->release(p, 32);
    /* Checked after timing: the check itself allocates. */
    if (b->check() != 0) {
        fprintf(stderr, "allocbench: self-check failed: %s\n", check_reason);
        exit(3);
    }
    printf("{\"kind\":\"first\",\"backend\":\"%s\",\"setup_ns\":%" PRIu64 ",\"first_ns\":%" PRIu64 "}\n", b->name,
           t1 - t0, t2 - t1);
}

/* ---- a chunk's first fault-in ---------------------------------------- */

#define CHUNK (2u << 20)

static void cmd_faultin(void) {
    /* Raw kernel cost: one 2 MiB memfd_secret file committed with pread from
     * /dev/zero (what the library does on its slow path), vs anonymous memory. */
    uint64_t t0 = now_ns();
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0)
        die("memfd_secret: %s", strerror(errno));
    if (ftruncate(fd, CHUNK) != 0)
        die("ftruncate: %s", strerror(errno));
    char *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    uint64_t t1 = now_ns();
    int z = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (z < 0)
        die("/dev/zero: %s", strerror(errno));
    for (size_t off = 0; off < CHUNK;) {
        ssize_t r = pread(z, p + off, CHUNK - off, 0);
        if (r <= 0)
            die("pread: %s", r < 0 ? strerror(errno) : "short");
        off += (size_t)r;
    }
    uint64_t t2 = now_ns();
    close(z);
    munmap(p, CHUNK);

    uint64_t t3 = now_ns();
    char *a = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    for (size_t off = 0; off < CHUNK; off += OS_PAGE)
        ((volatile char *)a)[off] = 1;
    uint64_t t4 = now_ns();
    munmap(a, CHUNK);

    printf("{\"kind\":\"faultin\",\"what\":\"raw\",\"map_ns\":%" PRIu64 ",\"commit_ns\":%" PRIu64
           ",\"anon_ns\":%" PRIu64 "}\n",
           t1 - t0, t2 - t1, t4 - t3);

    /* The library: fill a fresh chunk with 4 KiB blocks (cold: every slab is
     * committed on the way), free them, fill again (warm: pages reused). */
    if (find_library() != 0)
        return;
    enum { NB = 448 }; /* 1.75 MiB: stays within the first chunk */
    static void *blk[NB];
    uint64_t c0 = now_ns();
    for (int i = 0; i < NB; i++)
        if ((blk[i] = sh_malloc(4096)) == NULL)
            die("secretheap_malloc failed");
    uint64_t c1 = now_ns();
    struct secretheap_stats st;
    sh_stats(&st, sizeof st);
    for (int i = 0; i < NB; i++)
        sh_free(blk[i]);
    uint64_t w0 = now_ns();
    for (int i = 0; i < NB; i++)
        if ((blk[i] = sh_malloc(4096)) == NULL)
            die("secretheap_malloc failed");
    uint64_t w1 = now_ns();
    for (int i = 0; i < NB; i++)
        sh_free(blk[i]);
    printf("{\"kind\":\"faultin\",\"what\":\"secretheap\",\"blocks\":%d,\"cold_ns\":%" PRIu64 ",\"warm_ns\":%" PRIu64
           ",\"committed_bytes\":%" PRIu64 ",\"chunks_secret\":%" PRIu64 "}\n",
           NB, c1 - c0, w1 - w0, st.committed_bytes, st.chunks_secret);
}

/* ---- fork with committed secret memory -------------------------------- */

/* commit_fresh_ns: map MIB of a fresh memfd_secret file and commit every OS
 * page the way the library does (pread from /dev/zero: a kernel-side write
 * per page); 0 where memfd_secret is unavailable. The baseline for what a
 * fork child's copy costs: it commits as many fresh pages, then copies. */
static uint64_t commit_fresh_ns(long mib) {
    size_t len = (size_t)mib << 20;
    int z = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (z < 0)
        return 0;
    uint64_t t0 = now_ns();
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
        if (fd >= 0)
            close(fd);
        close(z);
        return 0;
    }
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        close(z);
        return 0;
    }
    uint64_t ns = 0;
    if (pread(z, p, len, 0) == (ssize_t)len)
        ns = now_ns() - t0;
    munmap(p, len);
    close(z);
    return ns;
}

static void cmd_fork(const struct backend *b, long mib, int reps) {
    setup_and_check(b, 0);
    size_t nblk = (size_t)mib * 256; /* 4 KiB blocks */
    char **blk = calloc(nblk, sizeof *blk);
    uint64_t *child = calloc((size_t)reps, sizeof *child), *parent = calloc((size_t)reps, sizeof *parent);
    if (blk == NULL || child == NULL || parent == NULL)
        die("out of memory");
    for (size_t i = 0; i < nblk; i++) {
        if ((blk[i] = b->alloc(4096)) == NULL)
            die("allocation failed");
        memset(blk[i], (int)(i & 0xff), 4096);
    }
    uint64_t repriv = 0;
    uint64_t *commit = calloc((size_t)reps, sizeof *commit);
    if (commit == NULL)
        die("out of memory");
    for (int r = 0; r < reps; r++) {
        /* The commit baseline right before each fork, so that both see the
         * same machine load. */
        commit[r] = commit_fresh_ns(mib);
        int pfd[2];
        if (pipe(pfd) != 0)
            die("pipe");
        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            /* Ready: atfork handlers (re-privatisation) have run. Report the
             * time, and how many chunks were re-privatised, then check one
             * block still holds its data. */
            uint64_t msg[2] = {now_ns(), 0};
            struct secretheap_stats st;
            if (sh_stats != NULL && sh_stats(&st, sizeof st) == 0)
                msg[1] = st.fork_reprivatised;
            if (blk[nblk - 1][4095] != (char)((nblk - 1) & 0xff))
                msg[0] = 0;
            if (write(pfd[1], msg, sizeof msg) != (ssize_t)sizeof msg)
                _exit(1);
            _exit(0);
        }
        /* fork() has returned here: the parent's atfork handlers (which wait
         * for the child's copy) are done. */
        parent[r] = now_ns() - t0;
        close(pfd[1]);
        uint64_t msg[2];
        if (read(pfd[0], msg, sizeof msg) != (ssize_t)sizeof msg)
            die("child did not report");
        close(pfd[0]);
        int status;
        waitpid(pid, &status, 0);
        if (msg[0] == 0)
            die("child saw wrong data after fork");
        repriv = msg[1];
        child[r] = msg[0] - t0;
    }
    printf("{\"kind\":\"fork\",\"backend\":\"%s\",\"mib\":%ld,\"ns\":[", b->name, mib);
    for (int r = 0; r < reps; r++)
        printf("%s%" PRIu64, r ? "," : "", child[r]);
    printf("],\"parent_ns\":[");
    for (int r = 0; r < reps; r++)
        printf("%s%" PRIu64, r ? "," : "", parent[r]);
    printf("],\"commit_ns\":[");
    for (int r = 0; r < reps; r++)
        printf("%s%" PRIu64, r ? "," : "", commit[r]);
    printf("],\"reprivatised_chunks\":%" PRIu64 "}\n", repriv);
    for (size_t i = 0; i < nblk; i++)
        b->release(blk[i], 4096);
    free(blk);
    free(child);
    free(parent);
    free(commit);
}

/* ---- fork while another thread writes a secret ------------------------ */

/* A 4 KiB secret under a sequence word: odd while the writer rewrites the
 * data with the next value, even when every word holds seq/2. A copy taken
 * at one instant shows an even seq with matching data, or an odd seq with
 * the new value in a prefix of the data and the old one after it. x86
 * keeps stores in program order; volatile keeps the compiler from
 * reordering them. */
struct tear_secret {
    volatile uint64_t seq;
    volatile uint64_t data[512];
};
static _Atomic int tear_stop;

static void *tear_writer(void *arg) {
    struct tear_secret *s = arg;
    for (uint64_t v = 1; !atomic_load_explicit(&tear_stop, memory_order_relaxed); v++) {
        s->seq = 2 * v - 1;
        for (int i = 0; i < 512; i++)
            s->data[i] = v;
        s->seq = 2 * v;
    }
    return NULL;
}

static int tear_consistent(const struct tear_secret *s) {
    uint64_t seq = s->seq, v = (seq + 1) / 2;
    int i = 0;
    if (seq % 2 == 0) {
        for (; i < 512; i++)
            if (s->data[i] != v)
                return 0;
        return 1;
    }
    while (i < 512 && s->data[i] == v)
        i++;
    for (; i < 512; i++)
        if (s->data[i] != v - 1)
            return 0;
    return 1;
}

static void cmd_forktear(const struct backend *b, int n) {
    setup_and_check(b, 0);
    struct tear_secret *s = b->alloc(sizeof *s);
    if (s == NULL)
        die("allocation failed");
    memset((void *)s, 0, sizeof *s);
    pthread_t t;
    atomic_store(&tear_stop, 0);
    if (pthread_create(&t, NULL, tear_writer, s) != 0)
        die("pthread_create");
    while (s->seq < 1000)
        sched_yield();
    int torn = 0;
    for (int r = 0; r < n; r++) {
        int pfd[2];
        if (pipe(pfd) != 0)
            die("pipe");
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            char ok = (char)tear_consistent(s);
            if (write(pfd[1], &ok, 1) != 1)
                _exit(1);
            _exit(0);
        }
        close(pfd[1]);
        char ok = 0;
        if (read(pfd[0], &ok, 1) != 1)
            die("child did not report");
        close(pfd[0]);
        waitpid(pid, NULL, 0);
        torn += !ok;
    }
    atomic_store(&tear_stop, 1);
    pthread_join(t, NULL);
    printf("{\"kind\":\"forktear\",\"backend\":\"%s\",\"children\":%d,\"torn\":%d}\n", b->name, n, torn);
    b->release(s, sizeof *s);
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: allocbench check|time|locked|frames|first|faultin|fork|forktear ...");
    const char *cmd = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(cmd, "faultin") == 0) {
        cmd_faultin();
        return 0;
    }
    if (argc < 3)
        die("%s: backend missing", cmd);
    const struct backend *b = find_backend(argv[2]);
    if (strcmp(cmd, "check") == 0) {
        int sabotage = argc > 3 && strcmp(argv[3], "--sabotage") == 0;
        setup_and_check(b, sabotage);
        printf("{\"kind\":\"check\",\"backend\":\"%s\",\"ok\":true}\n", b->name);
    } else if (strcmp(cmd, "time") == 0) {
        cmd_time(b, argc - 3, argv + 3);
    } else if (strcmp(cmd, "locked") == 0) {
        cmd_locked(b, argc > 3 ? strtol(argv[3], NULL, 10) : 10000);
    } else if (strcmp(cmd, "frames") == 0) {
        if (argc < 5)
            die("frames: BACKEND N SIZE");
        cmd_frames(b, strtol(argv[3], NULL, 10), (size_t)strtoul(argv[4], NULL, 10));
    } else if (strcmp(cmd, "first") == 0) {
        cmd_first(b);
    } else if (strcmp(cmd, "fork") == 0) {
        if (argc < 5)
            die("fork: BACKEND MIB REPS");
        cmd_fork(b, strtol(argv[3], NULL, 10), (int)strtol(argv[4], NULL, 10));
    } else if (strcmp(cmd, "forktear") == 0) {
        cmd_forktear(b, argc > 3 ? (int)strtol(argv[3], NULL, 10) : 100);
    } else {
        die("unknown command %s", cmd);
    }
    return 0;
}
