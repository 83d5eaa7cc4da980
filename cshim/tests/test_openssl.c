/*
 * test_openssl.c — the OpenSSL hooks (preload/openssl.c) compiled into the test
 * program with the core, so that its hooks run under ASan/UBSan and TSan too.
 * The program does not link libcrypto: it dlopen()s it, as Python does, and
 * our dlopen wrapper (defined in openssl.c, which this file includes) must
 * hook it before its first allocation. The test program does not export
 * CRYPTO_secure_* to the dynamic symbol table, so libcrypto's internal
 * secure-heap calls do not reach ours here: the start-up probe must say so
 * (the e2e tests cover the LD_PRELOAD library, where they do).
 */
/* The sanitizer runtimes keep their own free and realloc. */
#define SH_NO_FREE_INTERPOSE 1
#include "../../preload/openssl.c"

#include <pthread.h>

#include "harness.h"

#ifndef OSSL_OPS
#define OSSL_OPS 20000
#endif

/* libcrypto's entry points, through dlsym on its handle. */
static void *(*c_malloc)(size_t, const char *, int);
static void *(*c_realloc)(void *, size_t, const char *, int);
static void (*c_free)(void *, const char *, int);

/* load_libcrypto dlopen()s libcrypto through our wrapper. 0 or -1. */
static int load_libcrypto(void) {
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        h = dlopen("libcrypto.so", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "    cannot dlopen libcrypto: %s (install libssl-dev)\n", dlerror());
        return -1;
    }
    *(void **)&c_malloc = dlsym(h, "CRYPTO_malloc");
    *(void **)&c_realloc = dlsym(h, "CRYPTO_realloc");
    *(void **)&c_free = dlsym(h, "CRYPTO_free");
    return c_malloc && c_realloc && c_free ? 0 : -1;
}

static int theirs;
static void *their_malloc(size_t n, const char *f, int l) {
    (void)n, (void)f, (void)l;
    theirs++;
    return NULL;
}
static void *their_realloc(void *p, size_t n, const char *f, int l) {
    (void)p, (void)n, (void)f, (void)l;
    theirs++;
    return NULL;
}
static void their_free(void *p, const char *f, int l) {
    (void)p, (void)f, (void)l;
    theirs++;
}

/* Mode all (the default): hooks in a libcrypto loaded after start. */
static void test_hooks_after_dlopen(void) {
    /* Nothing to hook at start, so nothing started: no mode read yet, no arena. */
    CHECK(!atomic_load(&hook_installed));
    CHECK(atomic_load(&sh_arena_size) == 0);
    if (load_libcrypto() != 0) {
        CHECK_MSG(0, "libcrypto not loadable");
        return;
    }
    CHECK(hook_mode == SH_OPENSSL_ALL);
    CHECK(atomic_load(&sh_arena_size) != 0);
    CHECK(atomic_load(&hook_installed));
    CHECK(atomic_load(&sh_stat_openssl_hooked) == 1);
    /* The probe ran against a libcrypto that cannot see our (unexported)
     * CRYPTO_secure_*: it must not claim interposition. */
    CHECK(atomic_load(&hook_interpose_state) == -1);
    CHECK(!atomic_load(&hook_secure_active));

    unsigned long m0 = hook_sum(HOOK_CALL_MALLOC);
    unsigned char *p = c_malloc(100, __FILE__, __LINE__);
    CHECK(p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE);
    CHECK(hook_sum(HOOK_CALL_MALLOC) == m0 + 1);
    for (int i = 0; i < 100; i++)
        CHECK(p[i] == 0);

    /* OpenSSL's default allocator returns NULL for 0 bytes; so do we. */
    CHECK(c_malloc(0, __FILE__, __LINE__) == NULL);

    /* realloc: grow keeps the contents and retires the old block. */
    memset(p, 0x5a, 100);
    unsigned char *q = c_realloc(p, 5000, __FILE__, __LINE__);
    CHECK(q != NULL && secretheap_backend(q) != SECRETHEAP_BACKEND_NONE);
    for (int i = 0; i < 100; i++)
        CHECK(q[i] == 0x5a);
    if (q != p)
        CHECK(secretheap_backend(p) == SECRETHEAP_BACKEND_NONE);
    /* realloc(NULL, n) allocates; realloc(p, 0) frees and returns NULL. */
    unsigned char *r = c_realloc(NULL, 40, __FILE__, __LINE__);
    CHECK(r != NULL && secretheap_backend(r) != SECRETHEAP_BACKEND_NONE);
    CHECK(c_realloc(r, 0, __FILE__, __LINE__) == NULL);
    CHECK(secretheap_backend(r) == SECRETHEAP_BACKEND_NONE);
    c_free(q, __FILE__, __LINE__);
    CHECK(secretheap_backend(q) == SECRETHEAP_BACKEND_NONE);
    c_free(NULL, __FILE__, __LINE__);

    /* A later CRYPTO_set_mem_functions is refused (0, as OpenSSL answers
     * once it has allocated): our blocks are never handed to their free. */
    CHECK(CRYPTO_set_mem_functions(their_malloc, their_realloc, their_free) == 0);
    CHECK(atomic_load(&hook_set_refused) == 1);
    CHECK(atomic_load(&hook_set_honoured) == 0);
    void *s = c_malloc(24, __FILE__, __LINE__);
    CHECK(s != NULL && secretheap_backend(s) != SECRETHEAP_BACKEND_NONE);
    c_free(s, __FILE__, __LINE__);
    CHECK(theirs == 0);

    /* Loading it again (as an engine or RTLD_NOLOAD would) hooks nothing
     * twice: one slot, still ours. */
    CHECK(dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD) != NULL);
    int used = 0;
    for (int i = 0; i < HOOK_MAX_LIBS; i++)
        used += hook_libs[i].set != NULL;
    CHECK(used == 1 && hook_still_ours(0));
    /* dlsym on its handle hands out the slot's guard, not libcrypto's own. */
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
    void *g = dlsym(h, "CRYPTO_set_mem_functions");
    CHECK(g == (void *)(uintptr_t)hook_tramp[0].s);
    /* ...and RTLD_NEXT through our dlsym still means "after the caller". */
    CHECK(dlsym(RTLD_NEXT, "malloc") != NULL);
    CHECK(secretheap_check() == 0);
}

