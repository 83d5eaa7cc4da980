/* openssl.c — the OpenSSL hooks of libsecretheap.so, and its constructor.
 *
 * Forwarding only, like mimalloc's alloc-override.c: this file decides which
 * OpenSSL allocations go to the core (secretheap_malloc and friends) and knows
 * nothing of chunks or slabs; the core knows nothing of OpenSSL.
 *
 * How OpenSSL is reached (docs/design.md, Layers: the OpenSSL front end):
 *  - The library does not link libcrypto. A constructor looks for
 *    CRYPTO_set_mem_functions with dlsym(RTLD_NEXT) (RTLD_DEFAULT would find
 *    our own interposed definition first) and installs hooks with the ABI of
 *    OpenSSL 1.1.0 through 3.x: malloc(num, file, line), realloc(p, num, file,
 *    line), free(p, file, line). OpenSSL refuses them once it has allocated
 *    through its default allocator; we then say so once and in the stats.
 *    Without a libcrypto the constructor starts nothing (no arena, no
 *    secret memory): the core starts at its first use (hook_start).
 *  - A libcrypto loaded later by dlopen (Python's ssl module, plugins) is hooked
 *    by our dlopen wrapper right after the real dlopen returns; one loaded
 *    again after an unload is hooked again.
 *  - Each hooked libcrypto has a slot with its own hook functions (struct
 *    hook_lib, hook_tramp). CRYPTO_set_mem_functions — the interposed symbol, and
 *    the guard our dlsym hands out for a hooked libcrypto's handle — decides
 *    per libcrypto (hook_set_for): refused (0) for the program's own, honoured
 *    for a dlopen'ed one that has not allocated (the engine/provider ABI next
 *    to a static host), refused for one that has. Never 1 and ignored.
 *  - The secure-heap API (CRYPTO_secure_*) is interposed. On Debian's libcrypto
 *    every internal call to it goes through the PLT, so an LD_PRELOAD library
 *    sees them; a libcrypto linked with -Bsymbolic binds them internally. A
 *    probe at hook time (BN_secure_new + BN_set_word, which allocate with
 *    OPENSSL_secure_zalloc inside libcrypto) tells which case we are in.
 *  - free and realloc are interposed: a block of ours that reaches them is
 *    handled by the core with a named message, not a glibc abort.
 *
 * Modes (SECRETHEAP_OPENSSL):
 *  all     every OpenSSL allocation (hooks). Secure-heap allocations are served
 *          from the core's reserve (SECRETHEAP_SECURE_RESERVE) so that private
 *          keys, DRBG state and shared secrets never fall back to libc memory.
 *  secure  only CRYPTO_secure_* (interposition). Hooks are still installed as a
 *          safety net that route a free of one of our blocks back to the core
 *          (OpenSSL, with its secure heap off, does not distinguish the two);
 *          everything else goes to libc malloc. Where the probe shows that the
 *          secure calls cannot be interposed (-Bsymbolic), the slot switches
 *          to the general hooks: every allocation of that libcrypto in secret
 *          memory, the only way left to protect its secure ones.
 *  off     nothing; every interposed function forwards to libcrypto.
 *
 * While our secure service is active, CRYPTO_secure_malloc_init does not build
 * OpenSSL's own mlock'd arena (our blocks are already secret memory) and
 * CRYPTO_secure_malloc_initialized reports 1 (0 between a successful done and
 * the next init), so code that asks first (the DRBG, applications) takes its
 * secure path into secret memory. CRYPTO_secure_allocated answers 1 for our
 * blocks (see there); used and actual_size report our blocks; malloc_done
 * succeeds once no secure block of ours is live.
 *
 * Limits: when OpenSSL refused the hooks but secure interposition works, a
 * secure block freed with plain CRYPTO_free would reach libc free (now caught
 * by the free interposer). One libcrypto per process gets the interposed
 * secure calls (the first one found); a second, different libcrypto loaded
 * later is hooked but its secure calls forward to the first. dlvsym is not
 * guarded. The dlopen wrapper makes our library the "caller" of dlopen;
 * hook_caller_path restores the caller's search (see there; not dlmopen
 * namespaces, $LIB, $PLATFORM).
 */
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SH_EXPORT __attribute__((visibility("default")))

/* The OpenSSL 1.1.0–3.x allocator ABI. */
typedef void *(*ossl_malloc_fn)(size_t num, const char *file, int line);
typedef void *(*ossl_realloc_fn)(void *p, size_t num, const char *file, int line);
typedef void (*ossl_free_fn)(void *p, const char *file, int line);
typedef int (*ossl_set_mem_fn)(ossl_malloc_fn, ossl_realloc_fn, ossl_free_fn);
typedef void (*ossl_get_mem_fn)(ossl_malloc_fn *, ossl_realloc_fn *, ossl_free_fn *);

/* ---- the real dlsym and dlopen ------------------------------------------ */

/* Our own lookups never go through our dlsym interposer (it would hand us
 * our own guard for CRYPTO_set_mem_functions). dlvsym is not interposed.
 * Hidden but not static: the x86-64 dlsym entry (below) jumps through it. */
SH_HIDDEN void *(*hook_real_dlsym_fn)(void *, const char *);
static void *(*hook_real_dlopen_fn)(const char *, int);

/* Code reached from our dlsym must run before anything else is ready: a
 * sanitizer runtime looks up its interceptors with dlsym before its own
 * initialisation (the C tests build this file into sanitized programs). */
#define HOOK_EARLY __attribute__((no_sanitize("address", "thread", "undefined")))

