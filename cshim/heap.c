/*
 * heap.c — the slab allocator and the public allocation API. See
 * alloc/doc.go for the design essay; the short version:
 *
 * malloc(n), n ≤ 32 KiB:
 *   1. class = size-class table lookup (no search);
 *   2. pop a block from this thread's magazine for the class: no lock, no
 *      atomic read-modify-write, no system call; record n+1 in the block's
 *      out-of-band req slot (a relaxed store) — this marks it live;
 *   3. magazine empty: refill up to half of it under the class lock from
 *      the partial slabs this thread owns, else from unowned ones (which
 *      it then owns), taking a new slab (pmdcache.c) only when nothing was
 *      found (a refill is worth no commit of its own).
 * Secure requests (sh_malloc_secure, secure reserve on) skip magazines and
 * take one block from the class's secure slabs under the class lock.
 * free(p):
 *   1. p outside the arena → a fallback block (fallback.c: wiped, freed)
 *      or not ours → a named abort before anything is written;
 *   2. chunk = slot table[(p - arena) >> 22], span = pagemap[OS page];
 *      index by multiply; not on a block boundary → interior-pointer abort;
 *   3. exchange the req slot with 0; it was already 0 → double-free abort;
 *   4. wipe the whole block, push it on the magazine; a full magazine
 *      gives its older half back to the slabs under the class lock.
 * Blocks in magazines are free and already wiped, so malloc never zeroes:
 * every block is zero because every free wiped it (and fresh OS pages are
 * zero). Requests of 32 KiB+1 .. 1 MiB take an OS-page run of a chunk,
 * larger ones a region of their own; both are wiped whole on free.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sched.h>

#include "internal.h"
#include "heap.h"

/* NULL: not created yet. DEAD: the thread-exit destructor ran; frees go
 * straight to the slabs. initial-exec: one %fs-relative load, no
 * __tls_get_addr (the library is preloaded or linked, never dlopen'ed late). */
#define TC_DEAD ((struct sh_tcache *)1)
_Thread_local struct sh_tcache *sh_tls_cache __attribute__((tls_model("initial-exec")));

struct sh_class sh_classes[SH_NUM_CLASSES];
pthread_mutex_t sh_tc_mu = PTHREAD_MUTEX_INITIALIZER;
struct sh_tcache *sh_tc_list;     /* guarded by sh_tc_mu */
static struct sh_tcache *tc_pool; /* caches of exited threads, for reuse; guarded by sh_tc_mu */
/* Sections open by threads without a cache (before it exists, after their
 * exit destructor ran). */
static _Atomic uint32_t untracked_busy;
static pthread_key_t tc_key;
static _Atomic bool reserve_enabled;
void (*sh_test_hook_release)(void); /* set once by the OpenSSL hooks (mode all) */

/*
 * Magazine capacity per class: 16 KiB of blocks, between 4 and 32 blocks.
 * 32 small blocks make a refill (one lock round trip, ~100 ns) cost ~6 ns
 * per allocation at worst and nothing in alloc/free pairs. The byte bound
 * matters for memory: cached blocks are scattered over slabs and keep them
 * (and their committed OS pages) in use. An s_server after 100 TLS 1.3
 * handshakes commits 1,652 KiB with this bound, 1,912 KiB with 64 KiB/64
 * blocks, against 1,085 KiB of peak live OpenSSL bytes (ossl_peak.so).
 */
static uint32_t mag_cap[SH_NUM_CLASSES];

static inline unsigned size_class(size_t n) {
    if (n <= SH_SMALL_LOOKUP_MAX)
        return sh_size_to_class16[(n + 15) >> 4];
    return sh_size_to_class128[(n + 127) >> 7];
}

static void tcache_destroy(void *arg);

bool sh_wipe_avx2_ok;

#if defined(__x86_64__)
#include <immintrin.h>
/* See sh_wipe_block. The empty asm that takes p and clobbers memory keeps
 * the stores (as explicit_bzero's barrier does). */
__attribute__((target("avx2"))) void sh_wipe_avx2(void *p, size_t n) {
    __m256i z = _mm256_setzero_si256();
    char *c = p, *end = c + n;
    for (; c + 128 <= end; c += 128) {
        _mm256_storeu_si256((__m256i *)c, z);
        _mm256_storeu_si256((__m256i *)(c + 32), z);
        _mm256_storeu_si256((__m256i *)(c + 64), z);
        _mm256_storeu_si256((__m256i *)(c + 96), z);
    }
    for (; c < end; c += 32)
        _mm256_storeu_si256((__m256i *)c, z);
    __asm__ __volatile__("" : : "r"(p) : "memory");
}
#else
void sh_wipe_avx2(void *p, size_t n) { explicit_bzero(p, n); }
#endif

/* Not __builtin_cpu_supports: it links libgcc's __cpu_indicator_init, a
 * constructor that runs CPUID in every process the library is loaded into
 * (CPUID traps to the hypervisor in a VM: ~0.1 ms, most of the preload's
 * start-up cost in a process that never uses it). glibc's ld.so has read
 * the CPU's features already. */
#if defined(__x86_64__) && __has_include(<sys/platform/x86.h>)
#include <sys/platform/x86.h>
static bool cpu_has_avx2(void) { return CPU_FEATURE_ACTIVE(AVX2); }
#elif defined(__x86_64__)
static bool cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

/* The heap's part of process initialisation (init.c sh_init calls it once). */
void sh_heap_init(void) {
#if defined(__x86_64__)
    sh_wipe_avx2_ok = cpu_has_avx2();
#endif
    for (int i = 0; i < SH_NUM_CLASSES; i++) {
        pthread_mutex_init(&sh_classes[i].mu, NULL);
        uint32_t c = (16u << 10) / sh_class_size[i];
        mag_cap[i] = c < 4 ? 4 : c > 32 ? 32 : c;
    }
    pthread_key_create(&tc_key, tcache_destroy);
}

void sh_secure_reserve_enable(bool on) {
    sh_init();
    atomic_store_explicit(&reserve_enabled, on, memory_order_relaxed);
    sh_secure_reserve_set(on);
}

/* Called with sh_tc_mu held, which it releases: lists tc as a live cache
 * and makes it the calling thread's. */
static struct sh_tcache *tcache_publish(struct sh_tcache *tc) {
    tc->next = sh_tc_list;
    if (sh_tc_list)
        sh_tc_list->prev = tc;
    sh_tc_list = tc;
    pthread_mutex_unlock(&sh_tc_mu);
    pthread_setspecific(tc_key, tc);
    sh_tls_cache = tc;
    return tc;
}

static struct sh_tcache *tcache_create(void) {
    sh_init();
    pthread_mutex_lock(&sh_tc_mu);
    struct sh_tcache *tc = tc_pool;
    if (tc) {
        /* An exited thread's cache: magazines and own lists are empty
         * (tcache_destroy), full slabs that still name it become ours. */
        tc_pool = tc->next;
        atomic_store_explicit(&tc->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&tc->dead, false, memory_order_relaxed);
        tc->prev = NULL;
        return tcache_publish(tc);
    }
    pthread_mutex_unlock(&sh_tc_mu);
    size_t n = 0;
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        n += mag_cap[i];
    size_t sz = sizeof(struct sh_tcache) + n * sizeof(struct sh_mag_item);
    sz = (sz + SH_OS_PAGE - 1) & ~(SH_OS_PAGE - 1);
    tc = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc == MAP_FAILED)
        return NULL;
    tc->map_size = sz;
    struct sh_mag_item *it = tc->storage;
    for (int i = 0; i < SH_NUM_CLASSES; i++) {
        tc->mags[i].cap = mag_cap[i];
        tc->mags[i].items = it;
        it += mag_cap[i];
    }
    pthread_mutex_lock(&sh_tc_mu);
    return tcache_publish(tc);
}

