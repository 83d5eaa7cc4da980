/*
 * fallback.c — the fallback pool: ordinary memory for the requests that
 * secret memory cannot serve under SECRETHEAP_ON_EXHAUSTED=fallback
 * (heap.c exhausted). These are the blocks most likely to hold keys on a
 * machine with a tight RLIMIT_MEMLOCK, so they are never worse than libc
 * memory and better where we can make them so:
 *   - anonymous private memory of our own, not libc's heap: MADV_DONTDUMP
 *     (left out of core dumps), mlock'ed where RLIMIT_MEMLOCK still allows
 *     it (never swapped; best effort, a refused mlock is not an error);
 *   - every block is wiped on free (libc free leaves the bytes behind);
 *   - free and realloc recognise a fallback block exactly (an address in
 *     one of our reserved ranges), so a pointer that is neither ours nor a
 *     fallback block is rejected before anything is written (heap.c).
 * It is still ordinary memory: in the kernel direct map and readable
 * through /proc/PID/mem by the same user. The fallback counter and the one
 * warning (heap.c) say so.
 *
 * Layout: up to FB_RANGES reserved ranges (PROT_NONE, MAP_NORESERVE,
 * MADV_DONTDUMP), each made read-write in FB_STEP steps as a bump pointer
 * advances. A block is a power of two from 32 B, a 16-byte header in front
 * of the caller's bytes (so the caller's pointer is 16-byte aligned): its
 * size class, its state and a tag (live: FB_LIVE ^ address, so a stray
 * pointer or user data is not taken for a block; free: the next free block
 * of the class). Freed blocks go on a per-class free list, wiped, so every
 * block is zero when handed out. One mutex guards it all: this is the path
 * taken after secret memory ran out, not a fast path.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define FB_RANGES 16
#define FB_HDR 16
#define FB_MIN_SHIFT 5                 /* 32-byte blocks: 16 B header + 16 B */
#define FB_MAX_SHIFT 30                /* the largest block: a whole range */
#define FB_STEP ((size_t)1 << 20)      /* made read-write (and mlock'ed) 1 MiB at a time */
#define FB_RANGE_MAX ((size_t)1 << 30) /* a range, and the largest block (header included) */
#define FB_MLOCK_MAX ((size_t)16 << 20)
#define FB_LIVE 0x5e47f411b10c4b1dULL
#define FB_STATE_LIVE 0x4c495645u /* "LIVE" */
#define FB_STATE_FREE 0x46524545u /* "FREE" */

struct fb_hdr {
    uint32_t shift; /* block size 1 << shift, header included */
    uint32_t state; /* FB_STATE_* */
    uint64_t tag;   /* live: FB_LIVE ^ caller's address; free: next free header */
};
_Static_assert(sizeof(struct fb_hdr) == FB_HDR, "fallback header is 16 bytes");

struct fb_range {
    _Atomic uintptr_t base; /* written once, before nranges counts the range */
    _Atomic size_t size;
    size_t used;     /* bump pointer: bytes carved, guarded by fb_mu */
    size_t writable; /* bytes made read-write, guarded by fb_mu */
};

static struct fb_range ranges[FB_RANGES];
static _Atomic int nranges;
static pthread_mutex_t fb_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fb_hdr *freelist[FB_MAX_SHIFT + 1]; /* guarded by fb_mu */
static pthread_once_t fb_fork_once = PTHREAD_ONCE_INIT;
_Atomic uint64_t sh_stat_fallback_live; /* bytes of live fallback blocks (headers included) */

/* The pool's lock is a leaf (nothing else is taken under it), so the
 * pool keeps fork handlers of its own, registered on its first use. The
 * pool is private anonymous memory: a child gets copies of the blocks
 * under either SECRETHEAP_FORK policy. */
static void fb_prefork(void) { pthread_mutex_lock(&fb_mu); }
static void fb_postfork(void) { pthread_mutex_unlock(&fb_mu); }
static void fb_fork_init(void) { pthread_atfork(fb_prefork, fb_postfork, fb_postfork); }

static struct fb_range *range_of(uintptr_t p) {
    int n = atomic_load_explicit(&nranges, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        uintptr_t b = atomic_load_explicit(&ranges[i].base, memory_order_relaxed);
        if (p - b < atomic_load_explicit(&ranges[i].size, memory_order_relaxed))
            return &ranges[i];
    }
    return NULL;
}