HOOK_EARLY static void hook_dl_ready(void) {
    if (sh_likely(__atomic_load_n(&hook_real_dlsym_fn, __ATOMIC_ACQUIRE) != NULL))
        return;
    void *(*ds)(void *, const char *) = NULL;
    static const char *const vers[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0"};
    for (size_t i = 0; ds == NULL && i < sizeof vers / sizeof vers[0]; i++)
        *(void **)&ds = dlvsym(RTLD_NEXT, "dlsym", vers[i]);
    if (ds == NULL)
        sh_fatal("openssl: cannot find the C library's dlsym (dlvsym failed: %s)", dlerror());
    void *(*dl)(const char *, int) = NULL;
    *(void **)&dl = ds(RTLD_NEXT, "dlopen");
    if (dl == NULL)
        sh_fatal("openssl: cannot find the C library's dlopen");
    __atomic_store_n(&hook_real_dlopen_fn, dl, __ATOMIC_RELEASE);
    __atomic_store_n(&hook_real_dlsym_fn, ds, __ATOMIC_RELEASE);
}

static void *hook_sym(void *handle, const char *name) {
    hook_dl_ready();
    return hook_real_dlsym_fn(handle, name);
}

/* ---- per-libcrypto state ------------------------------------------------ */

/* The libcrypto functions the secure-heap interposers forward to: those of
 * the first libcrypto found (at start, at dlopen, or lazily), replaced when
 * that one was unloaded. Filled under hook_real_lock; read without a lock once
 * hook_reals_ready is set (release/acquire). */
struct ossl_reals {
    ossl_set_mem_fn set_mem_functions;
    void *(*secure_malloc)(size_t, const char *, int);
    void *(*secure_zalloc)(size_t, const char *, int);
    void (*secure_free)(void *, const char *, int);
    void (*secure_clear_free)(void *, size_t, const char *, int);
    int (*secure_allocated)(const void *);
    int (*secure_malloc_initialized)(void);
    size_t (*secure_actual_size)(void *);
    size_t (*secure_used)(void);
    int (*secure_malloc_init)(size_t, size_t);
    int (*secure_malloc_done)(void);
    /* The code of its CRYPTO_secure_free and CRYPTO_secure_clear_free: a
     * CRYPTO_secure_allocated call from there is libcrypto's own free path
     * (reached by a caller that bypassed our interposers), which must not
     * be told that one of our blocks is in its arena. */
    uintptr_t free_lo, free_hi, clear_lo, clear_hi;
};

static struct ossl_reals hook_real;
static atomic_int hook_reals_ready;
static pthread_mutex_t hook_real_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Every libcrypto we installed hooks in (or tried to) has a slot, and each
 * slot its own hook functions (hook_tramp[i]), so a hook knows which libcrypto
 * it serves: OpenSSL's hooks take no context argument. The slot decides:
 *  general  every allocation goes to the core (mode all; mode secure when the
 *           secure calls cannot be interposed). Otherwise the hooks are the
 *           safety net of mode secure (libc memory, our blocks back to us).
 *  fm/fr/ff an allocator honoured by CRYPTO_set_mem_functions (the engine
 *           and provider ABI's way of sharing the host's allocator): new
 *           blocks come from it, our blocks still come back to us.
 * Slot fields other than the atomics are written under hook_lock.
 */
struct hook_lib {
    ossl_set_mem_fn set;  /* its CRYPTO_set_mem_functions, NULL: slot free */
    ossl_get_mem_fn get;  /* its CRYPTO_get_mem_functions, NULL if it has none */
    bool from_dlopen;     /* arrived by dlopen (not in the process at start) */
    bool refusal_said;    /* "refused our hooks" was logged */
    atomic_int installed; /* our hooks are its allocator */
    atomic_int general;   /* see above */
    atomic_int used;      /* it allocated through our hooks (probe excluded) */
    _Atomic(ossl_malloc_fn) fm;
    _Atomic(ossl_realloc_fn) fr;
    _Atomic(ossl_free_fn) ff;
};

#define HOOK_MAX_LIBS 8
static struct hook_lib hook_libs[HOOK_MAX_LIBS];

/* hook_lock serialises hooking and slot changes (constructor, dlopen from
 * several threads, CRYPTO_set_mem_functions). Never held while an allocation
 * hook runs. */
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;

static int hook_mode = SH_OPENSSL_OFF; /* written once, in hook_start */
static pthread_once_t hook_start_once = PTHREAD_ONCE_INIT;

/* hook_secure_active: our CRYPTO_secure_* serve from secret memory (the probe
 * showed that libcrypto's internal calls reach us). hook_app_done: the program
 * called CRYPTO_secure_malloc_done successfully and not init since. */
static atomic_int hook_secure_active;
static atomic_int hook_app_done;

/* Counters. Call counts are sharded per thread: an atomic add on one shared
 * cache line costs tens of ns per call with two threads, and even a locked
 * add on a private line (~6 ns) is half a glibc malloc+free pair, so a shard
 * is bumped with a relaxed load and store. Counts are exact while no two
 * running threads share a shard (fewer than HOOK_SHARDS threads were ever
 * started); beyond that a concurrent bump can be lost, which only makes the
 * statistics approximate. The shard is picked once per thread. TLS is
 * initial-exec: the library is preloaded or linked, never dlopen()ed, and the
 * default model would call __tls_get_addr on every hook. */
enum {
    HOOK_CALL_MALLOC,
    HOOK_CALL_REALLOC,
    HOOK_CALL_FREE,
    HOOK_CALL_SECURE_ALLOC,
    HOOK_CALL_SECURE_FREE,
    HOOK_CALL_N
};
#define HOOK_SHARDS 32
static struct { _Alignas(64) atomic_ulong c[HOOK_CALL_N]; } hook_shard[HOOK_SHARDS];
static atomic_uint hook_next_shard;
#define HOOK_TLS __attribute__((tls_model("initial-exec")))
static _Thread_local int hook_my_shard HOOK_TLS = -1;

static atomic_long hook_secure_live;    /* usable bytes of live secure blocks */
static atomic_int hook_installed;       /* 1 when our hooks are in some libcrypto */
static atomic_int hook_refused;         /* libcryptos that refused our hooks */
static atomic_ulong hook_set_refused;   /* CRYPTO_set_mem_functions calls we answered 0 */
static atomic_ulong hook_set_honoured;  /* ... and those honoured for a dlopen'ed libcrypto */
static atomic_int hook_interpose_state; /* 0 unknown, 1 reaches us, -1 bound inside libcrypto */
static atomic_int hook_secure_fallback; /* mode secure, not interposable: general hooks instead */
static atomic_ulong hook_probe_hits;    /* our secure allocator reached during the probe */
static _Thread_local int hook_probing HOOK_TLS;

/* hook_dlopen_depth guards re-entrancy: a constructor run by the real dlopen
 * may dlopen again; only the outermost call scans for libcrypto. */
static _Thread_local int hook_dlopen_depth HOOK_TLS;

static inline void hook_count(int which) {
    int s = hook_my_shard;
    if (__builtin_expect(s < 0, 0)) {
        s = (int)(atomic_fetch_add_explicit(&hook_next_shard, 1, memory_order_relaxed) % HOOK_SHARDS);
        hook_my_shard = s;
    }
    atomic_ulong *c = &hook_shard[s].c[which];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static unsigned long hook_sum(int which) {
    unsigned long n = 0;
    for (int i = 0; i < HOOK_SHARDS; i++)
        n += atomic_load_explicit(&hook_shard[i].c[which], memory_order_relaxed);
    return n;
}

static inline int hook_ours(const void *p) { return p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE; }

SH_EXPORT int CRYPTO_set_mem_functions(ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f);
/* Our own definition's address. Plain CRYPTO_set_mem_functions goes through
 * the GOT and means libcrypto's when libcrypto comes first in the global
 * scope; a hidden alias always means ours. */
extern __typeof__(CRYPTO_set_mem_functions) hook_self_set_fn
    __attribute__((alias("CRYPTO_set_mem_functions"), visibility("hidden")));
#define hook_self_set ((ossl_set_mem_fn)hook_self_set_fn)

/* ---- the hooks installed with CRYPTO_set_mem_functions ---------------- */

/* hook_mark_used records that libcrypto allocated through our hooks (the
 * start-up probe excepted, which frees all it allocates): from then on
 * OpenSSL itself would refuse a new allocator, and so do we. */
static inline void hook_mark_used(struct hook_lib *L) {
    if (!hook_probing && !atomic_load_explicit(&L->used, memory_order_relaxed))
        atomic_store_explicit(&L->used, 1, memory_order_relaxed);
}

/* OpenSSL's default allocator returns NULL for 0 bytes; so do we, so that
 * behaviour does not change under the library. */
static inline void *hook_tr_malloc(struct hook_lib *L, size_t num, const char *file, int line) {
    ossl_malloc_fn fm = atomic_load_explicit(&L->fm, memory_order_acquire);
    if (sh_unlikely(fm != NULL))
        return fm(num, file, line);
    if (num != 0)
        hook_mark_used(L);
    if (atomic_load_explicit(&L->general, memory_order_relaxed)) {
        hook_count(HOOK_CALL_MALLOC);
        return num != 0 ? secretheap_malloc(num) : NULL;
    }
    return num != 0 ? malloc(num) : NULL; /* safety net: ordinary memory */
}

/* realloc: NULL → malloc, 0 → free + NULL, and the old block is wiped (the
 * core's realloc does all three). A block of ours always goes back to the
 * core, whoever allocates the new one. */
static inline void *hook_tr_realloc(struct hook_lib *L, void *p, size_t num, const char *file, int line) {
    ossl_malloc_fn fm = atomic_load_explicit(&L->fm, memory_order_acquire);
    if (sh_unlikely(fm != NULL)) {
        if (!hook_ours(p))
            return atomic_load_explicit(&L->fr, memory_order_relaxed)(p, num, file, line);
        if (num == 0) {
            secretheap_free(p);
            return NULL;
        }
        void *q = fm(num, file, line);
        if (q == NULL)
            return NULL;
        size_t have = secretheap_usable_size(p);
        memcpy(q, p, have < num ? have : num);
        secretheap_free(p);
        return q;
    }
    if (num != 0)
        hook_mark_used(L);
    if (atomic_load_explicit(&L->general, memory_order_relaxed)) {
        hook_count(HOOK_CALL_REALLOC);
        return secretheap_realloc(p, num);
    }
    if (hook_ours(p))
        return secretheap_realloc(p, num);
    if (num == 0) {
        free(p);
        return NULL;
    }
    return realloc(p, num);
}

/* free always wipes (the core does): OpenSSL frees many secrets with plain
 * CRYPTO_free. In general mode a pointer outside every chunk (a fallback
 * block) goes to libc through the core. */
static inline void hook_tr_free(struct hook_lib *L, void *p, const char *file, int line) {
    if (sh_likely(atomic_load_explicit(&L->fm, memory_order_acquire) == NULL)) {
        if (atomic_load_explicit(&L->general, memory_order_relaxed)) {
            hook_count(HOOK_CALL_FREE);
            secretheap_free(p);
        } else if (hook_ours(p)) {
            hook_count(HOOK_CALL_SECURE_FREE);
            secretheap_free(p);
        } else {
            free(p);
        }
        return;
    }
    if (hook_ours(p))
        secretheap_free(p);
    else
        atomic_load_explicit(&L->ff, memory_order_relaxed)(p, file, line);
}

static int hook_set_for(struct hook_lib *L, ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f, const char *how);

/* One set of hook functions per slot. hook_s<i> is what dlsym hands out for
 * that libcrypto's CRYPTO_set_mem_functions (see hook_dlsym_guard). */
#define HOOK_TRAMPOLINES(i)                                                                                            \
    static void *hook_m##i(size_t n, const char *f, int l) { return hook_tr_malloc(&hook_libs[i], n, f, l); }          \
    static void *hook_r##i(void *p, size_t n, const char *f, int l) {                                                  \
        return hook_tr_realloc(&hook_libs[i], p, n, f, l);                                                             \
    }                                                                                                                  \
    static void hook_f##i(void *p, const char *f, int l) { hook_tr_free(&hook_libs[i], p, f, l); }                     \
    static int hook_s##i(ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f) {                                        \
        return hook_set_for(&hook_libs[i], m, r, f, "through dlsym");                                                  \
    }