/* ---- sections (fork.c: the gate) ----
 *
 * A section is code that writes secret memory or moves blocks without a
 * lock: the magazine pop of malloc's fast path, the req exchange, wipe and
 * magazine push of free, an in-place shrink. The thread marks its cache
 * busy (a plain store), then reads the gate (one load); the forking thread
 * closes the gate, runs membarrier (every thread executes a full barrier,
 * so a section either sees the closed gate or is seen busy), and waits
 * until no cache is busy (sh_heap_prefork). Cost on the fast path: two
 * plain stores and a load, no fence, no atomic read-modify-write.
 */
static inline void sec_mark(struct sh_tcache *tc) {
    if (sh_likely((uintptr_t)tc > (uintptr_t)TC_DEAD)) {
        /* A flag (sections do not nest; a signal handler that allocates
         * inside one is undefined behaviour in any malloc). */
        atomic_store_explicit(&tc->busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* the forker's barrier orders it (fork.c barrier_all) */
    } else {
        atomic_fetch_add(&untracked_busy, 1);
    }
}

static inline void sec_leave(struct sh_tcache *tc) {
    if (sh_likely((uintptr_t)tc > (uintptr_t)TC_DEAD))
        atomic_store_explicit(&tc->busy, 0, memory_order_release);
    else
        atomic_fetch_sub_explicit(&untracked_busy, 1, memory_order_release);
}

static inline uint32_t gate_load(void) { return atomic_load_explicit(sh_gate(), memory_order_relaxed); }

/* Outside any section: waits while a fork is copying, makes an unseen fork
 * child private. 0, or SH_GATE_CLOSED (allocator closed in this child). */
static __attribute__((noinline)) int gate_pass_slow(uint32_t g) {
    for (;;) {
        int r = sh_fork_gate_wait(g);
        if (r == SH_GATE_CLOSED)
            return r;
        if (r == SH_GATE_PASS || (g = gate_load()) == SH_GATE_OPEN)
            return 0;
    }
}

static inline int gate_pass(void) {
    uint32_t g = gate_load();
    return sh_likely(g == SH_GATE_OPEN) ? 0 : gate_pass_slow(g);
}

int sh_fork_gate_check(void) { return gate_pass(); }

/* Opens a section: 0, or SH_GATE_CLOSED (no section open). */
static __attribute__((noinline)) int sec_enter_slow(struct sh_tcache *tc, uint32_t g) {
    for (;;) {
        sec_leave(tc);
        int r = sh_fork_gate_wait(g);
        if (r == SH_GATE_CLOSED)
            return r;
        sec_mark(tc);
        if (r == SH_GATE_PASS || (g = gate_load()) == SH_GATE_OPEN)
            return 0;
    }
}

static inline int sec_enter(struct sh_tcache *tc) {
    sec_mark(tc);
    uint32_t g = gate_load();
    return sh_likely(g == SH_GATE_OPEN) ? 0 : sec_enter_slow(tc, g);
}

/* ---- misuse ---- */

static _Noreturn void misuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void misuse(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&sh_stat_misuse, 1);
    sh_fatal("%s", buf);
}

/* ---- central (per-class) free lists ---- */

/* Secure slabs (taken for the secure reserve) have a list of their own:
 * ordinary refills never see their blocks. An owned slab is on its owner's
 * list. */
static inline struct sh_span **list_of(struct sh_class *k, const struct sh_span *s) {
    if (s->secure)
        return &k->spartial;
    return s->owner ? &s->owner->own[s->cls] : &k->partial;
}

static inline void partial_push(struct sh_class *k, struct sh_span *s) {
    if (s->owner && atomic_load_explicit(&s->owner->dead, memory_order_relaxed))
        s->owner = NULL; /* a full slab of an exited thread: nobody's now */
    struct sh_span **head = list_of(k, s);
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
    s->listed = 1;
    k->nlisted[s->secure != 0]++;
}

static inline void partial_remove(struct sh_class *k, struct sh_span *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        *list_of(k, s) = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->listed = 0;
    k->nlisted[s->secure != 0]--;
}

/* Gives a listed slab to owner (NULL: nobody), moving it between lists. */
static void set_owner(struct sh_class *k, struct sh_span *s, struct sh_tcache *owner) {
    if (s->owner == owner)
        return;
    if (!s->listed) {
        s->owner = owner;
        return;
    }
    partial_remove(k, s);
    s->owner = owner;
    partial_push(k, s);
}

/*
 * The slab a refill takes from, class lock held: the first on the thread's
 * own list, else one nobody owns, else a new one if carve, else (secret
 * memory exhausted) NULL — a secure request may then take an ordinary
 * block nobody owns. The refill makes the slab the thread's (take_blocks).
 * Owning slabs keeps each thread's blocks — and their req slots, 32 to a
 * cache line, and the slab's bitmap and counters — apart from other
 * threads', so two threads do not bounce cache lines between them; and a
 * thread reuses the free blocks of its own slabs before a new slab is
 * carved. (Taking the first owned slab among the first 8 of one class-wide
 * list instead carved new slabs whenever the other thread's slabs filled
 * those 8: two churn threads committed 1.75 times their live bytes, one
 * thread 1.35 times.)
 */
/*
 * OS pages of a new slab of class cls. A class's first slab is short (a
 * quarter of the generated slab, at least one block): a short-lived program
 * uses many classes a little — `openssl version` touches 17 classes for
 * 74 KB of peak live blocks — and a full slab of a large class (8 OS pages
 * for 8192 B) costs ~20 µs per OS page to commit for one or two blocks.
 * Later slabs have the generated size.
 */
static uint32_t slab_pages(const struct sh_class *k, unsigned cls) {
    uint32_t pages = sh_class_slab_pages[cls];
    if (k->slabs != 0 || pages == 1)
        return pages;
    uint32_t one = (uint32_t)((sh_class_size[cls] + SH_OS_PAGE - 1) / SH_OS_PAGE);
    return pages / 4 > one ? pages / 4 : one;
}

static struct sh_span *refill_slab(struct sh_class *k, unsigned cls, struct sh_tcache *self, bool secure, bool carve) {
    if (secure && k->spartial)
        return k->spartial;
    if (!secure && self && self->own[cls])
        return self->own[cls];
    if (!secure && k->partial)
        return k->partial;
    if (!carve)
        return NULL;
    struct sh_span *s = sh_span_alloc(slab_pages(k, cls), SH_SPAN_SLAB, (int)cls, secure);
    if (s) {
        k->slabs++;
        partial_push(k, s);
        return s;
    }
    /* Exhausted: a secure request whose reserve is used up may take an
     * ordinary block too (ordinary requests adopt other threads' slabs:
     * adopt_slabs). */
    return secure ? k->partial : NULL;
}

/* Moves up to want blocks of class cls into items[*count..]; class lock
 * held. A new slab is carved only while nothing was taken: filling a
 * magazine is worth no commit, the next refill carves when it must. */