static void *churn(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ULL + 1;
    void *live[64] = {0};
    long bad = 0;
    for (int i = 0; i < OSSL_OPS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int k = (int)(x % 64);
        if (live[k]) {
            c_free(live[k], __FILE__, __LINE__);
            live[k] = NULL;
        } else {
            size_t n = 1 + (size_t)(x >> 20) % 3000;
            unsigned char *p = c_malloc(n, __FILE__, __LINE__);
            if (p == NULL || secretheap_backend(p) == SECRETHEAP_BACKEND_NONE || p[n - 1] != 0)
                bad++;
            if (p)
                memset(p, k, n);
            live[k] = p;
        }
    }
    for (int k = 0; k < 64; k++)
        c_free(live[k], __FILE__, __LINE__);
    return (void *)bad;
}

/* Two threads allocate and free through the hooks; the sharded counters add up. */
static void test_hooks_threads(void) {
    if (c_malloc == NULL) {
        CHECK_MSG(0, "libcrypto not loaded");
        return;
    }
    unsigned long m0 = hook_sum(HOOK_CALL_MALLOC), f0 = hook_sum(HOOK_CALL_FREE);
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churn, (void *)(i + 1));
    for (int i = 0; i < 2; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        CHECK_MSG(bad == NULL, "thread %d: %ld bad blocks", i, (long)(intptr_t)bad);
    }
    unsigned long m = hook_sum(HOOK_CALL_MALLOC) - m0, f = hook_sum(HOOK_CALL_FREE) - f0;
    CHECK(m > 0);
    /* Each step mallocs or frees; then 64 frees per thread (NULL ones too:
     * CRYPTO_free passes NULL on to the hook). */
    CHECK_MSG(f == 2 * OSSL_OPS - m + 2 * 64, "mallocs %lu frees %lu", m, f);
    CHECK(secretheap_check() == 0);
}

/* Modes off and secure run in fresh processes (options are read once). */
static int mode_off(void) {
    if (load_libcrypto() != 0 || hook_mode != SH_OPENSSL_OFF)
        return 2;
    void *p = c_malloc(64, __FILE__, __LINE__);
    int ok = p != NULL && secretheap_backend(p) == SECRETHEAP_BACKEND_NONE && !atomic_load(&hook_installed) &&
             hook_sum(HOOK_CALL_MALLOC) == 0;
    c_free(p, __FILE__, __LINE__);
    /* Interposed functions still forward to libcrypto. */
    void *s = CRYPTO_secure_malloc(32, __FILE__, __LINE__);
    ok = ok && s != NULL && secretheap_backend(s) == SECRETHEAP_BACKEND_NONE;
    CRYPTO_secure_free(s, __FILE__, __LINE__);
    return ok ? 0 : 1;
}