HOOK_TRAMPOLINES(0)
HOOK_TRAMPOLINES(1)
HOOK_TRAMPOLINES(2)
HOOK_TRAMPOLINES(3)
HOOK_TRAMPOLINES(4)
HOOK_TRAMPOLINES(5)
HOOK_TRAMPOLINES(6)
HOOK_TRAMPOLINES(7)

static const struct {
    ossl_malloc_fn m;
    ossl_realloc_fn r;
    ossl_free_fn f;
    ossl_set_mem_fn s;
} hook_tramp[HOOK_MAX_LIBS] = {
    {hook_m0, hook_r0, hook_f0, hook_s0}, {hook_m1, hook_r1, hook_f1, hook_s1}, {hook_m2, hook_r2, hook_f2, hook_s2},
    {hook_m3, hook_r3, hook_f3, hook_s3}, {hook_m4, hook_r4, hook_f4, hook_s4}, {hook_m5, hook_r5, hook_f5, hook_s5},
    {hook_m6, hook_r6, hook_f6, hook_s6}, {hook_m7, hook_r7, hook_f7, hook_s7},
};

/* ---- finding and hooking libcrypto ------------------------------------ */

/* hook_code_range sets [*lo, *hi) to the code of the function at fn (its
 * symbol's size), or leaves both 0. */
static void hook_code_range(void *fn, uintptr_t *lo, uintptr_t *hi) {
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    *lo = *hi = 0;
    if (fn == NULL || !dladdr1(fn, &info, (void **)&sym, RTLD_DL_SYMENT) || sym == NULL)
        return;
    *lo = (uintptr_t)fn;
    *hi = (uintptr_t)fn + (sym->st_size ? sym->st_size : 1);
}

/* hook_load_reals fills hook_real from handle (RTLD_NEXT or a dlopen handle)
 * the first time a libcrypto is seen, and again when the one it points to
 * was unloaded (its code is gone: dladdr finds nothing there). */
static void hook_load_reals(void *handle, ossl_set_mem_fn set) {
    pthread_mutex_lock(&hook_real_lock);
    Dl_info info;
    bool stale = atomic_load_explicit(&hook_reals_ready, memory_order_relaxed) && hook_real.set_mem_functions != set &&
                 !dladdr((void *)(uintptr_t)hook_real.set_mem_functions, &info);
    if (!atomic_load_explicit(&hook_reals_ready, memory_order_relaxed) || stale) {
        struct ossl_reals r = {.set_mem_functions = set};
        *(void **)&r.secure_malloc = hook_sym(handle, "CRYPTO_secure_malloc");
        *(void **)&r.secure_zalloc = hook_sym(handle, "CRYPTO_secure_zalloc");
        *(void **)&r.secure_free = hook_sym(handle, "CRYPTO_secure_free");
        *(void **)&r.secure_clear_free = hook_sym(handle, "CRYPTO_secure_clear_free");
        *(void **)&r.secure_allocated = hook_sym(handle, "CRYPTO_secure_allocated");
        *(void **)&r.secure_malloc_initialized = hook_sym(handle, "CRYPTO_secure_malloc_initialized");
        *(void **)&r.secure_actual_size = hook_sym(handle, "CRYPTO_secure_actual_size");
        *(void **)&r.secure_used = hook_sym(handle, "CRYPTO_secure_used");
        *(void **)&r.secure_malloc_init = hook_sym(handle, "CRYPTO_secure_malloc_init");
        *(void **)&r.secure_malloc_done = hook_sym(handle, "CRYPTO_secure_malloc_done");
        hook_code_range((void *)(uintptr_t)r.secure_free, &r.free_lo, &r.free_hi);
        hook_code_range((void *)(uintptr_t)r.secure_clear_free, &r.clear_lo, &r.clear_hi);
        hook_real = r;
        atomic_store_explicit(&hook_reals_ready, 1, memory_order_release);
    }
    pthread_mutex_unlock(&hook_real_lock);
}