static void take_blocks(struct sh_class *k, unsigned cls, struct sh_tcache *self, struct sh_mag_item *items,
                        uint32_t *count, uint32_t want, bool secure) {
    while (*count < want) {
        struct sh_span *s = refill_slab(k, cls, self, secure, *count == 0);
        if (!s)
            return;
        if (!s->secure)
            set_owner(k, s, self);
        /* Highest index first onto the stack, so pops go up in address. */
        for (int w = 3; w >= 0 && *count < want; w--) {
            while (s->freebits[w] && *count < want) {
                int b = 63 - __builtin_clzll(s->freebits[w]);
                s->freebits[w] &= ~(1ULL << b);
                uint32_t idx = (uint32_t)(w * 64 + b);
                s->nfree--;
                items[*count].p = (void *)(s->start + (uintptr_t)idx * s->block_size);
                items[*count].req = &s->req[idx];
                (*count)++;
            }
        }
        if (s->nfree == 0)
            partial_remove(k, s);
    }
}

/* Returns free (wiped) blocks to their slabs; a slab that becomes wholly free
 * goes back to its chunk unless it is the class's only partial slab. */
static void put_blocks(unsigned cls, const struct sh_mag_item *items, uint32_t n) {
    struct sh_class *k = &sh_classes[cls];
    struct sh_span *release = NULL;
    pthread_mutex_lock(&k->mu);
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)items[i].p;
        struct sh_chunk *c = sh_chunk_of(p);
        struct sh_span *s = atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_acquire);
        uint32_t idx = (uint32_t)(items[i].req - s->req);
        s->freebits[idx >> 6] |= 1ULL << (idx & 63);
        s->nfree++;
        if (!s->listed)
            partial_push(k, s);
        if (s->nfree == s->nblocks && k->nlisted[s->secure != 0] > 1) {
            partial_remove(k, s);
            k->slabs--;
            s->owner = NULL;
            s->next = release;
            release = s;
        }
    }
    pthread_mutex_unlock(&k->mu);
    if (sh_unlikely(release != NULL && sh_test_hook_release != NULL))
        sh_test_hook_release();
    while (release) {
        struct sh_span *s = release;
        release = s->next;
        /* Tail bytes after the last block are never handed out; wipe them
         * anyway so that a stray overflow cannot leak into the next span. */
        size_t used = (size_t)s->nblocks * s->block_size;
        size_t tail = (size_t)s->npages * SH_OS_PAGE - used;
        if (tail)
            sh_wipe((void *)(s->start + used), tail);
        sh_span_free(s);
    }
}

/* ---- exhaustion ---- */

/*
 * Secret memory refused a request of n bytes (the cause is sh_fail_cause,
 * set by pmdcache.c), or closed: an unseen fork child's allocator that cannot
 * be trusted (fork.c). A refusal that is not a used-up budget never gets
 * other memory (a NULL and one warning per cause; an abort under
 * SECRETHEAP_BACKEND=secret). Otherwise the SECRETHEAP_ON_EXHAUSTED policy:
 * null is counted and reported once (a NULL nobody hears of looks like a
 * bug in the program), abort names the cause, fallback serves the fallback
 * pool (fallback.c).
 */
static void *exhausted(size_t n, bool closed) {
    /* Only a used-up budget (memlock, SECRETHEAP_LIMIT) is exhaustion; any
     * other cause (pmdcache.c sets sh_fail_cause) is never papered over with
     * ordinary memory: no kernel support under BACKEND=secret, a denied
     * call, no descriptors, no mappings, a closed descriptor. */
    int cause = closed ? SH_CAUSE_NONE : sh_fail_cause;
    if (!closed && cause != SH_CAUSE_MEMLOCK && cause != SH_CAUSE_LIMIT && cause != SH_CAUSE_ARENA) {
        if (sh_opt.on_exhausted == SH_EXH_ABORT || sh_opt.backend == SH_POLICY_SECRET)
            sh_fatal("secret memory refused for a %zu-byte request: %s; %s", n, sh_cause_text(cause),
                     sh_opt.backend == SH_POLICY_SECRET ? "SECRETHEAP_BACKEND=secret refuses any other memory"
                                                        : "SECRETHEAP_ON_EXHAUSTED=abort");
        static _Atomic uint32_t warned;
        if (!(atomic_fetch_or(&warned, 1u << cause) & (1u << cause)))
            sh_log(0,
                   "WARNING: secret memory refused for a %zu-byte request: %s; returning NULL (this cause never "
                   "falls back to ordinary memory; stats: failures_%s)",
                   n, sh_cause_text(cause), sh_cause_name(cause));
        errno = ENOMEM;
        return NULL;
    }
    switch (sh_opt.on_exhausted) {
    case SH_EXH_NULL:
        if (atomic_fetch_add(&sh_stat_exhausted_returns, 1) == 0)
            sh_log(0,
                   "secret memory exhausted (RLIMIT_MEMLOCK headroom or SECRETHEAP_LIMIT) for a %zu-byte "
                   "request: returning NULL (SECRETHEAP_ON_EXHAUSTED=null); further ones are only counted "
                   "(stats: exhausted_returns)",
                   n);
        errno = ENOMEM;
        return NULL;
    case SH_EXH_ABORT:
        sh_fatal("secret memory exhausted for a %zu-byte request: %s; and SECRETHEAP_ON_EXHAUSTED=abort", n,
                 closed ? "the allocator is closed in this fork child" : sh_cause_text(cause));
    default:
        break;
    }
    if (atomic_fetch_add(&sh_stat_fallbacks, 1) == 0)
        sh_log(0,
               "WARNING: secret memory exhausted for a %zu-byte request: %s; serving it from the fallback pool, "
               "ordinary memory (not in a core dump, wiped on free, but readable like any other) "
               "(SECRETHEAP_ON_EXHAUSTED=fallback); further fallbacks are only counted (stats: fallbacks)",
               n, closed ? "the allocator is closed in this fork child" : sh_cause_text(cause));
    void *p = sh_fallback_alloc(n);
    if (!p)
        atomic_fetch_add(&sh_stat_exhausted_returns, 1);
    return p;
}

/* ---- allocation ---- */

static __attribute__((noinline)) void check_zero_failed(void *p, unsigned cls) {
    misuse("write after free: block %p (class %u B) changed while it was free", p, sh_class_size[cls]);
}

static inline void check_zero(void *p, unsigned cls) {
    const uint64_t *w = p;
    for (uint32_t i = 0; i < sh_class_size[cls] / 8; i++)
        if (w[i])
            check_zero_failed(p, cls);
}

/*
 * Out of secret memory: give this thread's cached blocks back first, so
 * slabs that are wholly free return to their chunks and can be reused by
 * another class (a magazine holds up to 64 KiB per class, as much as a
 * whole chunk under a 64 KiB RLIMIT_MEMLOCK). Returns true if anything was
 * given back (worth a retry).
 */
static bool flush_own_magazines(void) {
    struct sh_tcache *tc = sh_tls_cache;
    bool any = false;
    if ((uintptr_t)tc <= (uintptr_t)TC_DEAD)
        return false;
    for (unsigned i = 0; i < SH_NUM_CLASSES; i++) {
        if (tc->mags[i].count) {
            put_blocks(i, tc->mags[i].items, tc->mags[i].count);
            tc->mags[i].count = 0;
            any = true;
        }
    }
    return any;
}

/*
 * Out of secret memory and nothing free in this thread's or unowned slabs:
 * other threads' slabs of class cls become unowned (the next refill takes
 * from them) rather than the request failing while they hold free blocks.
 * Returns true if any slab was adopted.
 */
static bool adopt_slabs(unsigned cls, struct sh_tcache *self) {
    struct sh_class *k = &sh_classes[cls];
    bool any = false;
    pthread_mutex_lock(&sh_tc_mu);
    pthread_mutex_lock(&k->mu);
    for (struct sh_tcache *tc = sh_tc_list; tc; tc = tc->next)
        while (tc != self && tc->own[cls]) {
            set_owner(k, tc->own[cls], NULL);
            any = true;
        }
    pthread_mutex_unlock(&k->mu);
    pthread_mutex_unlock(&sh_tc_mu);
    return any;
}