static int mode_secure(void) {
    if (load_libcrypto() != 0 || hook_mode != SH_OPENSSL_SECURE)
        return 2;
    /* The probe cannot reach our (unexported) CRYPTO_secure_* from this
     * program, so mode secure falls back to the general hooks: ordinary
     * allocations too come from secret memory. */
    void *p = c_malloc(64, __FILE__, __LINE__);
    int ok = p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE && atomic_load(&hook_installed) &&
             atomic_load(&hook_secure_fallback);
    c_free(p, __FILE__, __LINE__);
    /* The safety net proper (mode secure where the secure calls reach us,
     * as with Debian's libcrypto preloaded): switch the slot to it. Ordinary
     * allocations stay in libc memory... */
    atomic_store(&hook_libs[0].general, 0);
    p = c_malloc(64, __FILE__, __LINE__);
    ok = ok && p != NULL && secretheap_backend(p) == SECRETHEAP_BACKEND_NONE;
    c_free(p, __FILE__, __LINE__);
    /* ...and a block of ours that reaches CRYPTO_free goes back to the core. */
    void *b = secretheap_malloc(48);
    unsigned long sf = hook_sum(HOOK_CALL_SECURE_FREE);
    c_free(b, __FILE__, __LINE__);
    ok = ok && secretheap_backend(b) == SECRETHEAP_BACKEND_NONE && hook_sum(HOOK_CALL_SECURE_FREE) == sf + 1;
    /* ...and so does one that reaches CRYPTO_realloc. */
    unsigned char *c = secretheap_malloc(16);
    memset(c, 7, 16);
    unsigned char *d = c_realloc(c, 200, __FILE__, __LINE__);
    ok = ok && d != NULL && secretheap_backend(d) != SECRETHEAP_BACKEND_NONE && d[15] == 7;
    c_free(d, __FILE__, __LINE__);
    /* The probe could not reach our CRYPTO_secure_* from this program. */
    ok = ok && atomic_load(&hook_interpose_state) == -1;
    return ok ? 0 : 1;
}

static void test_mode_off(void) {
    const char *env[] = {"SECRETHEAP_OPENSSL=off", NULL};
    struct h_child ch;
    h_reexec("mode_off", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d signal %d: %s", ch.code, ch.sig, ch.err);
}

static void test_mode_secure(void) {
    const char *env[] = {"SECRETHEAP_OPENSSL=secure", NULL};
    struct h_child ch;
    h_reexec("mode_secure", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d signal %d: %s", ch.code, ch.sig, ch.err);
    /* The fallback is automatic: no warning at the default verbosity. */
    CHECK_MSG(!h_contains(ch.err, "PLT"), "stderr: %s", ch.err);
}

/* Runs before openssl.c's constructor when asked: the allocator is then
 * initialised (and registers its exit handler) before the OpenSSL hooks'
 * constructor runs, as when another library's constructor allocates first. */
__attribute__((constructor(101))) static void early_alloc(void) {
    if (getenv("SH_TEST_EARLY_ALLOC"))
        secretheap_free(secretheap_malloc(32));
}

static int mode_stats(void) {
    if (load_libcrypto() != 0)
        return 2;
    void *p = c_malloc(64, __FILE__, __LINE__);
    c_free(p, __FILE__, __LINE__);
    return 0;
}

/* The stats report at exit: the core's block, then the OpenSSL hooks', each with
 * its "  key value" lines, whichever constructor ran first. */
static void test_stats_report(void) {
    for (int early = 0; early < 2; early++) {
        const char *env[] = {"SECRETHEAP_STATS=stderr", early ? "SH_TEST_EARLY_ALLOC=1" : NULL, NULL};
        struct h_child ch;
        h_reexec("stats", env, -1, 0, &ch);
        CHECK_MSG(ch.exited && ch.code == 0, "early %d: exit %d signal %d: %s", early, ch.code, ch.sig, ch.err);
        const char *core = strstr(ch.err, "secretheap stats (pid");
        const char *hooks = strstr(ch.err, "secretheap openssl (pid");
        CHECK_MSG(core && hooks && core < hooks && !strstr(hooks + 1, "secretheap openssl (pid"),
                  "early %d: want the core's block, then the OpenSSL hooks', once: %s", early, ch.err);
        static const char *const keys[] = {
            "\n  backend 1\n",           "\n  live_blocks 0\n",
            "\n  committed_bytes ",      "\n  bytes_mapped ",
            "\n  chunks_mapped ",        "\n  fallbacks 0\n",
            "\n  fork_reprivatised 0\n", "\n  misuse_caught 0\n",
            "\n  openssl_hooked 1\n",    "\n  class_64_slabs ",
            "\n  openssl_mode all\n",    "\n  openssl_hooks yes\n",
            "\n  openssl_malloc_calls ", "\n  openssl_secure_interposed bound-inside-libcrypto\n",
        };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECK_MSG(h_contains(ch.err, keys[i]), "early %d: no %s in: %s", early, keys[i], ch.err);
        /* The summaries people (and cmd/secretheap, e2e) read stay. */
        CHECK_MSG(h_contains(ch.err, "openssl hooked 1") && h_contains(ch.err, "secure interposed bound-inside"),
                  "early %d: %s", early, ch.err);
    }
}

static const struct h_mode modes[] = {
    {"stats", mode_stats},
    {"mode_off", mode_off},
    {"mode_secure", mode_secure},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_hooks_after_dlopen);
    RUN(test_hooks_threads);
    RUN(test_mode_off);
    RUN(test_mode_secure);
    RUN(test_stats_report);
    return h_done();
}