/* hook_reals returns libcrypto's own functions, looking for a libcrypto in the
 * global scope first if none was seen yet (a call that arrives before our
 * constructor or dlopen wrapper saw the library). NULL if there is none: the
 * callers then behave as OpenSSL's default path would (libc memory). */
static const struct ossl_reals *hook_reals(void) {
    if (sh_likely(atomic_load_explicit(&hook_reals_ready, memory_order_acquire)))
        return &hook_real;
    ossl_set_mem_fn set = NULL;
    *(void **)&set = hook_sym(RTLD_NEXT, "CRYPTO_set_mem_functions");
    if (set != NULL)
        hook_load_reals(RTLD_NEXT, set);
    return atomic_load_explicit(&hook_reals_ready, memory_order_acquire) ? &hook_real : NULL;
}

/* hook_probe_interposition allocates through libcrypto's own exported path:
 * BN_set_word on a BN_secure_new() bignum expands it with
 * OPENSSL_secure_zalloc from inside libcrypto (bn_lib.c). If our
 * CRYPTO_secure_zalloc counted the call, internal calls reach us. Returns 1
 * (reached), -1 (bound inside libcrypto) or 0 (cannot tell: symbols missing). */
static int hook_probe_interposition(void *handle) {
    void *(*bn_secure_new)(void) = NULL;
    int (*bn_set_word)(void *, unsigned long) = NULL;
    void (*bn_clear_free)(void *) = NULL;
    *(void **)&bn_secure_new = hook_sym(handle, "BN_secure_new");
    *(void **)&bn_set_word = hook_sym(handle, "BN_set_word");
    *(void **)&bn_clear_free = hook_sym(handle, "BN_clear_free");
    if (bn_secure_new == NULL || bn_set_word == NULL || bn_clear_free == NULL)
        return 0;
    unsigned long before = atomic_load(&hook_probe_hits);
    hook_probing = 1;
    void *bn = bn_secure_new();
    int ok = bn != NULL && bn_set_word(bn, 0x5ec2e7UL);
    if (bn != NULL)
        bn_clear_free(bn);
    hook_probing = 0;
    if (!ok)
        return 0;
    return atomic_load(&hook_probe_hits) != before ? 1 : -1;
}

/* hook_still_ours: our hooks are slot i's libcrypto's allocator right now. A
 * libcrypto unloaded and loaded again at the same address has its default
 * allocator back, so this is the test, not a flag. hook_lock held. */
static bool hook_still_ours(int i) {
    struct hook_lib *L = &hook_libs[i];
    if (!atomic_load(&L->installed))
        return false;
    if (L->get == NULL)
        return true;
    ossl_malloc_fn m = NULL;
    ossl_realloc_fn r = NULL;
    ossl_free_fn f = NULL;
    L->get(&m, &r, &f);
    return m == hook_tramp[i].m;
}

/* hook_install installs our hooks in the libcrypto whose CRYPTO_set_mem_functions
 * is set (found in handle) and checks interposition. hook_lock held. */
static void hook_install(void *handle, ossl_set_mem_fn set, const char *where, bool from_dlopen) {
    int i, free_slot = -1;
    for (i = 0; i < HOOK_MAX_LIBS; i++) {
        if (hook_libs[i].set == set)
            break;
        if (hook_libs[i].set == NULL && free_slot < 0)
            free_slot = i;
    }
    if (i < HOOK_MAX_LIBS && hook_still_ours(i))
        return; /* loaded again while resident (engines, RTLD_NOLOAD) */
    if (i == HOOK_MAX_LIBS) {
        if (free_slot < 0) {
            sh_log(0, "openssl: more than %d libcryptos in one process; the one %s is not hooked", HOOK_MAX_LIBS,
                   where);
            return;
        }
        i = free_slot;
    } else if (atomic_load(&hook_libs[i].installed)) {
        sh_log(1, "openssl: libcrypto %s was unloaded and loaded again: hooking it again", where);
    }
    struct hook_lib *L = &hook_libs[i];
    bool said = L->set == set && L->refusal_said;
    L->set = set;
    *(void **)&L->get = hook_sym(handle, "CRYPTO_get_mem_functions");
    L->from_dlopen = from_dlopen;
    L->refusal_said = said;
    atomic_store(&L->fm, NULL);
    atomic_store(&L->used, 0);
    atomic_store(&L->general, hook_mode == SH_OPENSSL_ALL);
    atomic_store(&L->installed, 0);
    hook_load_reals(handle, set);

    /* The reserve is switched on before the first allocation through our
     * hooks, so that ordinary blocks never take its share; the probe below
     * switches it off again if secure allocations cannot reach us. */
    bool first = hook_real.set_mem_functions == set;
    if (first && hook_mode == SH_OPENSSL_ALL)
        sh_secure_reserve_enable(true);
    int ok = set(hook_tramp[i].m, hook_tramp[i].r, hook_tramp[i].f);
    if (ok) {
        atomic_store(&L->installed, 1);
        atomic_store(&hook_installed, 1);
        atomic_store(&sh_stat_openssl_hooked, hook_mode == SH_OPENSSL_ALL ? 1 : 0);
        sh_log(1, "openssl: hooks installed in libcrypto (%s, mode %s)", where,
               hook_mode == SH_OPENSSL_ALL ? "all" : "secure");
    } else {
        atomic_fetch_add(&hook_refused, 1);
        if (!atomic_load(&hook_installed))
            atomic_store(&sh_stat_openssl_hooked, 2);
        if (!L->refusal_said)
            sh_log(0,
                   "OpenSSL refused CRYPTO_set_mem_functions (%s): it allocated before "
                   "the library was loaded; %s",
                   where,
                   hook_mode == SH_OPENSSL_ALL ? "its ordinary allocations stay in libc memory"
                                               : "a secure block freed with CRYPTO_free would reach libc free");
        L->refusal_said = true;
    }

    /* Only the libcrypto that hook_real points to gets our secure calls. */
    if (!first)
        return;
    int st = hook_probe_interposition(handle);
    atomic_store(&hook_interpose_state, st);
    if (st == 1) {
        atomic_store(&hook_secure_active, 1);
        sh_log(1, "openssl: CRYPTO_secure_* interposed (libcrypto calls them through the PLT)");
        return;
    }
    if (hook_mode == SH_OPENSSL_ALL)
        sh_secure_reserve_enable(false);
    const char *why = st == 0 ? "probe could not run" : "bound inside libcrypto, e.g. -Bsymbolic";
    if (hook_mode == SH_OPENSSL_SECURE && ok) {
        /* The strongest protection left: every allocation of this
         * libcrypto, its secure ones among them, from secret memory. */
        atomic_store(&L->general, 1);
        atomic_store(&hook_secure_fallback, 1);
        atomic_store(&sh_stat_openssl_hooked, 1);
        sh_log(1,
               "openssl: mode secure: CRYPTO_secure_* not interposable (%s); every OpenSSL "
               "allocation is served from secret memory instead (as mode all)",
               why);
    } else if (hook_mode == SH_OPENSSL_SECURE) {
        sh_log(0,
               "OpenSSL mode secure: libcrypto does not call CRYPTO_secure_* through "
               "the PLT (%s) and refused the hooks: secure-heap allocations are not "
               "served from secret memory",
               why);
    } else {
        sh_log(1,
               "openssl: CRYPTO_secure_* not interposable (%s); secure-heap "
               "allocations use the hooks without the reserve",
               why);
    }
}