static bool trim_empty_slabs(void);

static __attribute__((noinline)) void *malloc_small_slow(size_t n, unsigned cls, bool secure) {
    if (sh_unlikely(gate_pass() != 0))
        return exhausted(n, true);
    struct sh_tcache *tc = sh_tls_cache;
    if (tc == NULL)
        tc = tcache_create();
    struct sh_class *k = &sh_classes[cls];
    struct sh_mag_item it;
    uint32_t got = 0;
    if (secure) {
        /* Secure reserve: one block from a secure slab, no magazine (free
         * puts it straight back too), so ordinary requests never get it. */
        sh_init();
        pthread_mutex_lock(&k->mu);
        take_blocks(k, cls, NULL, &it, &got, 1, true);
        pthread_mutex_unlock(&k->mu);
        if (!got && flush_own_magazines()) {
            pthread_mutex_lock(&k->mu);
            take_blocks(k, cls, NULL, &it, &got, 1, true);
            pthread_mutex_unlock(&k->mu);
        }
    } else if (tc != NULL && tc != TC_DEAD) {
        struct sh_mag *m = &tc->mags[cls];
        pthread_mutex_lock(&k->mu);
        take_blocks(k, cls, tc, m->items, &m->count, m->cap / 2 ? m->cap / 2 : 1, secure);
        pthread_mutex_unlock(&k->mu);
        if (m->count == 0 && (flush_own_magazines() || adopt_slabs(cls, tc))) {
            pthread_mutex_lock(&k->mu);
            take_blocks(k, cls, tc, m->items, &m->count, 1, secure);
            pthread_mutex_unlock(&k->mu);
        }
        if (m->count) {
            it = m->items[--m->count];
            got = 1;
        }
    } else {
        sh_init();
        pthread_mutex_lock(&k->mu);
        take_blocks(k, cls, NULL, &it, &got, 1, secure);
        pthread_mutex_unlock(&k->mu);
        if (!got && adopt_slabs(cls, NULL)) {
            pthread_mutex_lock(&k->mu);
            take_blocks(k, cls, NULL, &it, &got, 1, secure);
            pthread_mutex_unlock(&k->mu);
        }
    }
    if (!got)
        return exhausted(n, false);
    if (sh_unlikely(sh_opt.check_zero))
        check_zero(it.p, cls);
    atomic_store_explicit(it.req, (uint16_t)(n + 1), memory_order_relaxed);
    return it.p;
}

static __attribute__((noinline)) void *malloc_large(size_t n, bool secure) {
    if (n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    sh_init();
    if (sh_unlikely(gate_pass() != 0))
        return exhausted(n, true);
    size_t arena = atomic_load_explicit(&sh_arena_size, memory_order_relaxed);
    if (n > arena / 2) {
        /* No budget could ever hold it: a size error, not exhaustion (no
         * fallback, not counted as one). Named once: a 40 GiB request used to
         * read as "secret memory exhausted ... RLIMIT_MEMLOCK". */
        static _Atomic bool warned;
        if (!atomic_exchange(&warned, true))
            sh_log(0,
                   "a %zu-byte request is larger than secret memory can ever hold in this process (half of "
                   "the %zu MiB arena): returning NULL (ENOMEM)",
                   n, arena >> 20);
        errno = ENOMEM;
        return NULL;
    }
    struct sh_span *s = NULL;
    size_t pages = (n + SH_OS_PAGE - 1) / SH_OS_PAGE;
    if (n <= SH_LARGE_MIN) {
        s = sh_span_alloc((uint32_t)pages, SH_SPAN_RUN, 0, secure);
        /* Under memlock pressure chunks can be smaller than the run: a
         * region of exactly the run's size may still fit. */
        if (!s && errno == ENOMEM)
            s = sh_large_alloc(n, secure);
    } else {
        s = sh_large_alloc(n, secure);
    }
    if (!s && errno == ENOMEM && (flush_own_magazines() || trim_empty_slabs()))
        return malloc_large(n, secure);
    if (!s)
        return exhausted(n, false);
    atomic_store_explicit(&s->run_req, n + 1, memory_order_relaxed);
    return (void *)s->start;
}

static inline void *malloc_impl(size_t n, bool secure) {
    if (secure)
        return n <= SH_MAX_SMALL_SIZE ? malloc_small_slow(n, size_class(n), true) : malloc_large(n, true);
    if (sh_likely(n <= SH_MAX_SMALL_SIZE)) {
        unsigned cls = size_class(n);
        struct sh_tcache *tc = sh_tls_cache;
        if (sh_likely((uintptr_t)tc > (uintptr_t)TC_DEAD)) {
            struct sh_mag *m = &tc->mags[cls];
            if (sh_likely(m->count != 0)) {
                sec_mark(tc);
                if (sh_likely(gate_load() == SH_GATE_OPEN)) {
                    struct sh_mag_item it = m->items[m->count - 1];
                    m->count--;
                    if (sh_unlikely(sh_opt.check_zero))
                        check_zero(it.p, cls);
                    atomic_store_explicit(it.req, (uint16_t)(n + 1), memory_order_relaxed);
                    sec_leave(tc);
                    return it.p;
                }
                sec_leave(tc); /* the slow path passes the gate */
            }
        }
        return malloc_small_slow(n, cls, secure);
    }
    return malloc_large(n, secure);
}

void *secretheap_malloc(size_t n) { return malloc_impl(n, false); }

void *sh_malloc_secure(size_t n) {
    return malloc_impl(n, atomic_load_explicit(&reserve_enabled, memory_order_relaxed));
}

void *secretheap_calloc(size_t nmemb, size_t size) {
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc_impl(n, false); /* every block is already zero */
}

/* ---- free ---- */

/* A pointer inside the arena that is not a live block: name what it is. */
static __attribute__((noinline, noreturn)) void bad_free(uintptr_t p, const char *op) {
    struct sh_chunk *c = sh_chunk_of(p);
    if (!c)
        misuse("%s of %#lx: inside the secretheap arena but in no live chunk (double free of a released "
               "region, or a wild pointer)",
               op, (unsigned long)p);
    struct sh_span *s =
        c->large ? &c->spans[0]
                 : atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_relaxed);
    if ((!s || s->kind == SH_SPAN_FREE) && (p & (SH_OS_PAGE - 1)) == 0)
        misuse("double %s of %#lx (no live block on that OS page of chunk %#lx: a page run freed twice, or a "
               "wild pointer)",
               op, (unsigned long)p, (unsigned long)c->base);
    if (!s || s->kind == SH_SPAN_FREE)
        misuse("%s of %#lx: a free OS page of chunk %#lx that holds no block (a wild pointer, or a block of a "
               "slab already given back)",
               op, (unsigned long)p, (unsigned long)c->base);
    if (s->kind == SH_SPAN_SLAB) {
        uintptr_t off = p - s->start;
        uint32_t idx = sh_block_index(s, off);
        uintptr_t block = s->start + (uintptr_t)idx * s->block_size;
        if (idx >= s->nblocks)
            misuse("%s of %#lx: in the unused tail of a slab (class %u B)", op, (unsigned long)p, s->block_size);
        if (block != p)
            misuse("%s of interior pointer %#lx (block %#lx, class %u B)", op, (unsigned long)p, (unsigned long)block,
                   s->block_size);
        misuse("double %s of %#lx (class %u B)", op, (unsigned long)p, s->block_size);
    }
    if (p != s->start)
        misuse("%s of interior pointer %#lx (block %#lx, %s of %zu KiB)", op, (unsigned long)p, (unsigned long)s->start,
               s->kind == SH_SPAN_RUN ? "page run" : "large region", (size_t)s->npages * 4);
    misuse("double %s of %#lx (%s of %zu KiB)", op, (unsigned long)p,
           s->kind == SH_SPAN_RUN ? "page run" : "large region", (size_t)s->npages * 4);
}