bool sh_fallback_owns(const void *p) { return p != NULL && range_of((uintptr_t)p) != NULL; }

/* A new range of at least need bytes: FB_RANGE_MAX, halved while the
 * address space (RLIMIT_AS) refuses it. fb_mu held. */
static struct fb_range *new_range(size_t need) {
    int n = atomic_load_explicit(&nranges, memory_order_relaxed);
    if (n == FB_RANGES)
        return NULL;
    size_t size = FB_RANGE_MAX;
    for (;;) {
        void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            madvise(p, size, MADV_DONTDUMP);
            struct fb_range *r = &ranges[n];
            atomic_store_explicit(&r->base, (uintptr_t)p, memory_order_relaxed);
            atomic_store_explicit(&r->size, size, memory_order_relaxed);
            r->used = r->writable = 0;
            atomic_store_explicit(&nranges, n + 1, memory_order_release);
            return r;
        }
        if (size / 2 < need || size <= FB_STEP)
            return NULL;
        size /= 2;
    }
}

/* Carves a block of 1 << shift bytes from the last range (a new one if it
 * is full). fb_mu held. */
static struct fb_hdr *carve(unsigned shift) {
    size_t bs = (size_t)1 << shift;
    int n = atomic_load_explicit(&nranges, memory_order_relaxed);
    struct fb_range *r = n ? &ranges[n - 1] : NULL;
    if (!r || atomic_load_explicit(&r->size, memory_order_relaxed) - r->used < bs) {
        r = new_range(bs);
        if (!r)
            return NULL;
    }
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed);
    if (r->used + bs > r->writable) {
        size_t end = (r->used + bs + FB_STEP - 1) & ~(FB_STEP - 1);
        size_t size = atomic_load_explicit(&r->size, memory_order_relaxed);
        if (end > size)
            end = size;
        void *from = (void *)(base + r->writable);
        size_t len = end - r->writable;
        if (mprotect(from, len, PROT_READ | PROT_WRITE) != 0)
            return NULL;
        /* The flag is per mapping; mprotect split it off the reservation,
         * which had it: set it again rather than rely on the split. */
        madvise(from, len, MADV_DONTDUMP);
        /* Best effort: never swapped while memlock allows. mlock populates
         * at once, so only steps of up to FB_MLOCK_MAX: a large block is
         * faulted in as it is used, as libc's would be (root has no memlock
         * limit, and locking a 512 MiB block would commit it all now). */
        if (len <= FB_MLOCK_MAX)
            (void)mlock(from, len);
        r->writable = end;
    }
    struct fb_hdr *h = (struct fb_hdr *)(base + r->used);
    r->used += bs;
    return h;
}

void *sh_fallback_alloc(size_t n) {
    /* Past a range: refused (ENOMEM, counted as exhausted_returns), not
     * given a reservation of its own — a key never needs a gigabyte. */
    if (n > FB_RANGE_MAX - FB_HDR) {
        errno = ENOMEM;
        return NULL;
    }
    /* Before the lock is first taken: a fork between the two would leave
     * the child's copy of the lock held. */
    pthread_once(&fb_fork_once, fb_fork_init);
    size_t total = n + FB_HDR;
    unsigned shift = FB_MIN_SHIFT;
    while (((size_t)1 << shift) < total)
        shift++;
    pthread_mutex_lock(&fb_mu);
    struct fb_hdr *h = freelist[shift];
    if (h)
        freelist[shift] = (struct fb_hdr *)(uintptr_t)h->tag;
    else
        h = carve(shift);
    if (!h) {
        pthread_mutex_unlock(&fb_mu);
        errno = ENOMEM;
        return NULL;
    }
    void *p = (char *)h + FB_HDR;
    h->shift = shift;
    h->state = FB_STATE_LIVE;
    h->tag = FB_LIVE ^ (uint64_t)(uintptr_t)p;
    pthread_mutex_unlock(&fb_mu);
    atomic_fetch_add_explicit(&sh_stat_fallback_live, (uint64_t)1 << shift, memory_order_relaxed);
    return p; /* zero: fresh OS pages, or wiped by free */
}

/* The header of p if p is the start of a block of range r (any state),
 * else NULL. Reads only carved, read-write bytes. fb_mu held. */