static void hook_free_next_init(void); /* interposed free and realloc, below */

static void hook_start_once_fn(void) {
    sh_init();
    hook_mode = sh_opt.openssl;
}

/* hook_start initialises the core and reads the mode: only once there is a
 * libcrypto (or a request for the stats report), so that a process without
 * OpenSSL pays nothing for the preload but the loading of the library. */
static void hook_start(void) { pthread_once(&hook_start_once, hook_start_once_fn); }

/* hook_scan hooks the libcrypto reachable from handle, if any. */
static void hook_scan(void *handle, const char *where, bool from_dlopen) {
    ossl_set_mem_fn set = NULL;
    *(void **)&set = hook_sym(handle, "CRYPTO_set_mem_functions");
    /* dlsym on a handle that searches the global scope (dlopen(NULL),
     * RTLD_DEFAULT) finds our own interposed definition: skip it. */
    if (set == NULL || set == hook_self_set)
        return;
    hook_start();
    if (hook_mode == SH_OPENSSL_OFF) {
        /* Nothing to hook, but our interposed functions forward here. */
        hook_load_reals(handle, set);
        return;
    }
    pthread_mutex_lock(&hook_lock);
    hook_install(handle, set, where, from_dlopen);
    pthread_mutex_unlock(&hook_lock);
}

__attribute__((constructor)) static void hook_init(void) {
    hook_free_next_init();
    /* The stats report covers every process when asked for. */
    const char *st = secure_getenv("SECRETHEAP_STATS");
    if (st != NULL && st[0] != '\0')
        hook_start();
    /* RTLD_NEXT finds a libcrypto after us in the global scope (we are
     * preloaded, or linked before it); RTLD_DEFAULT one before us (a program
     * linked -lcrypto -lsecretheap). hook_scan skips our own definition. */
    hook_scan(RTLD_NEXT, "linked at start", false);
    if (!atomic_load(&hook_reals_ready))
        hook_scan(RTLD_DEFAULT, "linked at start", false);
}

/* ---- interposed: dlopen -------------------------------------------------- */

/* hook_caller_map returns the link map of the object holding code address
 * ret, NULL if none. */
static struct link_map *hook_caller_map(const void *ret) {
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(ret, &info, (void **)&lm, RTLD_DL_LINKMAP))
        return NULL;
    return lm;
}

/* hook_search_dirs returns the directories glibc would search for a bare name
 * loaded by lm (RPATH, LD_LIBRARY_PATH, RUNPATH, system directories, with
 * $ORIGIN expanded), malloc'ed; NULL on error. */
static Dl_serinfo *hook_search_dirs(struct link_map *lm) {
    Dl_serinfo size;
    if (dlinfo(lm, RTLD_DI_SERINFOSIZE, &size) != 0)
        return NULL;
    Dl_serinfo *si = malloc(size.dls_size);
    if (si == NULL)
        return NULL;
    si->dls_size = size.dls_size;
    si->dls_cnt = size.dls_cnt;
    if (dlinfo(lm, RTLD_DI_SERINFO, si) != 0) {
        free(si);
        return NULL;
    }
    return si;
}

static bool hook_serinfo_has(const Dl_serinfo *si, const char *dir) {
    for (unsigned i = 0; si != NULL && i < si->dls_cnt; i++)
        if (strcmp(si->dls_serpath[i].dls_name, dir) == 0)
            return true;
    return false;
}

/* hook_origin_path expands $ORIGIN / ${ORIGIN} in a file name with a slash
 * the way glibc does for the calling object: its directory. NULL when there
 * is nothing to expand. */
static char *hook_origin_path(const char *file, struct link_map *lm) {
    const char *tok = strstr(file, "$ORIGIN");
    size_t toklen = 7;
    const char *tok2 = strstr(file, "${ORIGIN}");
    if (tok2 != NULL && (tok == NULL || tok2 < tok))
        tok = tok2, toklen = 9;
    if (tok == NULL || lm == NULL)
        return NULL;
    char self[PATH_MAX];
    const char *obj = lm->l_name;
    if (obj == NULL || obj[0] == '\0') { /* the main program */
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            return NULL;
        self[n] = '\0';
        obj = self;
    }
    const char *slash = strrchr(obj, '/');
    if (slash == NULL)
        return NULL;
    char *out = NULL;
    if (asprintf(&out, "%.*s%.*s%s", (int)(tok - file), file, (int)(slash - obj), obj, tok + toklen) < 0)
        return NULL;
    char *more = hook_origin_path(out, lm); /* several tokens */
    if (more != NULL) {
        free(out);
        out = more;
    }
    return out;
}

/* hook_caller_path keeps dlopen's search the caller's. glibc resolves a file
 * name with the *calling* object's DT_RPATH/DT_RUNPATH and its $ORIGIN, and
 * with our wrapper in between the caller is this library. A bare name is
 * looked up in the caller's search path (dlinfo RTLD_DI_SERINFO: RPATH,
 * LD_LIBRARY_PATH, RUNPATH, system directories); when the first directory
 * holding it is one that our own search also has (LD_LIBRARY_PATH, system
 * directories), the real dlopen is left to find it, so ld.so.cache keeps
 * its place before the system directories. $ORIGIN in a name with a slash
 * is expanded for the caller. Returns a malloc'ed path, or NULL to let the
 * real dlopen search as it would. Not covered: dlmopen namespaces, $LIB and
 * $PLATFORM. */