/* A pointer outside the arena: a fallback block (wiped and freed), or
 * nothing of ours — rejected before anything is written. libc's free would
 * take a foreign pointer for a chunk header, and realloc used to zero the
 * usable size libc read there (512 KiB of a shared file mapping). */
static __attribute__((noinline)) void free_outside(void *ptr, const char *op) {
    if (sh_fallback_owns(ptr)) {
        sh_fallback_free(ptr, op);
        return;
    }
    misuse("%s of %#lx: not a block of secretheap (outside its arena and its fallback pool: memory from "
           "malloc(3), mmap or the stack?); nothing was written",
           op, (unsigned long)(uintptr_t)ptr);
}

/* Called inside free's section; leaves it once the span is wiped. */
static __attribute__((noinline)) void free_span(uintptr_t p, struct sh_span *s, struct sh_tcache *tc) {
    if (s == NULL || s->kind == SH_SPAN_FREE || p != s->start)
        bad_free(p, "free");
    size_t req = atomic_exchange_explicit(&s->run_req, 0, memory_order_relaxed);
    if (req == 0)
        bad_free(p, "free");
    sh_wipe((void *)s->start, (size_t)s->npages * SH_OS_PAGE);
    sec_leave(tc);
    if (s->kind == SH_SPAN_LARGE)
        sh_large_free(s);
    else
        sh_span_free(s);
}

static __attribute__((noinline)) void free_slow(void *ptr, struct sh_span *s, uint32_t idx) {
    struct sh_tcache *tc = sh_tls_cache;
    struct sh_mag_item it = {ptr, &s->req[idx]};
    if (tc == NULL || tc == TC_DEAD || s->secure) {
        /* After this thread's cache was destroyed (thread-exit destructors),
         * or if it could not be created, or a block of a secure slab (kept
         * out of magazines): straight back to the slab. */
        put_blocks(s->cls, &it, 1);
        return;
    }
    struct sh_mag *m = &tc->mags[s->cls];
    if (m->count == m->cap) {
        /* Give back the older (bottom) half; keep the recently freed, hot half. */
        uint32_t half = m->cap / 2 ? m->cap / 2 : 1;
        put_blocks(s->cls, m->items, half);
        memmove(m->items, m->items + half, (m->count - half) * sizeof *m->items);
        m->count -= half;
    }
    m->items[m->count] = it;
    atomic_signal_fence(memory_order_release); /* a fork snapshot sees the item before the count */
    m->count++;
}

void secretheap_free(void *ptr) {
    uintptr_t p = (uintptr_t)ptr;
    uintptr_t off = p - atomic_load_explicit(&sh_arena_base, memory_order_relaxed);
    if (sh_unlikely(off >= atomic_load_explicit(&sh_arena_size, memory_order_relaxed))) {
        if (ptr)
            free_outside(ptr, "free");
        return;
    }
    struct sh_tcache *tc = sh_tls_cache;
    if (sh_unlikely(tc == NULL)) {
        if (gate_pass() != 0)
            return;
        tc = tcache_create(); /* before the section: it takes sh_tc_mu */
    }
    /* The section covers the exchange, the wipe and the magazine push; the
     * lookups come after it is open, since an unseen fork child's first call
     * changes the heap (fork.c). A closed allocator ignores the free: the
     * block is private to this child, but its state cannot be trusted. */
    if (sh_unlikely(sec_enter(tc) != 0))
        return;
    struct sh_chunk *c = atomic_load_explicit(&sh_slots[off >> SH_SLOT_SHIFT], memory_order_acquire);
    if (sh_unlikely(c == NULL || p >= c->end || c->large || c->lost)) {
        if (c && c->lost) {
            sec_leave(tc);
            return; /* fork child under dontfork: the block went with the parent's mapping */
        }
        if (c && c->large && p < c->end) {
            free_span(p, &c->spans[0], tc);
            return;
        }
        bad_free(p, "free");
    }
    struct sh_span *s = atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_acquire);
    if (sh_unlikely(s == NULL || s->kind != SH_SPAN_SLAB)) {
        free_span(p, s, tc);
        return;
    }
    uintptr_t boff = p - s->start;
    uint32_t idx = sh_block_index(s, boff);
    if (sh_unlikely((uintptr_t)idx * s->block_size != boff || idx >= s->nblocks))
        bad_free(p, "free");
    /* An atomic exchange (one locked instruction, ~5 ns): of two threads
     * freeing the same block at the same time exactly one sees it live, so
     * a racing double free is caught too, not handed out twice later. */
    if (sh_unlikely(atomic_exchange_explicit(&s->req[idx], 0, memory_order_relaxed) == 0))
        bad_free(p, "free");
    sh_wipe_block(ptr, s->block_size);
    if (sh_likely((uintptr_t)tc > (uintptr_t)TC_DEAD && !s->secure)) {
        struct sh_mag *m = &tc->mags[s->cls];
        if (sh_likely(m->count < m->cap)) {
            m->items[m->count].p = ptr;
            m->items[m->count].req = &s->req[idx];
            atomic_signal_fence(memory_order_release);
            m->count++;
            sec_leave(tc);
            return;
        }
    }
    sec_leave(tc); /* the rest takes locks */
    free_slow(ptr, s, idx);
}

/* ---- realloc, usable size, backend ---- */

/* The span in use that holds p, or NULL (no chunk, a chunk lost in a fork
 * child, a free OS page); *cp its chunk. */
static struct sh_span *span_at(uintptr_t p, struct sh_chunk **cp) {
    struct sh_chunk *c = sh_chunk_of(p);
    if (!c || c->lost)
        return NULL;
    struct sh_span *s =
        c->large ? &c->spans[0]
                 : atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_relaxed);
    if (!s || s->kind == SH_SPAN_FREE)
        return NULL;
    *cp = c;
    return s;
}

/* The live block at p (exactly its start), or NULL; *usable its size. */
static struct sh_span *live_block(uintptr_t p, size_t *usable, uint32_t *idxp) {
    struct sh_chunk *c;
    struct sh_span *s = span_at(p, &c);
    if (!s)
        return NULL;
    if (s->kind == SH_SPAN_SLAB) {
        uintptr_t off = p - s->start;
        uint32_t idx = sh_block_index(s, off);
        if ((uintptr_t)idx * s->block_size != off || idx >= s->nblocks ||
            atomic_load_explicit(&s->req[idx], memory_order_relaxed) == 0)
            return NULL;
        *usable = s->block_size;
        *idxp = idx;
        return s;
    }
    if (p != s->start || atomic_load_explicit(&s->run_req, memory_order_relaxed) == 0)
        return NULL;
    *usable = (size_t)s->npages * SH_OS_PAGE;
    *idxp = 0;
    return s;
}

/* A shrink in place wipes in a section, as free does. */
static void realloc_wipe(void *p, size_t n) {
    struct sh_tcache *tc = sh_tls_cache;
    if (sec_enter(tc) == 0) {
        sh_wipe(p, n);
        sec_leave(tc);
    }
}