static struct fb_hdr *header_of(struct fb_range *r, uintptr_t p) {
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed);
    if ((p & 15) != 0 || p < base + FB_HDR || p - base >= r->used)
        return NULL;
    struct fb_hdr *h = (struct fb_hdr *)(p - FB_HDR);
    if (h->shift < FB_MIN_SHIFT || h->shift > FB_MAX_SHIFT || p - FB_HDR - base + ((size_t)1 << h->shift) > r->used)
        return NULL;
    return h;
}

size_t sh_fallback_usable(const void *ptr) {
    uintptr_t p = (uintptr_t)ptr;
    struct fb_range *r = range_of(p);
    if (!r)
        return 0;
    size_t usable = 0;
    pthread_mutex_lock(&fb_mu);
    struct fb_hdr *h = header_of(r, p);
    if (h && h->state == FB_STATE_LIVE && h->tag == (FB_LIVE ^ (uint64_t)p))
        usable = ((size_t)1 << h->shift) - FB_HDR;
    pthread_mutex_unlock(&fb_mu);
    return usable;
}

/*
 * Wipes a freed block. A large one (FB_BIG and up) is mostly OS pages the
 * program may never have touched: wiping them would fault in every one
 * (a 256 MiB block, 256 MiB of RSS at free). So only the pages mincore
 * reports resident are wiped, then the whole-page interior is given back
 * (MADV_DONTNEED: private anonymous memory reads as zero afterwards). A page
 * that is not resident was never written (or was swapped out: the same as
 * libc memory; small blocks are mlock'ed where memlock allows). Locked
 * pages refuse MADV_DONTNEED and simply stay, wiped.
 */
#define FB_BIG ((size_t)1 << 20)
static void wipe_block(void *ptr, size_t n) {
    if (n < FB_BIG) {
        sh_wipe(ptr, n);
        return;
    }
    uintptr_t lo = ((uintptr_t)ptr + SH_OS_PAGE - 1) & ~(SH_OS_PAGE - 1);
    uintptr_t hi = ((uintptr_t)ptr + n) & ~(SH_OS_PAGE - 1);
    sh_wipe(ptr, lo - (uintptr_t)ptr);
    sh_wipe((void *)hi, (uintptr_t)ptr + n - hi);
    unsigned char vec[256];
    for (uintptr_t a = lo; a < hi;) {
        size_t pages = (hi - a) / SH_OS_PAGE < sizeof vec ? (hi - a) / SH_OS_PAGE : sizeof vec;
        if (mincore((void *)a, pages * SH_OS_PAGE, vec) != 0) {
            sh_wipe((void *)a, hi - a); /* cannot tell: wipe the rest */
            break;
        }
        for (size_t i = 0; i < pages; i++)
            if (vec[i] & 1)
                sh_wipe((void *)(a + i * SH_OS_PAGE), SH_OS_PAGE);
        a += pages * SH_OS_PAGE;
    }
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void sh_fallback_free(void *ptr, const char *op) {
    uintptr_t p = (uintptr_t)ptr;
    struct fb_range *r = range_of(p);
    if (!r)
        return;
    pthread_mutex_lock(&fb_mu);
    struct fb_hdr *h = header_of(r, p);
    bool live = h && h->state == FB_STATE_LIVE && h->tag == (FB_LIVE ^ (uint64_t)p);
    if (!live) {
        bool was_block = h && h->state == FB_STATE_FREE;
        pthread_mutex_unlock(&fb_mu);
        atomic_fetch_add(&sh_stat_misuse, 1);
        if (was_block)
            sh_fatal("double %s of %#lx (a fallback block of %zu B)", op, (unsigned long)p,
                     ((size_t)1 << h->shift) - FB_HDR);
        sh_fatal("%s of %#lx: inside the fallback pool but not the start of a live block (an interior or wild "
                 "pointer)",
                 op, (unsigned long)p);
    }
    unsigned shift = h->shift;
    h->state = FB_STATE_FREE; /* claimed: a racing second free now aborts */
    h->tag = 0;
    pthread_mutex_unlock(&fb_mu);
    wipe_block(ptr, ((size_t)1 << shift) - FB_HDR);
    atomic_fetch_sub_explicit(&sh_stat_fallback_live, (uint64_t)1 << shift, memory_order_relaxed);
    pthread_mutex_lock(&fb_mu);
    h->tag = (uint64_t)(uintptr_t)freelist[shift];
    freelist[shift] = h;
    pthread_mutex_unlock(&fb_mu);
}