static char *hook_caller_path(const char *file, int mode, const void *ret) {
    if (file == NULL)
        return NULL;
    struct link_map *lm = hook_caller_map(ret);
    if (strchr(file, '/') != NULL)
        return strchr(file, '$') != NULL ? hook_origin_path(file, lm) : NULL;
    if (lm == NULL || lm->l_ld == NULL)
        return NULL;
    bool has_path = false;
    for (const ElfW(Dyn) *d = lm->l_ld; d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_RPATH || d->d_tag == DT_RUNPATH)
            has_path = true;
    if (!has_path)
        return NULL;
    /* A resident object is found by name without any search. */
    void *h = hook_real_dlopen_fn(file, (mode & ~(RTLD_LAZY | RTLD_NOW)) | RTLD_LAZY | RTLD_NOLOAD);
    if (h != NULL) {
        dlclose(h);
        return NULL;
    }
    Dl_serinfo *si = hook_search_dirs(lm);
    if (si == NULL)
        return NULL;
    struct link_map *mine = hook_caller_map((const void *)hook_caller_path);
    Dl_serinfo *own = mine != NULL ? hook_search_dirs(mine) : NULL;
    char *found = NULL;
    for (unsigned i = 0; i < si->dls_cnt; i++) {
        char *p;
        if (asprintf(&p, "%s/%s", si->dls_serpath[i].dls_name, file) < 0)
            break;
        if (access(p, F_OK) == 0) {
            if (!hook_serinfo_has(own, si->dls_serpath[i].dls_name))
                found = p;
            else
                free(p);
            break;
        }
        free(p);
    }
    free(own);
    free(si);
    return found;
}

SH_EXPORT void *dlopen(const char *file, int mode) {
    hook_dl_ready();
    char *path = hook_caller_path(file, mode, __builtin_return_address(0));
    hook_dlopen_depth++;
    void *h = hook_real_dlopen_fn(path != NULL ? path : file, mode);
    hook_dlopen_depth--;
    free(path);
    if (h != NULL && file != NULL && hook_dlopen_depth == 0)
        hook_scan(h, "dlopen", true);
    return h;
}

/* ---- interposed: dlsym --------------------------------------------------- */

/* hook_dlsym_guard: dlsym(handle, "CRYPTO_set_mem_functions") on a handle of a
 * libcrypto we hooked (Python's ctypes, plugins that bypass the PLT) gets
 * that slot's guard (hook_s<i>) instead of libcrypto's own function, which
 * would replace our hooks while blocks of ours are live. NULL: let the real
 * dlsym answer. Also makes sure the real dlsym is known. */
SH_HIDDEN void *hook_dlsym_guard(void *handle, const char *name);
HOOK_EARLY void *hook_dlsym_guard(void *handle, const char *name) {
    hook_dl_ready();
    static const char want[] = "CRYPTO_set_mem_functions";
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof want; i++) /* not strcmp: see HOOK_EARLY */
        if (name[i] != want[i])
            return NULL;
    /* The global scope (RTLD_DEFAULT, RTLD_NEXT from the program) finds our
     * interposer first anyway. */
    if (handle == RTLD_DEFAULT || handle == RTLD_NEXT)
        return NULL;
    void *sym = hook_real_dlsym_fn(handle, name);
    if (sym == NULL || sym == (void *)(uintptr_t)hook_self_set)
        return NULL;
    void *guard = NULL;
    pthread_mutex_lock(&hook_lock);
    for (int i = 0; i < HOOK_MAX_LIBS; i++)
        if ((void *)(uintptr_t)hook_libs[i].set == sym && atomic_load(&hook_libs[i].installed))
            guard = (void *)(uintptr_t)hook_tramp[i].s;
    pthread_mutex_unlock(&hook_lock);
    return guard;
}

#if defined(__x86_64__)
/* dlsym itself decides RTLD_NEXT (and the namespace) by its return address,
 * so the interposer must not be a frame of its own: it asks hook_dlsym_guard
 * and then jumps to the real dlsym with the caller's arguments and return
 * address untouched. */
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym, @function\n"
        ".p2align 4\n"
        "dlsym:\n"
        "	.cfi_startproc\n"
        "	endbr64\n"
        "	pushq %rdi\n"
        "	.cfi_adjust_cfa_offset 8\n"
        "	pushq %rsi\n"
        "	.cfi_adjust_cfa_offset 8\n"
        "	subq $8, %rsp\n"
        "	.cfi_adjust_cfa_offset 8\n"
        "	call hook_dlsym_guard\n"
        "	addq $8, %rsp\n"
        "	.cfi_adjust_cfa_offset -8\n"
        "	popq %rsi\n"
        "	.cfi_adjust_cfa_offset -8\n"
        "	popq %rdi\n"
        "	.cfi_adjust_cfa_offset -8\n"
        "	testq %rax, %rax\n"
        "	jnz 1f\n"
        "	jmpq *hook_real_dlsym_fn(%rip)\n"
        "1:	ret\n"
        "	.cfi_endproc\n"
        ".size dlsym, .-dlsym\n");
#endif

/* ---- interposed: free and realloc ---------------------------------------- */

#ifndef SH_NO_FREE_INTERPOSE
/*
 * A block of ours that reaches libc's free or realloc (code that does not
 * know where the block came from: a static libcrypto freeing what a
 * dlopen'ed one allocated, a program freeing an OPENSSL_malloc block with
 * free) would make glibc abort with "free(): invalid pointer". The library
 * interposes both: a pointer inside the arena is released (wiped) or
 * reallocated by the core, counted as misuse and named once on stderr;
 * anything else goes to the next definition (libc's, or another allocator
 * preloaded after us), found in the constructor. The check is one
 * subtraction and compare, and nothing at all before the arena exists.
 * (The C tests include this file into sanitized programs, whose runtime
 * must keep its own free: they define SH_NO_FREE_INTERPOSE.)
 */
extern void __libc_free(void *);
extern void *__libc_realloc(void *, size_t);
static void (*hook_next_free)(void *);
static void *(*hook_next_realloc)(void *, size_t);
static atomic_int hook_foreign_said;

static void hook_foreign(const char *what) {
    atomic_fetch_add(&sh_stat_misuse, 1);
    if (!atomic_exchange(&hook_foreign_said, 1))
        sh_log(0,
               "%s() of a block from secret memory (secretheap's, handed out through OpenSSL "
               "or the C API) by code that does not know it: handled by the library; "
               "counted as misuse",
               what);
}

static void hook_free_next_init(void) {
    void (*f)(void *) = NULL;
    void *(*r)(void *, size_t) = NULL;
    *(void **)&f = hook_sym(RTLD_NEXT, "free");
    *(void **)&r = hook_sym(RTLD_NEXT, "realloc");
    __atomic_store_n(&hook_next_realloc, r, __ATOMIC_RELEASE);
    __atomic_store_n(&hook_next_free, f, __ATOMIC_RELEASE);
}

SH_EXPORT void free(void *p) {
    if (sh_unlikely(sh_in_arena((uintptr_t)p))) {
        hook_foreign("free");
        secretheap_free(p);
        return;
    }
    void (*f)(void *) = __atomic_load_n(&hook_next_free, __ATOMIC_ACQUIRE);
    if (sh_likely(f != NULL))
        f(p);
    else
        __libc_free(p); /* before our constructor ran */
}