void *secretheap_realloc(void *ptr, size_t n) {
    if (ptr == NULL)
        return secretheap_malloc(n);
    if (n == 0) {
        secretheap_free(ptr);
        return NULL;
    }
    if (n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t p = (uintptr_t)ptr;
    if (!sh_in_arena(p)) {
        /* A fallback block: into secret memory if there is room again (or
         * another fallback block), the old one wiped. Anything else is
         * rejected before a byte is read or written. */
        size_t old = sh_fallback_usable(ptr);
        if (old == 0)
            free_outside(ptr, "realloc"); /* not a live fallback block: aborts */
        void *q = secretheap_malloc(n);
        if (!q)
            return NULL;
        memcpy(q, ptr, old < n ? old : n);
        sh_fallback_free(ptr, "realloc");
        return q;
    }
    if (sh_unlikely(gate_pass() != 0)) {
        /* An unseen fork child's closed allocator: the old block stays where
         * it is (private, never freed); its bytes move to what the
         * exhaustion policy gives. */
        size_t old = 0;
        uint32_t oi;
        if (!live_block(p, &old, &oi))
            old = 0;
        void *q = exhausted(n, true);
        if (q && old)
            memcpy(q, ptr, old < n ? old : n);
        return q;
    }
    struct sh_chunk *c = sh_chunk_of(p);
    if (c && c->lost)
        sh_fatal("realloc of %#lx: the block was lost at fork (SECRETHEAP_FORK=dontfork)", (unsigned long)p);
    size_t usable;
    uint32_t idx;
    struct sh_span *s = live_block(p, &usable, &idx);
    if (!s)
        bad_free(p, "realloc");
    /* Resized in place: a shrink wipes what it gives up, so the secret bytes
     * are gone now rather than at free, and a later grow shows zeros past the
     * old size, as a fresh block would. */
    if (s->kind == SH_SPAN_SLAB) {
        if (n <= SH_MAX_SMALL_SIZE && size_class(n) == s->cls) {
            size_t old = (size_t)atomic_load_explicit(&s->req[idx], memory_order_relaxed) - 1;
            if (n < old)
                realloc_wipe((char *)ptr + n, old - n);
            atomic_store_explicit(&s->req[idx], (uint16_t)(n + 1), memory_order_relaxed);
            return ptr;
        }
    } else if (n <= usable && n > SH_MAX_SMALL_SIZE && n > usable / 2) {
        size_t old = (size_t)atomic_load_explicit(&s->run_req, memory_order_relaxed) - 1;
        if (n < old)
            realloc_wipe((char *)ptr + n, old - n);
        atomic_store_explicit(&s->run_req, n + 1, memory_order_relaxed);
        return ptr;
    }
    void *q = secretheap_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, ptr, usable < n ? usable : n);
    secretheap_free(ptr); /* wipes the old block */
    return q;
}

size_t secretheap_usable_size(const void *ptr) {
    size_t usable;
    uint32_t idx;
    if (!ptr)
        return 0;
    if (!sh_in_arena((uintptr_t)ptr))
        return sh_fallback_usable(ptr);
    return live_block((uintptr_t)ptr, &usable, &idx) ? usable : 0;
}

int secretheap_backend(const void *ptr) {
    uintptr_t p = (uintptr_t)ptr;
    if (ptr && !sh_in_arena(p))
        return sh_fallback_usable(ptr) ? SECRETHEAP_BACKEND_FALLBACK : SECRETHEAP_BACKEND_NONE;
    struct sh_chunk *c;
    struct sh_span *s = span_at(p, &c);
    if (!s)
        return SECRETHEAP_BACKEND_NONE;
    if (s->kind == SH_SPAN_SLAB) {
        uint32_t idx = sh_block_index(s, p - s->start);
        if (idx >= s->nblocks || atomic_load_explicit(&s->req[idx], memory_order_relaxed) == 0)
            return SECRETHEAP_BACKEND_NONE;
    } else if (atomic_load_explicit(&s->run_req, memory_order_relaxed) == 0) {
        return SECRETHEAP_BACKEND_NONE;
    }
    return c->backend;
}

/* ---- thread exit, fork ---- */

/*
 * Thread exit, in time proportional to the thread's own cache, never to the
 * heap (walking every span with every lock held took 2.6–5 ms with 512 MiB
 * live in 64-byte blocks): its magazines go back to their slabs, the
 * partial slabs on its own lists become unowned, and its cache goes to the
 * pool, marked dead. Full slabs that still name it as owner are not looked
 * for: the cache is never unmapped, and the first block freed into such a
 * slab lists it as unowned (partial_push); a new thread that reuses the
 * cache owns them.
 *
 * Each class keeps its last empty slab (put_blocks), so that a class whose
 * live count swings around zero does not give back and re-carve a slab
 * every time; but the kept slabs of 40 classes end up scattered over as
 * many chunks, which then can never become wholly free (a soak ended with 9
 * chunks, 18 MiB committed, holding nothing but empty slabs, against an
 * idle bound of 2). So the chunks of the exiting thread's empty slabs, and
 * of the first few unowned empty slabs of each class (a slab whose owner
 * exited before another thread freed its last block), are looked at: one whose spans are all
 * empty listed slabs gives them all back, becomes wholly free, and
 * SECRETHEAP_IDLE_CHUNKS decides whether it stays. Empty slabs in chunks
 * that hold anything in use (a live block, a block in some thread's
 * magazine, a page run) cost no chunk and stay.
 */
#define TRIM_MAX 64
struct trim {
    struct sh_chunk *cand[TRIM_MAX]; /* chunks to look at */
    unsigned n;
    struct sh_span *release; /* linked through next (off their list) */
};
static bool trim_run(struct trim *t);
/* Chunk lock and every class lock held. The walk stops at the first span
 * in use: a candidate chunk that holds anything (in a heap of small blocks,
 * its first span, mostly) costs one look, not its 512 pages (a chunk full
 * of 64-byte slabs made the exit's destructor cost 4.0 us with 512 MiB live
 * against 3.2 us with 1 MiB; now 1.6 us in both). */
static bool trim_check(struct sh_span *s, void *arg) {
    bool *only_kept = arg;
    if (s->kind != SH_SPAN_SLAB || s->nfree != s->nblocks || !s->listed || s->secure)
        *only_kept = false;
    return *only_kept;
}
static bool trim_collect(struct sh_span *s, void *arg) {
    struct trim *t = arg;
    struct sh_class *k = &sh_classes[s->cls];
    partial_remove(k, s);
    k->slabs--;
    s->owner = NULL;
    s->next = t->release;
    t->release = s;
    return true;
}
static void trim_candidate(struct trim *t, const struct sh_span *s) {
    if (s->nfree != s->nblocks || t->n >= TRIM_MAX)
        return;
    for (unsigned j = 0; j < t->n; j++)
        if (t->cand[j] == s->chunk)
            return;
    t->cand[t->n++] = s->chunk;
}
/* Unowned empty slabs looked at per class: the kept slab of a class whose
 * blocks were freed by a thread that did not own the slab (its owner had
 * exited) sits near the head of the unowned list. */
#define TRIM_UNOWNED_LOOK 4
static void disown(struct sh_tcache *self) {
    struct trim t = {.n = 0, .release = NULL};
    for (unsigned i = 0; i < SH_NUM_CLASSES; i++) {
        struct sh_class *k = &sh_classes[i];
        pthread_mutex_lock(&k->mu);
        while (self->own[i]) {
            struct sh_span *s = self->own[i];
            trim_candidate(&t, s);
            set_owner(k, s, NULL);
        }
        /* Bounded, so an exit stays O(own cache + classes), not O(heap). */
        unsigned look = 0;
        for (struct sh_span *s = k->partial; s && look < TRIM_UNOWNED_LOOK; s = s->next, look++)
            trim_candidate(&t, s);
        pthread_mutex_unlock(&k->mu);
    }
    trim_run(&t);
}