SH_EXPORT void *realloc(void *p, size_t n) {
    if (sh_unlikely(sh_in_arena((uintptr_t)p))) {
        hook_foreign("realloc");
        return secretheap_realloc(p, n);
    }
    void *(*r)(void *, size_t) = __atomic_load_n(&hook_next_realloc, __ATOMIC_ACQUIRE);
    return sh_likely(r != NULL) ? r(p, n) : __libc_realloc(p, n);
}
#else
static void hook_free_next_init(void) {}
#endif

/* ---- interposed: CRYPTO_set_mem_functions -------------------------------- */

/* hook_set_for decides a CRYPTO_set_mem_functions call aimed at slot L's
 * libcrypto. The outcome is what the caller is told:
 *  - our hooks are not its allocator (it refused them): OpenSSL answers;
 *  - it was in the process at start (the program's own libcrypto): 0, the
 *    answer OpenSSL gives once it is too late to change the allocator; our
 *    hooks stay, so no block of ours ever reaches their free;
 *  - it arrived by dlopen and has not allocated through our hooks yet (an
 *    engine's or provider's libcrypto next to a static host, whose bind
 *    function shares the host's allocator this way; OpenSSL would accept
 *    too): 1, honoured — new blocks come from their allocator, ours still
 *    come back to us;
 *  - it arrived by dlopen but has allocated: 0, refused with a named
 *    message (as OpenSSL refuses once it allocated; in mode all their free
 *    would receive our blocks otherwise). */
static int hook_set_for(struct hook_lib *L, ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f, const char *how) {
    pthread_mutex_lock(&hook_lock);
    int i = (int)(L - hook_libs);
    if (L->set == NULL || !hook_still_ours(i)) {
        ossl_set_mem_fn set = L->set;
        pthread_mutex_unlock(&hook_lock);
        return set != NULL ? set(m, r, f) : 0;
    }
    int rc = 0;
    if (m == hook_tramp[i].m && r == hook_tramp[i].r && f == hook_tramp[i].f) {
        rc = 1; /* ours again: nothing changes */
    } else if (m == NULL || r == NULL || f == NULL) {
        sh_log(0, "openssl: CRYPTO_set_mem_functions (%s) with a NULL function refused", how);
    } else if (!L->from_dlopen) {
        if (atomic_fetch_add(&hook_set_refused, 1) == 0)
            sh_log(1,
                   "openssl: CRYPTO_set_mem_functions (%s) refused (answered 0): "
                   "secretheap's hooks stay in the program's libcrypto",
                   how);
    } else if (atomic_load(&L->used)) {
        atomic_fetch_add(&hook_set_refused, 1);
        sh_log(1,
               "openssl: CRYPTO_set_mem_functions (%s) refused (answered 0): the dlopen'ed "
               "libcrypto has allocated already (its blocks, from secret memory in mode "
               "all, must not reach the new allocator's free)",
               how);
    } else {
        atomic_store_explicit(&L->fr, r, memory_order_relaxed);
        atomic_store_explicit(&L->ff, f, memory_order_relaxed);
        atomic_store_explicit(&L->fm, m, memory_order_release);
        atomic_fetch_add(&hook_set_honoured, 1);
        sh_log(1,
               "openssl: CRYPTO_set_mem_functions (%s) honoured for a dlopen'ed libcrypto: "
               "its new blocks come from the caller's allocator",
               how);
        rc = 1;
    }
    pthread_mutex_unlock(&hook_lock);
    return rc;
}

/* hook_target_of returns the CRYPTO_set_mem_functions the code at ret would
 * call without us: the first definition in its object's own dependency tree
 * (dlsym on a handle of that object does not search the global scope), or
 * NULL when that search finds ours (the object sees the global scope). */
static ossl_set_mem_fn hook_target_of(const void *ret) {
    struct link_map *lm = hook_caller_map(ret);
    if (lm == NULL)
        return NULL;
    hook_dl_ready();
    void *h = hook_real_dlopen_fn(lm->l_name != NULL && lm->l_name[0] ? lm->l_name : NULL, RTLD_LAZY | RTLD_NOLOAD);
    if (h == NULL)
        return NULL;
    ossl_set_mem_fn set = NULL;
    *(void **)&set = hook_real_dlsym_fn(h, "CRYPTO_set_mem_functions");
    dlclose(h);
    return set == hook_self_set ? NULL : set;
}

SH_EXPORT int CRYPTO_set_mem_functions(ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f) {
    ossl_set_mem_fn set = hook_target_of(__builtin_return_address(0));
    if (set == NULL) {
        const struct ossl_reals *real = hook_reals();
        set = real != NULL ? real->set_mem_functions : NULL;
    }
    if (set == NULL)
        return 0;
    struct hook_lib *L = NULL;
    pthread_mutex_lock(&hook_lock);
    for (int i = 0; i < HOOK_MAX_LIBS; i++)
        if (hook_libs[i].set == set)
            L = &hook_libs[i];
    pthread_mutex_unlock(&hook_lock);
    return L != NULL ? hook_set_for(L, m, r, f, "called") : set(m, r, f);
}

/* ---- interposed: the secure-heap API ------------------------------------- */

static inline int hook_secure_on(void) {
    return atomic_load_explicit(&hook_secure_active, memory_order_relaxed) || hook_probing;
}

static void *hook_secure_alloc(size_t num) {
    if (hook_probing) /* the start-up probe is not the program's call */
        atomic_fetch_add(&hook_probe_hits, 1);
    else
        hook_count(HOOK_CALL_SECURE_ALLOC);
    if (num == 0)
        return NULL;
    /* In mode all the secure reserve keeps these out of the fallback. */
    void *p = hook_mode == SH_OPENSSL_ALL ? sh_malloc_secure(num) : secretheap_malloc(num);
    if (p == NULL)
        return NULL;
    if (hook_ours(p))
        atomic_fetch_add_explicit(&hook_secure_live, (long)secretheap_usable_size(p), memory_order_relaxed);
    else
        memset(p, 0, num); /* libc fallback memory is not pre-zeroed */
    return p;
}

static void hook_secure_release(void *p) {
    if (!hook_probing)
        hook_count(HOOK_CALL_SECURE_FREE);
    atomic_fetch_sub_explicit(&hook_secure_live, (long)secretheap_usable_size(p), memory_order_relaxed);
    secretheap_free(p);
}

SH_EXPORT void *CRYPTO_secure_malloc(size_t num, const char *file, int line) {
    if (hook_secure_on())
        return hook_secure_alloc(num);
    const struct ossl_reals *real = hook_reals();
    if (real != NULL && real->secure_malloc != NULL)
        return real->secure_malloc(num, file, line);
    return num != 0 ? malloc(num) : NULL; /* what OpenSSL does with its arena off */
}

SH_EXPORT void *CRYPTO_secure_zalloc(size_t num, const char *file, int line) {
    if (hook_secure_on())
        return hook_secure_alloc(num); /* our blocks are zero when handed out */
    const struct ossl_reals *real = hook_reals();
    if (real != NULL && real->secure_zalloc != NULL)
        return real->secure_zalloc(num, file, line);
    return num != 0 ? calloc(1, num) : NULL;
}

SH_EXPORT void CRYPTO_secure_free(void *p, const char *file, int line) {
    if (p == NULL)
        return;
    if (hook_ours(p)) {
        hook_secure_release(p);
        return;
    }
    const struct ossl_reals *real = hook_reals();
    if (real != NULL && real->secure_free != NULL)
        real->secure_free(p, file, line);
    else
        free(p);
}

SH_EXPORT void CRYPTO_secure_clear_free(void *p, size_t num, const char *file, int line) {
    if (p == NULL)
        return;
    if (hook_ours(p)) {
        hook_secure_release(p); /* the core wipes the whole block */
        return;
    }
    const struct ossl_reals *real = hook_reals();
    if (real != NULL && real->secure_clear_free != NULL)
        real->secure_clear_free(p, num, file, line);
    else
        free(p);
}

/* 1 for a block of ours while our secure service is on: it lives in secret
 * memory, as protected as OpenSSL's arena or more. libcrypto asks this to
 * keep copies of secrets secure (OSSL_PARAM_BLD, OSSL_PARAM_dup), so a 0
 * would send those copies to libc memory. In mode all every OpenSSL block is
 * ours, so the answer is 1 for OPENSSL_malloc blocks too (they are as
 * protected). One caller is told 0: libcrypto's own CRYPTO_secure_free and
 * CRYPTO_secure_clear_free, which are reached with our block only when a
 * caller bypassed our interposers (dlsym on a libcrypto handle); on 0 they
 * hand it to CRYPTO_free, whose hooks bring it back to us, instead of
 * freeing it into an arena that was never built. */
SH_EXPORT int CRYPTO_secure_allocated(const void *p) {
    if (hook_secure_on() && hook_ours(p)) {
        uintptr_t ret = (uintptr_t)__builtin_return_address(0);
        const struct ossl_reals *real = hook_reals();
        if (real != NULL &&
            ((ret >= real->free_lo && ret < real->free_hi) || (ret >= real->clear_lo && ret < real->clear_hi)))
            return 0;
        return 1;
    }
    const struct ossl_reals *real = hook_reals();
    return real != NULL && real->secure_allocated != NULL ? real->secure_allocated(p) : 0;
}

/* 1 while our service is on, from the start (code that asks first, the DRBG
 * among it, then takes its secure path into secret memory), except after a
 * successful CRYPTO_secure_malloc_done and before the next init, as OpenSSL
 * documents. Allocations stay in secret memory in that window. */
SH_EXPORT int CRYPTO_secure_malloc_initialized(void) {
    if (hook_secure_on())
        return !atomic_load(&hook_app_done);
    const struct ossl_reals *real = hook_reals();
    return real != NULL && real->secure_malloc_initialized != NULL ? real->secure_malloc_initialized() : 0;
}

/* hook_real_arena_on: OpenSSL's own arena exists. Its CRYPTO_secure_used and
 * CRYPTO_secure_actual_size take the arena's lock without checking, and
 * crash when it was never built (which is always the case once our
 * CRYPTO_secure_malloc_init answered instead). */
static bool hook_real_arena_on(const struct ossl_reals *real) {
    return real != NULL && real->secure_malloc_initialized != NULL && real->secure_malloc_initialized();
}

SH_EXPORT size_t CRYPTO_secure_actual_size(void *p) {
    if (hook_ours(p))
        return secretheap_usable_size(p);
    const struct ossl_reals *real = hook_reals();
    return hook_real_arena_on(real) && real->secure_actual_size != NULL ? real->secure_actual_size(p) : 0;
}

SH_EXPORT size_t CRYPTO_secure_used(void) {
    long ours = atomic_load_explicit(&hook_secure_live, memory_order_relaxed);
    size_t n = ours > 0 ? (size_t)ours : 0;
    const struct ossl_reals *real = hook_reals();
    if (hook_real_arena_on(real) && real->secure_used != NULL)
        n += real->secure_used();
    return n;
}

/* While our service is active OpenSSL's own arena is not built: our blocks
 * are already secret memory, and the arena would hold RLIMIT_MEMLOCK for
 * nothing. 1 is OpenSSL's "initialised" answer. */
SH_EXPORT int CRYPTO_secure_malloc_init(size_t size, size_t minsize) {
    if (hook_secure_on()) {
        atomic_store(&hook_app_done, 0);
        return 1;
    }
    const struct ossl_reals *real = hook_reals();
    return real != NULL && real->secure_malloc_init != NULL ? real->secure_malloc_init(size, minsize) : 0;
}

/* Done succeeds (1) when no secure block is live, as OpenSSL's does; then
 * initialized answers 0 until the next init. */
SH_EXPORT int CRYPTO_secure_malloc_done(void) {
    if (hook_secure_on()) {
        if (atomic_load(&hook_secure_live) > 0)
            return 0;
        atomic_store(&hook_app_done, 1);
        return 1;
    }
    const struct ossl_reals *real = hook_reals();
    return real != NULL && real->secure_malloc_done != NULL ? real->secure_malloc_done() : 0;
}

/* ---- stats ------------------------------------------------------------- */

/* sh_openssl_stats fills the OpenSSL hooks' values of the stats report (the table
 * of internal/stats; stats.c prints them after the core's block). */
void sh_openssl_stats(struct sh_openssl_stats *out) {
    static const char *const modes[] = {"all", "secure", "off"};
    static const char *const interp[] = {"bound-inside-libcrypto", "unknown", "yes"};
    long live = atomic_load(&hook_secure_live);
    out->mode = modes[hook_mode];
    out->hooks = atomic_load(&hook_installed) ? "yes" : "no";
    out->refused = (uint64_t)atomic_load(&hook_refused);
    out->secure_interposed = interp[atomic_load(&hook_interpose_state) + 1];
    /* Who serves OpenSSL's secure-heap allocations from secret memory. */
    out->secure_served_by = atomic_load(&hook_secure_active)                              ? "interposition"
                            : atomic_load(&hook_secure_fallback)                          ? "general-hooks"
                            : hook_mode == SH_OPENSSL_ALL && atomic_load(&hook_installed) ? "general-hooks"
                                                                                          : "none";
    out->malloc_calls = hook_sum(HOOK_CALL_MALLOC);
    out->realloc_calls = hook_sum(HOOK_CALL_REALLOC);
    out->free_calls = hook_sum(HOOK_CALL_FREE);
    out->secure_alloc_calls = hook_sum(HOOK_CALL_SECURE_ALLOC);
    out->secure_free_calls = hook_sum(HOOK_CALL_SECURE_FREE);
    out->secure_live_bytes = live > 0 ? (uint64_t)live : 0;
    out->set_mem_functions_refused = atomic_load(&hook_set_refused);
    out->set_mem_functions_honoured = atomic_load(&hook_set_honoured);
}