/* Gives back every candidate chunk that holds nothing but empty listed
 * slabs (checked again under every class lock and the chunk lock): its
 * slabs return to the chunk, which becomes wholly free. Returns whether any
 * slab was given back. */
static bool trim_run(struct trim *t) {
    if (t->n == 0)
        return false;
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        pthread_mutex_lock(&sh_classes[i].mu);
    sh_chunk_lock();
    for (unsigned j = 0; j < t->n; j++) {
        bool only_kept = true;
        sh_chunk_foreach_span_in(t->cand[j], trim_check, &only_kept);
        if (only_kept)
            sh_chunk_foreach_span_in(t->cand[j], trim_collect, t);
    }
    sh_chunk_unlock();
    for (int i = SH_NUM_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&sh_classes[i].mu);
    bool any = t->release != NULL;
    while (t->release) {
        struct sh_span *s = t->release;
        t->release = s->next;
        s->next = NULL;
        size_t used = (size_t)s->nblocks * s->block_size;
        size_t tail = (size_t)s->npages * SH_OS_PAGE - used;
        if (tail)
            sh_wipe((void *)(s->start + used), tail);
        sh_span_free(s);
    }
    return any;
}

static void trim_gather(struct sh_span *s, void *arg) {
    if (s->kind == SH_SPAN_SLAB && s->listed && !s->secure)
        trim_candidate(arg, s);
}

/*
 * Out of secret memory: the kept empty slabs of every class, wherever they
 * are, may pin chunks that hold nothing else (each class keeps one, other
 * threads' flushed magazines leave more), so a budget of a few chunks can
 * be all pinned with nothing live and a large region falls back. Here,
 * on the exhaustion path only (the walk is O(heap), under every lock),
 * every such chunk is given back; the caller retries, and the large path
 * drops the now idle chunks. Returns whether anything was given back.
 */
static bool trim_empty_slabs(void) {
    struct trim t = {.n = 0, .release = NULL};
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        pthread_mutex_lock(&sh_classes[i].mu);
    sh_chunk_lock();
    sh_chunk_foreach_span(trim_gather, &t);
    sh_chunk_unlock();
    for (int i = SH_NUM_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&sh_classes[i].mu);
    return trim_run(&t);
}

static void tcache_destroy(void *arg) {
    struct sh_tcache *tc = arg;
    sh_tls_cache = TC_DEAD;
    for (unsigned i = 0; i < SH_NUM_CLASSES; i++) {
        if (tc->mags[i].count)
            put_blocks(i, tc->mags[i].items, tc->mags[i].count);
        tc->mags[i].count = 0;
    }
    /* Dead before its lists are emptied: from here on no slab is listed on
     * them (partial_push), and disown takes every class lock after this. */
    atomic_store_explicit(&tc->dead, true, memory_order_relaxed);
    disown(tc);
    pthread_mutex_lock(&sh_tc_mu);
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        sh_tc_list = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    tc->prev = NULL;
    tc->next = tc_pool;
    tc_pool = tc;
    pthread_mutex_unlock(&sh_tc_mu);
}

/* The gate is closed and every thread has seen it (fork.c prepare): wait
 * for the sections opened before that. A section takes no sh_tc_mu (free
 * creates its cache before opening one), so holding it here is safe. */
static void wait_sections(void) {
    for (struct sh_tcache *tc = sh_tc_list; tc; tc = tc->next)
        for (unsigned spin = 0; atomic_load(&tc->busy) != 0; spin++)
            if (spin > 64)
                sched_yield();
    for (unsigned spin = 0; atomic_load(&untracked_busy) != 0; spin++)
        if (spin > 64)
            sched_yield();
}

void sh_heap_prefork(void) {
    pthread_mutex_lock(&sh_tc_mu);
    wait_sections();
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        pthread_mutex_lock(&sh_classes[i].mu);
}

bool sh_heap_trylock_all(void) {
    if (pthread_mutex_trylock(&sh_tc_mu) != 0)
        return false;
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        if (pthread_mutex_trylock(&sh_classes[i].mu) != 0) {
            while (--i >= 0)
                pthread_mutex_unlock(&sh_classes[i].mu);
            pthread_mutex_unlock(&sh_tc_mu);
            return false;
        }
    if (sh_chunk_trylock() != 0) {
        sh_heap_postfork_parent();
        return false;
    }
    return true;
}

void sh_heap_postfork_parent(void) {
    for (int i = SH_NUM_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&sh_classes[i].mu);
    pthread_mutex_unlock(&sh_tc_mu);
}

/*
 * Child, copy policy, after the orphans were put back. Another thread may
 * have been between two steps of a lock-free path when the address space
 * was copied; that thread does not exist here, so its step is finished for
 * it:
 *  - a slab block with req 0 that is neither in the bitmap nor in our
 *    magazine (popped but not yet marked live, or wiped but not yet pushed)
 *    is free: wipe it and give it back;
 *  - a page run or large region with run_req 0 (returned by the chunk layer
 *    but not yet marked live by malloc_large, or cleared by free_span but
 *    not yet given back) is free: wipe it and give it back;
 *  - a slab with every block free that is on no class list was taken off it
 *    by put_blocks to be released (k->slabs already counts it out): release
 *    it. Only put_blocks makes such a slab (a slab with a free block is
 *    always listed, and put_blocks keeps the only empty one listed).
 * The child is single-threaded here, so the class state is touched under
 * the chunk lock alone; spans to give back are collected (linked through
 * next, unused by runs and by a slab off its list) and released after it.
 */
static void mark_none(struct sh_span *s, void *arg) {
    (void)arg;
    s->check_mag = 0;
}
struct reclaim {
    struct sh_tcache *self;
    struct sh_span *release; /* spans to give back after the chunk lock */
};
static void reclaim_span(struct sh_span *s, void *arg) {
    struct reclaim *rc = arg;
    if (s->kind != SH_SPAN_SLAB) {
        if (atomic_load_explicit(&s->run_req, memory_order_relaxed) == 0) {
            s->next = rc->release;
            rc->release = s;
        }
        return;
    }
    if (!s->listed && s->nfree == s->nblocks) {
        s->check_mag = 0;
        s->next = rc->release;
        rc->release = s;
        return;
    }
    if (s->owner != rc->self)
        set_owner(&sh_classes[s->cls], s, NULL); /* owned by a thread that does not exist here */
    struct sh_class *k = &sh_classes[s->cls];
    for (uint32_t i = 0; i < s->nblocks; i++) {
        if (atomic_load_explicit(&s->req[i], memory_order_relaxed) != 0 || (s->freebits[i >> 6] & (1ULL << (i & 63))))
            continue;
        if (s->check_mag) {
            /* In our magazine? (check_mag counts them; look them up.) */
            struct sh_mag *m = &sh_tls_cache->mags[s->cls];
            bool cached = false;
            for (uint32_t j = 0; j < m->count && !cached; j++)
                cached = m->items[j].req == &s->req[i];
            if (cached)
                continue;
        }
        sh_wipe((void *)(s->start + (uintptr_t)i * s->block_size), s->block_size);
        s->freebits[i >> 6] |= 1ULL << (i & 63);
        s->nfree++;
        if (!s->listed)
            partial_push(k, s);
    }
    s->check_mag = 0;
}
static void reclaim_in_transit(struct sh_tcache *self) {
    sh_chunk_lock();
    sh_chunk_foreach_span(mark_none, NULL);
    if ((uintptr_t)self > (uintptr_t)TC_DEAD)
        for (unsigned cls = 0; cls < SH_NUM_CLASSES; cls++)
            for (uint32_t j = 0; j < self->mags[cls].count; j++) {
                uintptr_t p = (uintptr_t)self->mags[cls].items[j].p;
                struct sh_chunk *c = sh_chunk_of(p);
                struct sh_span *s =
                    atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_relaxed);
                s->check_mag = 1;
            }
    struct reclaim rc = {self, NULL};
    sh_chunk_foreach_span(reclaim_span, &rc);
    sh_chunk_unlock();
    while (rc.release) {
        struct sh_span *s = rc.release;
        rc.release = s->next;
        s->next = NULL;
        if (s->kind == SH_SPAN_SLAB) {
            size_t used = (size_t)s->nblocks * s->block_size;
            sh_wipe((void *)(s->start + used), (size_t)s->npages * SH_OS_PAGE - used);
            sh_span_free(s);
        } else if (s->kind == SH_SPAN_LARGE) {
            sh_large_free(s); /* wipes as it unmaps */
        } else {
            sh_wipe((void *)s->start, (size_t)s->npages * SH_OS_PAGE);
            sh_span_free(s);
        }
    }
}

static void unown_others(struct sh_span *s, void *self) {
    if (s->kind == SH_SPAN_SLAB && s->owner != self)
        set_owner(&sh_classes[s->cls], s, NULL);
}

/*
 * Child: the forking thread is the only one left. Magazines of the other
 * threads are orphans: under copy their blocks are put back (each validated:
 * the owner may have been anywhere in a lock-free push or pop when the
 * address space was copied); under dontfork every slab went with the
 * parent's mappings, so all class state starts afresh.
 */
void sh_heap_postfork_child(bool lost_chunks) {
    struct sh_tcache *self = sh_tls_cache;
    struct sh_tcache *orphans = NULL;
    for (struct sh_tcache *tc = sh_tc_list, *next; tc; tc = next) {
        next = tc->next;
        if (tc == self)
            continue;
        tc->next = orphans;
        orphans = tc;
    }
    if ((uintptr_t)self > (uintptr_t)TC_DEAD) {
        self->next = self->prev = NULL;
        sh_tc_list = self;
    } else {
        sh_tc_list = NULL;
    }
    /* The orphans' slabs, listed or not, become unowned before their
     * caches are unmapped (and before put_blocks lists any of them). */
    sh_chunk_lock();
    sh_chunk_foreach_span(unown_others, self);
    sh_chunk_unlock();
    if (lost_chunks) {
        for (int i = 0; i < SH_NUM_CLASSES; i++) {
            sh_classes[i].partial = NULL;
            sh_classes[i].spartial = NULL;
            sh_classes[i].slabs = 0;
            sh_classes[i].nlisted[0] = sh_classes[i].nlisted[1] = 0;
            if ((uintptr_t)self > (uintptr_t)TC_DEAD) {
                self->mags[i].count = 0;
                self->own[i] = NULL;
            }
        }
    }
    for (int i = SH_NUM_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&sh_classes[i].mu);
    pthread_mutex_unlock(&sh_tc_mu);
    for (struct sh_tcache *tc = orphans, *next; tc; tc = next) {
        next = tc->next;
        if (!lost_chunks) {
            for (unsigned cls = 0; cls < SH_NUM_CLASSES; cls++) {
                struct sh_mag *m = &tc->mags[cls];
                for (uint32_t j = 0; j < m->count && j < m->cap; j++) {
                    uintptr_t p = (uintptr_t)m->items[j].p;
                    size_t usable;
                    uint32_t idx;
                    struct sh_chunk *c = sh_chunk_of(p);
                    if (!c || c->large)
                        continue;
                    struct sh_span *s =
                        atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_relaxed);
                    if (!s || s->kind != SH_SPAN_SLAB || s->cls != cls)
                        continue;
                    idx = sh_block_index(s, p - s->start);
                    if ((uintptr_t)idx * s->block_size != p - s->start || idx >= s->nblocks ||
                        m->items[j].req != &s->req[idx])
                        continue;
                    if (live_block(p, &usable, &idx)) /* became live again: not free */
                        continue;
                    pthread_mutex_lock(&sh_classes[cls].mu);
                    bool central = s->freebits[idx >> 6] & (1ULL << (idx & 63));
                    pthread_mutex_unlock(&sh_classes[cls].mu);
                    if (!central) {
                        /* The owner may have popped it and written to it
                         * in the parent before the child's copy. */
                        sh_wipe((void *)p, s->block_size);
                        put_blocks(cls, &m->items[j], 1);
                    }
                }
            }
        }
        /* To the pool, not unmapped: full slabs may still name it. */
        for (unsigned cls = 0; cls < SH_NUM_CLASSES; cls++) {
            tc->mags[cls].count = 0;
            tc->own[cls] = NULL;
        }
        atomic_store_explicit(&tc->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&tc->dead, true, memory_order_relaxed);
        pthread_mutex_lock(&sh_tc_mu);
        tc->prev = NULL;
        tc->next = tc_pool;
        tc_pool = tc;
        pthread_mutex_unlock(&sh_tc_mu);
    }
    atomic_store_explicit(&untracked_busy, 0, memory_order_relaxed);
    if ((uintptr_t)self > (uintptr_t)TC_DEAD)
        atomic_store_explicit(&self->busy, 0, memory_order_relaxed);
    if (!lost_chunks)
        reclaim_in_transit(self);
}

/* ---- stats (the checker is check.c) ---- */

static void stats_span(struct sh_span *s, void *arg) {
    struct secretheap_stats *st = arg;
    if (s->kind == SH_SPAN_SLAB) {
        struct secretheap_class_stats *cs = &st->classes[s->cls];
        cs->slabs++;
        for (uint32_t i = 0; i < s->nblocks; i++) {
            uint16_t r = atomic_load_explicit(&s->req[i], memory_order_relaxed);
            if (r) {
                cs->live_blocks++;
                cs->requested_bytes += r - 1u;
                cs->reserved_bytes += s->block_size;
            }
        }
    } else {
        size_t r = atomic_load_explicit(&s->run_req, memory_order_relaxed);
        if (r && s->kind == SH_SPAN_RUN) {
            st->run_blocks++;
            st->run_requested_bytes += r - 1;
            st->run_reserved_bytes += (size_t)s->npages * SH_OS_PAGE;
        } else if (r) {
            st->large_regions++;
            st->large_requested_bytes += r - 1;
            st->large_reserved_bytes += (size_t)s->npages * SH_OS_PAGE;
        }
    }
}

void sh_heap_stats(struct secretheap_stats *st) {
    sh_chunk_lock();
    sh_chunk_foreach_span(stats_span, st);
    sh_chunk_unlock();
    st->live_blocks = st->run_blocks + st->large_regions;
    st->requested_bytes = st->run_requested_bytes + st->large_requested_bytes;
    st->reserved_bytes = st->run_reserved_bytes + st->large_reserved_bytes;
    for (int i = 0; i < SH_NUM_CLASSES; i++) {
        struct secretheap_class_stats *cs = &st->classes[i];
        cs->size = sh_class_size[i];
        st->live_blocks += cs->live_blocks;
        st->requested_bytes += cs->requested_bytes;
        st->reserved_bytes += cs->reserved_bytes;
    }
}
