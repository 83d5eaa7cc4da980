/*
 * pmdcache.c — the chunk cache: one arena of 4 MiB slots, chunks mapped
 * MAP_FIXED at slot starts, OS-page spans carved out of chunks, commits in
 * growing runs, wholly free chunks kept idle for reuse, O(1) owner lookup.
 *
 * States of a chunk: free slot (PROT_NONE) → mapped (sh_source_map; memlock
 * charged, nothing faulted) → partly committed (OS pages [0, committed)
 * faulted in, grown geometrically by span allocation) → idle (no live span,
 * still committed, counted in n_idle) → unmapped (sh_source_unmap, beyond
 * SECRETHEAP_IDLE_CHUNKS, never while the process exits).
 *
 * Everything here is guarded by chunk_mu except the lock-free lookup
 * (sh_slots, chunk->pagemap), whose entries are published with release /
 * relaxed atomic stores. Chunk descriptors are never unmapped: a stale
 * pointer freed after its chunk went away must still find readable
 * metadata, so that it gets a named message instead of a segfault.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

_Atomic uintptr_t sh_arena_base;
_Atomic size_t sh_arena_size;
_Atomic(struct sh_chunk *) sh_slots[SH_ARENA_SLOTS];

static pthread_mutex_t chunk_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t slot_used[(SH_ARENA_SLOTS + 63) / 64]; /* guarded by chunk_mu */
static size_t nslots_total;                            /* slots in the arena we got */
static struct sh_chunk *chunks;                        /* live normal chunks, guarded by chunk_mu */
static struct sh_chunk *larges;                        /* live large regions, guarded by chunk_mu */
static struct sh_chunk *spare_meta;                    /* descriptors of unmapped normal chunks */
static struct sh_chunk *spare_large;                   /* descriptors of unmapped large regions */
static unsigned n_idle;                                /* normal chunks without a live span */
static uint64_t bytes_mapped, bytes_committed, n_secret, n_locked, n_large;
static uint64_t committed_secret; /* of bytes_committed, in memfd_secret chunks: the new model's charge */
static uint64_t lazy_bytes;       /* large regions mapped without commit (sh_source_commit_lazy) */
static uint64_t reserve_bytes;    /* the secure reserve in force (sh_chunk_init) */
static bool exiting;
static bool reserve_on; /* OpenSSL mode all: keep secure_reserve for secure allocations */
/* OS pages (bytes) in live spans taken for ordinary and for secure requests. */
static uint64_t ord_bytes, sec_bytes;

void sh_chunk_lock(void) { pthread_mutex_lock(&chunk_mu); }
int sh_chunk_trylock(void) { return pthread_mutex_trylock(&chunk_mu); }
void sh_chunk_unlock(void) { pthread_mutex_unlock(&chunk_mu); }

#define ARENA_MIN ((size_t)64 << 20)

/*
 * The arena's size: 64 GiB, but under a finite RLIMIT_AS at most an eighth
 * of the address space left (a power of two, at least 64 MiB): address
 * space is the host's budget too, and a reservation that fits but leaves
 * the program nothing breaks it as surely as one that fails. Then halved
 * while the kernel refuses (a small address space, other mappings).
 */
static size_t arena_size_for_rlimit(void) {
    size_t size = SH_ARENA_SIZE;
    uint64_t room = sh_source_as_room();
    while (size > ARENA_MIN && size > room / 8)
        size >>= 1;
    return size;
}

/*
 * The secure reserve in force: SECRETHEAP_SECURE_RESERVE, but never more than
 * a quarter of the budget (RLIMIT_MEMLOCK where it binds, SECRETHEAP_LIMIT):
 * under `ulimit -l 64` the 256 KiB default swallowed the whole limit, and
 * every ordinary allocation went to ordinary memory. A budget below one
 * smallest chunk protects nothing: one warning says so at start-up.
 */
static void size_reserve(void) {
    uint64_t budget = UINT64_MAX;
    bool bypass = sh_kernel.cap_ipc_lock &&
                  (sh_kernel.model == SECRETHEAP_MODEL_OLD || sh_source_next_backend() == SH_BACKEND_LOCKED);
    if (!bypass)
        budget = sh_kernel.memlock_limit;
    if (sh_opt.limit && sh_opt.limit < budget)
        budget = sh_opt.limit;
    reserve_bytes = sh_opt.secure_reserve;
    if (budget != UINT64_MAX && reserve_bytes > budget / 4)
        reserve_bytes = (budget / 4) & ~(uint64_t)(SH_OS_PAGE - 1);
    if (budget < SH_CHUNK_MIN)
        sh_log(0,
               "WARNING: secret memory budget is %llu KiB (%s), below the smallest chunk (%zu KiB): nothing "
               "can be kept in secret memory; raise it (LimitMEMLOCK= in the systemd unit, memlock in "
               "/etc/security/limits.conf, docker run --ulimit memlock=, ulimit -l)",
               (unsigned long long)(budget >> 10), sh_opt.limit == budget ? "SECRETHEAP_LIMIT" : "RLIMIT_MEMLOCK",
               SH_CHUNK_MIN >> 10);
}

int sh_chunk_init(void) {
    sh_source_detect();
    size_reserve();
    uintptr_t base;
    size_t size = arena_size_for_rlimit();
    while (sh_source_reserve(size, SH_SLOT_SIZE, &base) != 0) {
        size >>= 1;
        if (size < ARENA_MIN)
            return ENOMEM;
    }
    nslots_total = size >> SH_SLOT_SHIFT;
    atomic_store_explicit(&sh_arena_base, base, memory_order_relaxed);
    atomic_store_explicit(&sh_arena_size, size, memory_order_release);
    return 0;
}

void sh_chunk_set_exiting(void) {
    pthread_mutex_lock(&chunk_mu);
    exiting = true;
    pthread_mutex_unlock(&chunk_mu);
}

void sh_secure_reserve_set(bool on) {
    pthread_mutex_lock(&chunk_mu);
    reserve_on = on;
    pthread_mutex_unlock(&chunk_mu);
}

/* First run of n free slots; -1 if none. */
static long slots_find(size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < nslots_total; i++) {
        if ((i & 63) == 0 && slot_used[i >> 6] == UINT64_MAX) {
            run = 0;
            i += 63;
            continue;
        }
        if (slot_used[i >> 6] & (1ULL << (i & 63))) {
            run = 0;
            continue;
        }
        if (++run == n)
            return (long)(i + 1 - n);
    }
    return -1;
}

static void slots_mark(size_t first, size_t n, bool used) {
    for (size_t i = first; i < first + n; i++) {
        if (used)
            slot_used[i >> 6] |= 1ULL << (i & 63);
        else
            slot_used[i >> 6] &= ~(1ULL << (i & 63));
    }
}

/*
 * RLIMIT_MEMLOCK headroom for the backend the next mapping uses (old model
 * and locked: limit - VmLck, unlimited with CAP_IPC_LOCK; new model: limit -
 * what we committed, a ceiling: see sh_source_headroom), read at most once
 * per change of our own mappings. A read costs ~4 system calls (~0.2 ms each here: getrlimit,
 * open/read/close of /proc/self/status), and once memory runs out every
 * fallback allocation asks again: an s_server under SECRETHEAP_LIMIT=128K
 * took 19 s to start. The value is kept until something of ours that
 * memlock counts changes (a chunk mapped or unmapped, OS pages committed:
 * headroom_forget), or a fork child starts (its account is empty), and is
 * read again after HEADROOM_REREAD uses in any case, so that headroom freed
 * outside the allocator (munlock, a raised limit) is seen eventually at a
 * cost of 4 system calls per 1024 exhausted requests. Guarded by chunk_mu.
 */
#define HEADROOM_REREAD 1024
static bool headroom_known;
static uint64_t headroom_value;
static unsigned headroom_uses;

static void headroom_forget(void) { headroom_known = false; }

static uint64_t headroom_at; /* committed_secret when headroom_value was read */

/* The next mapping's budget is charged per committed OS page (new model). */
static bool charged_at_commit(void) {
    return sh_source_next_backend() == SH_BACKEND_SECRET && sh_kernel.model != SECRETHEAP_MODEL_OLD;
}

static uint64_t headroom(void) {
    if (headroom_known && headroom_uses < HEADROOM_REREAD) {
        headroom_uses++;
    } else {
        bool unlimited;
        headroom_value = sh_source_headroom(sh_source_next_backend(), committed_secret, &unlimited);
        headroom_at = committed_secret;
        headroom_known = true;
        headroom_uses = 0;
    }
    /* New model: every secret commit since the read used the budget up
     * (without a system call to say so: no file shows it). */
    if (charged_at_commit() && headroom_value != UINT64_MAX && committed_secret > headroom_at)
        return headroom_value > committed_secret - headroom_at ? headroom_value - (committed_secret - headroom_at) : 0;
    return headroom_value;
}

/* Bytes a new mapping may take: the smaller of SECRETHEAP_LIMIT and the
 * RLIMIT_MEMLOCK headroom. On the new model mapping is free and only
 * commits are charged, but a chunk larger than what could ever be committed
 * is no use either, so chunks shrink the same way on both models. */
static int room_cause; /* SH_CAUSE_MEMLOCK or SH_CAUSE_LIMIT: which bound room_for gave */
static uint64_t room_for(void) {
    uint64_t room = headroom();
    room_cause = SH_CAUSE_MEMLOCK;
    if (sh_opt.limit) {
        uint64_t l = sh_opt.limit > bytes_mapped ? sh_opt.limit - bytes_mapped : 0;
        if (l < room) {
            room = l;
            room_cause = SH_CAUSE_LIMIT;
        }
    }
    return room;
}

/* A refused span or region: the cause for heap.c's exhaustion handling,
 * counted, errno ENOMEM. Unlocks the chunk lock. */
static void *refuse(int cause) {
    sh_fail_cause = cause;
    atomic_fetch_add_explicit(&sh_stat_failures[cause], 1, memory_order_relaxed);
    pthread_mutex_unlock(&chunk_mu);
    errno = ENOMEM;
    return NULL;
}

/*
 * The secure reserve, counted in OS pages of live spans rather than in
 * mappings: gating only new mappings let ordinary blocks fill the chunk a
 * secure request had mapped, so under a 64 KiB RLIMIT_MEMLOCK every secure
 * allocation of an s_server fell back. An ordinary span may be taken only
 * if, afterwards, the reserve (less what secure spans already hold) still
 * fits in what may be mapped at most (mapped now + room for more). Secure
 * spans also get their own slabs (heap.c), so ordinary requests never take
 * their blocks. Chunk lock held.
 */
static bool reserve_allows(bool secure, uint64_t need) {
    if (!reserve_on || secure)
        return true;
    uint64_t room = headroom();
    /* What memlock charges: the mappings (old model, secret backend), or the
     * committed OS pages (new model; the locked backend's mlock). The most
     * that can be held is that plus the headroom, and SECRETHEAP_LIMIT. */
    bool at_map = sh_source_next_backend() == SH_BACKEND_SECRET && !charged_at_commit();
    uint64_t cap = room > UINT64_MAX / 4 ? UINT64_MAX : (at_map ? bytes_mapped : bytes_committed) + room;
    if (sh_opt.limit && sh_opt.limit < cap)
        cap = sh_opt.limit;
    room_cause = sh_opt.limit && cap == sh_opt.limit ? SH_CAUSE_LIMIT : SH_CAUSE_MEMLOCK;
    if (cap == UINT64_MAX)
        return true; /* unlimited */
    uint64_t keep = sec_bytes >= reserve_bytes ? 0 : reserve_bytes - sec_bytes;
    return ord_bytes + sec_bytes + need + keep <= cap;
}

static void span_account(bool secure, uint64_t bytes, bool add) {
    uint64_t *b = secure ? &sec_bytes : &ord_bytes;
    *b = add ? *b + bytes : *b - bytes;
}

static struct sh_chunk *meta_new(bool large, size_t npages) {
    struct sh_chunk **spare = large ? &spare_large : &spare_meta;
    struct sh_chunk *c = *spare;
    if (c) {
        *spare = c->next;
        size_t ms = c->meta_size;
        _Atomic(struct sh_span *) *pm = c->pagemap;
        struct sh_span *sp = c->spans;
        memset(c, 0, sizeof *c);
        c->meta_size = ms;
        c->pagemap = pm;
        c->spans = sp;
        return c;
    }
    /* Normal chunks: descriptor, pagemap and span array for the largest
     * chunk (2 MiB), so a descriptor can be reused for any chunk size.
     * MAP_NORESERVE: only the parts touched become resident. */
    (void)npages;
    size_t np = large ? 0 : SH_CHUNK_MAX_PAGES;
    size_t sz = sizeof(struct sh_chunk) + np * sizeof(_Atomic(struct sh_span *)) +
                (large ? 1 : np) * sizeof(struct sh_span) + 64;
    sz = (sz + SH_OS_PAGE - 1) & ~(SH_OS_PAGE - 1);
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    c = m;
    c->meta_size = sz;
    uintptr_t p = (uintptr_t)(c + 1);
    if (!large) {
        c->pagemap = (_Atomic(struct sh_span *) *)p;
        p += np * sizeof(_Atomic(struct sh_span *));
    }
    p = (p + 63) & ~(uintptr_t)63;
    c->spans = (struct sh_span *)p;
    return c;
}

static void meta_park(struct sh_chunk *c) {
    struct sh_chunk **spare = c->large ? &spare_large : &spare_meta;
    c->next = *spare;
    *spare = c;
}

/* Maps a chunk of size bytes (normal) or a large region; chunk lock held. */
static struct sh_chunk *chunk_new(size_t size, bool large) {
    size_t nslots = (size + SH_SLOT_SIZE - 1) >> SH_SLOT_SHIFT;
    if (large && (size & (SH_SLOT_SIZE - 1)) == 0)
        nslots++; /* keep a guard after a region that fills its slots */
    long slot = slots_find(nslots);
    if (slot < 0) {
        sh_fail_cause = SH_CAUSE_ARENA;
        errno = ENOMEM;
        return NULL;
    }
    struct sh_chunk *c = meta_new(large, size / SH_OS_PAGE);
    if (!c) {
        sh_fail_cause = sh_cause_of(SH_OP_MAP, errno, SH_BACKEND_NONE);
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t base = atomic_load_explicit(&sh_arena_base, memory_order_relaxed) + ((uintptr_t)slot << SH_SLOT_SHIFT);
    int backend = 0, cause = 0;
    int e = sh_source_map(base, size, &backend, &cause);
    if (e) {
        /* Refused although room_for allowed it (memlock taken outside the
         * allocator): remember, or every later request maps and fails again. */
        if (cause == SH_CAUSE_MEMLOCK && headroom_known && headroom_value >= size)
            headroom_value = size - 1;
        c->large = large;
        meta_park(c);
        sh_fail_cause = cause;
        errno = e;
        return NULL;
    }
    c->base = base;
    c->size = size;
    c->end = base + size;
    c->npages = (uint32_t)(size / SH_OS_PAGE);
    c->slot = (uint32_t)slot;
    c->nslots = (uint32_t)nslots;
    c->backend = (uint8_t)backend;
    c->large = large;
    c->committed = 0;
    if (!large) {
        c->free_pages = c->npages;
        for (uint32_t i = 0; i < c->npages; i++)
            c->pagefree[i >> 6] |= 1ULL << (i & 63);
        for (uint32_t i = 0; i < SH_CHUNK_MAX_PAGES; i++)
            atomic_store_explicit(&c->pagemap[i], NULL, memory_order_relaxed);
        /* The list is kept in address order, and spans go to the first
         * chunk in use that fits (sh_span_alloc): long-lived spans and the
         * slabs classes keep gather in the low chunks, so the high ones
         * empty out when demand drops and can be given back. */
        struct sh_chunk *after = NULL;
        for (struct sh_chunk *x = chunks; x && x->base < base; x = x->next)
            after = x;
        c->prev = after;
        c->next = after ? after->next : chunks;
        if (c->next)
            c->next->prev = c;
        if (after)
            after->next = c;
        else
            chunks = c;
        n_idle++;
    } else {
        c->next = larges;
        if (larges)
            larges->prev = c;
        larges = c;
        n_large++;
    }
    slots_mark((size_t)slot, nslots, true);
    for (size_t i = 0; i < nslots; i++)
        atomic_store_explicit(&sh_slots[(size_t)slot + i], c, memory_order_release);
    bytes_mapped += size;
    headroom_forget();
    if (backend == SH_BACKEND_SECRET)
        n_secret++;
    else
        n_locked++;
    sh_log(2, "mapped %s %zu KiB at %p (%s)", large ? "large region" : "chunk", size >> 10, (void *)base,
           backend == SH_BACKEND_SECRET ? "secret" : "locked");
    return c;
}

/* Takes c's bytes out of the totals (it is unmapped or lost). */
/* Takes c out of the cache's counts (its bytes and the chunk counts by
 * backend and kind), when it is unmapped or lost in a fork child. */
static void uncount(struct sh_chunk *c) {
    bytes_mapped -= c->size;
    if (c->lazy) {
        lazy_bytes -= c->size;
    } else {
        bytes_committed -= c->committed;
        if (c->backend == SH_BACKEND_SECRET)
            committed_secret -= c->committed;
    }
    if (c->backend == SH_BACKEND_SECRET)
        n_secret--;
    else
        n_locked--;
    if (c->large)
        n_large--;
}

/* Takes c out of every list, slot and total, and parks its descriptor;
 * the caller deals with the mapping. */
static void chunk_unlink(struct sh_chunk *c) {
    struct sh_chunk **head = c->large ? &larges : &chunks;
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    for (size_t i = 0; i < c->nslots; i++)
        atomic_store_explicit(&sh_slots[c->slot + i], NULL, memory_order_release);
    slots_mark(c->slot, c->nslots, false);
    uncount(c);
    headroom_forget();
    meta_park(c);
}

static void chunk_destroy(struct sh_chunk *c) {
    sh_source_unmap(c->base, c->size, c->committed, c->backend, c->lazy);
    sh_log(2, "unmapped %s %zu KiB at %p", c->large ? "large region" : "chunk", c->size >> 10, (void *)c->base);
    chunk_unlink(c);
}

/* Lowest run of n free OS pages in c; -1 if none. */
static long pages_find(struct sh_chunk *c, uint32_t n) {
    uint32_t run = 0;
    for (uint32_t i = 0; i < c->npages; i++) {
        if (c->pagefree[i >> 6] & (1ULL << (i & 63))) {
            if (++run == n)
                return (long)(i + 1 - n);
        } else {
            run = 0;
        }
    }
    return -1;
}

static void commit_account(struct sh_chunk *c, size_t n) {
    bytes_committed += n;
    if (c->backend == SH_BACKEND_SECRET)
        committed_secret += n;
    c->committed += n;
}

/* Commits up to end, plus a little read-ahead once the chunk is warm: none
 * below READAHEAD_WARM committed, then half of what is committed, at most
 * 64 KiB. Committing costs ~20–100 µs per OS page whatever the batch (the
 * kernel removes each page from the direct map and flushes TLBs), so large
 * batches save only system calls (~1 µs each) while every page committed
 * ahead is secret memory nobody uses. A short-lived program (`openssl
 * version`: 74 KB of peak live blocks) never gets warm and commits only the
 * spans it uses — with read-ahead from the first slab on it committed 16 OS
 * pages (64 KiB, ~0.3 ms) that were never used; a server that fills the
 * chunk keeps the calls few, and the excess stays bounded to 64 KiB. */
#define READAHEAD_WARM ((size_t)256 << 10)

/* Commits [c->committed, want); counts what was committed even when a later
 * OS page is refused (secret: the pages before the refused one stay). */
static int commit_range(struct sh_chunk *c, size_t want) {
    size_t done = 0;
    int e = sh_source_commit_some(c->base + c->committed, want - c->committed, c->backend, &done);
    commit_account(c, done);
    if (done && c->backend == SH_BACKEND_LOCKED)
        headroom_forget(); /* mlock charged it */
    return e;
}

static int commit_to(struct sh_chunk *c, size_t end) {
    if (end <= c->committed)
        return 0;
    size_t ahead = c->committed < READAHEAD_WARM ? 0 : c->committed / 2;
    if (ahead > ((size_t)64 << 10))
        ahead = (size_t)64 << 10;
    size_t want = c->committed + ahead;
    if (want < end)
        want = end;
    want = (want + SH_OS_PAGE - 1) & ~(SH_OS_PAGE - 1);
    if (want > c->size)
        want = c->size;
    int e = commit_range(c, want);
    if (e && want > end) {
        want = end; /* retry with exactly what is needed */
        e = commit_range(c, want);
    }
    if (e) {
        int cause = sh_cause_of(c->backend == SH_BACKEND_LOCKED ? SH_OP_LOCK : SH_OP_COMMIT, e, c->backend);
        sh_fail_cause = cause;
        if (cause == SH_CAUSE_MEMLOCK) {
            /* The kernel is the truth about a budget we cannot read: no room
             * until something of ours is given back (or HEADROOM_REREAD). */
            headroom_value = 0;
            headroom_known = true;
            headroom_uses = 0;
        }
        return e;
    }
    return 0;
}

static void span_init(struct sh_span *s, struct sh_chunk *c, uintptr_t start, uint32_t npages, int kind, int cls) {
    s->start = start;
    s->chunk = c;
    s->npages = npages;
    s->kind = (uint8_t)kind;
    s->cls = (uint8_t)cls;
    s->listed = 0;
    s->secure = 0;
    s->owner = NULL;
    s->next = s->prev = NULL;
    atomic_store_explicit(&s->run_req, 0, memory_order_relaxed);
    for (int i = 0; i < SH_MAX_SLAB_BLOCKS; i++)
        atomic_store_explicit(&s->req[i], 0, memory_order_relaxed);
    memset(s->freebits, 0, sizeof s->freebits);
    if (kind == SH_SPAN_SLAB) {
        uint32_t bs = sh_class_size[cls];
        s->block_size = bs;
        s->div_mul = sh_class_div_mul[cls];
        uint32_t fit = npages * (uint32_t)SH_OS_PAGE / bs; /* a short first slab (heap.c) */
        s->nblocks = (uint16_t)(fit < sh_class_slab_blocks[cls] ? fit : sh_class_slab_blocks[cls]);
        s->nfree = s->nblocks;
        for (uint32_t i = 0; i < s->nblocks; i++)
            s->freebits[i >> 6] |= 1ULL << (i & 63);
    } else {
        s->block_size = npages <= UINT32_MAX / SH_OS_PAGE ? npages * (uint32_t)SH_OS_PAGE : 0;
        s->div_mul = 0;
        s->nblocks = 1;
        s->nfree = 0;
    }
}

struct sh_span *sh_span_alloc(uint32_t npages, int kind, int cls, bool secure) {
    pthread_mutex_lock(&chunk_mu);
    struct sh_chunk *c;
    long idx = -1;
    if (!reserve_allows(secure, (uint64_t)npages * SH_OS_PAGE))
        return refuse(room_cause);
    /* Prefer chunks in use over idle ones, so idle ones can be given back. */
    for (int pass = 0; pass < 2 && idx < 0; pass++) {
        for (c = chunks; c; c = c->next) {
            bool idle = c->free_pages == c->npages;
            if ((pass == 0) == idle || c->free_pages < npages)
                continue;
            if ((idx = pages_find(c, npages)) >= 0)
                break;
        }
    }
    if (idx < 0) {
        uint64_t room = room_for();
        size_t size = SH_CHUNK_MAX;
        while (size > SH_CHUNK_MIN && size > room)
            size >>= 1;
        if (size > room || size < (size_t)npages * SH_OS_PAGE)
            return refuse(room_cause);
        c = chunk_new(size, false);
        if (!c)
            return refuse(sh_fail_cause);
        if (size < SH_CHUNK_MAX)
            sh_log(1, "memlock headroom is short: chunk shrunk to %zu KiB", size >> 10);
        idx = 0;
    }
    size_t end = ((size_t)idx + npages) * SH_OS_PAGE;
    if (commit_to(c, end) != 0)
        return refuse(sh_fail_cause);
    if (c->free_pages == c->npages)
        n_idle--;
    for (uint32_t i = (uint32_t)idx; i < (uint32_t)idx + npages; i++)
        c->pagefree[i >> 6] &= ~(1ULL << (i & 63));
    c->free_pages -= npages;
    struct sh_span *s = &c->spans[idx];
    span_init(s, c, c->base + (uintptr_t)idx * SH_OS_PAGE, npages, kind, cls);
    s->secure = secure;
    span_account(secure, (uint64_t)npages * SH_OS_PAGE, true);
    for (uint32_t i = (uint32_t)idx; i < (uint32_t)idx + npages; i++)
        atomic_store_explicit(&c->pagemap[i], s, memory_order_release);
    pthread_mutex_unlock(&chunk_mu);
    return s;
}

void sh_span_free(struct sh_span *s) {
    pthread_mutex_lock(&chunk_mu);
    struct sh_chunk *c = s->chunk;
    uint32_t first = (uint32_t)((s->start - c->base) >> SH_OS_PAGE_SHIFT);
    for (uint32_t i = first; i < first + s->npages; i++) {
        atomic_store_explicit(&c->pagemap[i], NULL, memory_order_relaxed);
        c->pagefree[i >> 6] |= 1ULL << (i & 63);
    }
    c->free_pages += s->npages;
    s->kind = SH_SPAN_FREE;
    span_account(s->secure, (uint64_t)s->npages * SH_OS_PAGE, false);
    if (c->free_pages == c->npages) {
        if (!exiting && !c->lost && n_idle >= (unsigned)sh_opt.idle_chunks)
            chunk_destroy(c);
        else
            n_idle++;
    }
    pthread_mutex_unlock(&chunk_mu);
}

/*
 * A large region commits lazily where the kernel cannot refuse a fault
 * (sh_source_commit_lazy: old model, locked backend): a 64 MiB malloc then
 * costs a mapping, not 16384 faults up front, and only the OS pages the
 * program touches leave the direct map. Its committed field is then its
 * size (every byte usable: fork copies and wipes see all of it) while
 * bytes_committed counts only what the library faulted in. On the new model
 * every OS page is committed now: a later fault could be refused with
 * SIGBUS in the middle of the program.
 */
/* room_for(), after giving back idle chunks until it allows need or none
 * is left: an idle chunk's committed pages are budget (and SECRETHEAP_LIMIT
 * bytes) that a large region can use; pmdcache's GetLarge does the same.
 * Without it the conformance suite's 2 MiB region fell back under an 8 MiB
 * limit with nothing live, its earlier cases' chunks kept idle. Chunk lock
 * held. */
static uint64_t room_dropping_idle(uint64_t need) {
    uint64_t room = room_for();
    struct sh_chunk *next;
    for (struct sh_chunk *c = chunks; c && room < need && n_idle > 0 && !exiting; c = next) {
        next = c->next;
        if (c->free_pages != c->npages || c->lost)
            continue;
        chunk_destroy(c);
        n_idle--;
        room = room_for();
    }
    return room;
}

struct sh_span *sh_large_alloc(size_t size, bool secure) {
    if (size > atomic_load_explicit(&sh_arena_size, memory_order_relaxed) / 2) {
        sh_fail_cause = SH_CAUSE_ARENA;
        atomic_fetch_add_explicit(&sh_stat_failures[SH_CAUSE_ARENA], 1, memory_order_relaxed);
        errno = ENOMEM;
        return NULL;
    }
    size = (size + SH_OS_PAGE - 1) & ~(SH_OS_PAGE - 1);
    pthread_mutex_lock(&chunk_mu);
    if (room_dropping_idle(size) < size || !reserve_allows(secure, size))
        return refuse(room_cause);
    struct sh_chunk *c = chunk_new(size, true);
    if (!c)
        return refuse(sh_fail_cause);
    if (sh_source_commit_lazy(c->base, size, c->backend) == 0) {
        c->lazy = 1;
        c->committed = size;
        lazy_bytes += size;
        if (c->backend == SH_BACKEND_LOCKED)
            headroom_forget(); /* mlock2 charged it */
    } else if (commit_to(c, size) != 0) {
        int cause = sh_fail_cause;
        chunk_destroy(c);
        return refuse(cause);
    }
    struct sh_span *s = &c->spans[0];
    span_init(s, c, c->base, c->npages, SH_SPAN_LARGE, 0);
    s->secure = secure;
    span_account(secure, c->size, true);
    pthread_mutex_unlock(&chunk_mu);
    return s;
}

void sh_large_free(struct sh_span *s) {
    pthread_mutex_lock(&chunk_mu);
    struct sh_chunk *c = s->chunk;
    s->kind = SH_SPAN_FREE;
    span_account(s->secure, c->size, false);
    if (exiting || c->lost) {
        /* Never unmap at exit: other exit handlers may still read their
         * neighbours. The region stays, wiped, until the process is gone. */
        sh_source_wipe(c->base, c->size, c->committed, c->lazy);
    } else {
        chunk_destroy(c);
    }
    pthread_mutex_unlock(&chunk_mu);
}

/*
 * Copy policy: the child copies the shared pages into its own memfd_secret
 * files while the parent waits in its postfork handler, still holding every
 * allocator lock and with the fork gate closed (fork.c), until the child
 * says it is done (or dies: EOF). Without the wait the parent could write
 * into the shared pages after fork and before the child's copy: the child
 * would then see the parent's new secrets, or non-zero blocks it believes
 * free. The parent pays the copy (~20–100 µs per OS page copied); the child
 * pays the memory: under the old accounting model its RLIMIT_MEMLOCK
 * account starts empty; under the new one the copy is charged again to the
 * same user, whose budget the parent and every other child share. So the
 * child copies only what it uses: idle chunks are dropped (a later request
 * maps a fresh one), and of every other chunk only the OS pages up to the
 * end of its last span (spans gather at the low end: the committed tail
 * past them is read-ahead or freed spans).
 */
static int fork_pipe[2] = {-1, -1};
void (*sh_test_hook_child_copy)(void);

void sh_chunk_prefork(void) {
    pthread_mutex_lock(&chunk_mu);
    fork_pipe[0] = fork_pipe[1] = -1;
    if (sh_opt.fork == SH_FORK_COPY && (chunks || larges) && pipe2(fork_pipe, O_CLOEXEC) != 0)
        fork_pipe[0] = fork_pipe[1] = -1; /* the child will copy without the parent waiting */
}

void sh_chunk_postfork_parent(void) {
    if (fork_pipe[0] >= 0) {
        close(fork_pipe[1]);
        char b;
        while (read(fork_pipe[0], &b, 1) < 0 && errno == EINTR)
            ;
        close(fork_pipe[0]);
        fork_pipe[0] = fork_pipe[1] = -1;
    }
    pthread_mutex_unlock(&chunk_mu);
}

/* Bytes of c the child keeps: up to the end of its last span. */
static size_t in_use_end(const struct sh_chunk *c) {
    if (c->large)
        return c->committed;
    for (uint32_t i = c->npages; i-- > 0;)
        if (atomic_load_explicit(&c->pagemap[i], memory_order_relaxed) != NULL) {
            size_t end = (size_t)(i + 1) * SH_OS_PAGE;
            return end < c->committed ? end : c->committed;
        }
    return 0;
}

/*
 * The child's copy of one chunk, [0, keep) of it: secret memory, or, when
 * the child cannot get any (its copy is charged again to the same user
 * under the new accounting model), what SECRETHEAP_ON_EXHAUSTED says:
 * abort, or (fallback, null: the blocks exist and must stay readable)
 * ordinary private memory, locked if the limit allows. Never shared with
 * the parent. *backend is updated. Returns 0, or the errno when not even
 * ordinary memory could be had.
 */
static bool child_warned;
static int privatise(uintptr_t base, size_t size, size_t keep, uint8_t *backend) {
    int e = sh_source_reprivatise(base, size, keep, *backend);
    if (e == 0)
        return 0;
    if (sh_opt.on_exhausted == SH_EXH_ABORT)
        sh_fatal("fork child cannot get secret memory for its copy of chunk %p (%zu KiB in use): %s, and "
                 "SECRETHEAP_ON_EXHAUSTED=abort",
                 (void *)base, keep >> 10, strerror(e));
    bool locked;
    int e2 = sh_source_privatise_ordinary(base, size, keep, &locked);
    if (e2)
        return e2;
    atomic_fetch_add(&sh_stat_fallbacks, 1);
    if (!child_warned) {
        child_warned = true;
        sh_log(0,
               "WARNING: fork child cannot get secret memory for its copy of chunk %p (%zu KiB in use): %s; "
               "the copy is in ordinary memory (%s), never shared with the parent (SECRETHEAP_ON_EXHAUSTED); "
               "further such chunks are only counted (stats: fallbacks)",
               (void *)base, keep >> 10, strerror(e), locked ? "locked" : "not locked: RLIMIT_MEMLOCK");
    }
    *backend = SH_BACKEND_LOCKED;
    return 0;
}

/* Child, still holding chunk_mu (taken in prefork), only thread alive. */
void sh_chunk_postfork_child(void) {
    struct sh_chunk *lists[2] = {chunks, larges};
    headroom_forget(); /* the child's RLIMIT_MEMLOCK account starts empty */
    child_warned = false;
    if (fork_pipe[0] >= 0)
        close(fork_pipe[0]);
    if (sh_opt.fork == SH_FORK_DONTFORK) {
        /* The mappings are gone (MADV_DONTFORK). Keep the descriptors in their
         * slots marked lost so frees of inherited pointers are ignored and the
         * slots are never handed out again, and re-reserve the holes so the
         * kernel puts nothing else there — but only where nothing is yet:
         * what was mapped into a hole before this handler ran (a sanitizer's
         * runtime, an earlier atfork child handler) is not ours to replace.
         * Such a hole stays unguarded; its slot stays lost, so the arena
         * never maps over it either. */
        for (int l = 0; l < 2; l++) {
            for (struct sh_chunk *c = lists[l]; c; c = c->next) {
                c->lost = 1;
                sh_source_guard_hole(c->base, c->size);
                uncount(c);
            }
        }
        chunks = larges = NULL;
        n_idle = 0;
        ord_bytes = sec_bytes = 0;
        pthread_mutex_unlock(&chunk_mu);
        return;
    }
    if (sh_test_hook_child_copy)
        sh_test_hook_child_copy();
    uint64_t was_committed = bytes_committed, dropped = 0;
    /* Idle chunks: dropped, not copied (their OS pages are wiped and free). */
    for (struct sh_chunk *c = chunks, *next; c; c = next) {
        next = c->next;
        if (c->free_pages == c->npages) {
            sh_source_guard(c->base, c->size);
            n_idle--;
            dropped++;
            chunk_unlink(c);
        }
    }
    for (int l = 0; l < 2; l++) {
        for (struct sh_chunk *c = l ? larges : chunks; c; c = c->next) {
            size_t keep = in_use_end(c);
            uint8_t backend = c->backend;
            int e = privatise(c->base, c->size, keep, &backend);
            if (e)
                sh_fatal("fork child cannot re-privatise chunk %p (%zu KiB in use), not even in ordinary memory: "
                         "%s; refusing to continue sharing secret memory with the parent",
                         (void *)c->base, keep >> 10, strerror(e));
            if (!c->lazy) {
                bytes_committed -= c->committed - keep;
                if (c->backend == SH_BACKEND_SECRET)
                    committed_secret -= backend == SH_BACKEND_SECRET ? c->committed - keep : c->committed;
            }
            if (backend != c->backend) {
                n_secret--;
                n_locked++;
                c->backend = backend;
            }
            c->committed = keep;
            atomic_fetch_add(&sh_stat_reprivatised, 1);
        }
    }
    sh_log(1, "fork child: copied %llu KiB of the parent's %llu KiB committed (%llu idle chunks dropped)",
           (unsigned long long)(bytes_committed >> 10), (unsigned long long)(was_committed >> 10),
           (unsigned long long)dropped);
    if (fork_pipe[1] >= 0) {
        ssize_t w = write(fork_pipe[1], "", 1);
        (void)w;
        close(fork_pipe[1]);
        fork_pipe[0] = fork_pipe[1] = -1;
    }
    pthread_mutex_unlock(&chunk_mu);
}

/* See internal.h: no lock, no list; the slot table and each chunk's own
 * fields only. The whole committed part is copied (the spans cannot be
 * trusted to say what is in use). */
void sh_chunk_privatise_all(void) {
    for (size_t i = 0; i < nslots_total; i++) {
        struct sh_chunk *c = atomic_load_explicit(&sh_slots[i], memory_order_acquire);
        if (!c || c->slot != i || c->lost)
            continue;
        uint8_t backend = c->backend;
        int e = privatise(c->base, c->size, c->committed, &backend);
        if (e)
            sh_fatal("fork child cannot re-privatise chunk %p (%zu KiB committed), not even in ordinary memory: "
                     "%s; refusing to continue sharing secret memory with the parent",
                     (void *)c->base, c->committed >> 10, strerror(e));
        c->backend = backend;
        atomic_fetch_add(&sh_stat_reprivatised, 1);
    }
}

void sh_chunk_stats(struct secretheap_stats *st) {
    pthread_mutex_lock(&chunk_mu);
    uint64_t large_secret = 0;
    for (struct sh_chunk *c = larges; c; c = c->next)
        large_secret += c->backend == SH_BACKEND_SECRET;
    st->chunks_mapped = n_secret + n_locked;
    st->chunks_secret = n_secret - large_secret;
    st->chunks_locked = n_locked - (n_large - large_secret);
    st->large_regions_mapped = n_large;
    st->bytes_mapped = bytes_mapped;
    st->committed_bytes = bytes_committed;
    st->idle_chunks = n_idle;
    st->committed_secret_bytes = committed_secret;
    st->committed_locked_bytes = bytes_committed - committed_secret;
    st->lazy_bytes = lazy_bytes;
    st->secure_reserve_bytes = reserve_bytes;
    st->arena_bytes = nslots_total << SH_SLOT_SHIFT;
    pthread_mutex_unlock(&chunk_mu);
}

/* Chunk lock held by the caller (sh_chunk_lock). */
int sh_chunk_check(void) {
    int bad = 0;
    uint64_t mapped = 0, committed = 0;
    for (int l = 0; l < 2; l++) {
        for (struct sh_chunk *c = l ? larges : chunks; c; c = c->next) {
            mapped += c->size;
            committed += c->lazy ? 0 : c->committed;
            if (c->committed > c->size || (c->committed & (SH_OS_PAGE - 1))) {
                fprintf(stderr, "secretheap: check: chunk %p committed %zu of %zu\n", (void *)c->base, c->committed,
                        c->size);
                bad = 1;
            }
            for (size_t i = 0; i < c->nslots; i++)
                if (atomic_load(&sh_slots[c->slot + i]) != c) {
                    fprintf(stderr, "secretheap: check: slot %zu does not point to chunk %p\n", c->slot + i,
                            (void *)c->base);
                    bad = 1;
                }
            if (c->large) {
                if (c->committed != c->size) {
                    fprintf(stderr, "secretheap: check: large region %p not wholly committed\n", (void *)c->base);
                    bad = 1;
                }
                continue;
            }
            uint32_t nfree = 0;
            for (uint32_t i = 0; i < c->npages;) {
                struct sh_span *s = atomic_load_explicit(&c->pagemap[i], memory_order_relaxed);
                bool isfree = c->pagefree[i >> 6] & (1ULL << (i & 63));
                if (!s) {
                    if (!isfree) {
                        fprintf(stderr, "secretheap: check: chunk %p OS page %u neither free nor in a span\n",
                                (void *)c->base, i);
                        bad = 1;
                    }
                    nfree++;
                    i++;
                    continue;
                }
                if (isfree || s != &c->spans[i] || s->start != c->base + (uintptr_t)i * SH_OS_PAGE) {
                    fprintf(stderr, "secretheap: check: chunk %p OS page %u: span mismatch\n", (void *)c->base, i);
                    bad = 1;
                    i++;
                    continue;
                }
                if ((size_t)(i + s->npages) * SH_OS_PAGE > c->committed) {
                    fprintf(stderr, "secretheap: check: span at %p extends past committed (%zu)\n", (void *)s->start,
                            c->committed);
                    bad = 1;
                }
                for (uint32_t j = i; j < i + s->npages && j < c->npages; j++)
                    if (atomic_load_explicit(&c->pagemap[j], memory_order_relaxed) != s) {
                        fprintf(stderr, "secretheap: check: span at %p: OS page %u not mapped to it\n",
                                (void *)s->start, j);
                        bad = 1;
                    }
                i += s->npages ? s->npages : 1;
            }
            if (nfree != c->free_pages) {
                fprintf(stderr, "secretheap: check: chunk %p free_pages %u, counted %u\n", (void *)c->base,
                        c->free_pages, nfree);
                bad = 1;
            }
        }
    }
    uint64_t in_spans[2] = {0, 0};
    for (struct sh_chunk *c = chunks; c; c = c->next)
        for (uint32_t i = 0; i < c->npages;) {
            struct sh_span *s = atomic_load_explicit(&c->pagemap[i], memory_order_relaxed);
            if (!s || s != &c->spans[i]) {
                i++;
                continue;
            }
            in_spans[s->secure != 0] += (uint64_t)s->npages * SH_OS_PAGE;
            i += s->npages ? s->npages : 1;
        }
    for (struct sh_chunk *c = larges; c; c = c->next)
        if (c->spans[0].kind == SH_SPAN_LARGE)
            in_spans[c->spans[0].secure != 0] += c->size;
    if (in_spans[0] != ord_bytes || in_spans[1] != sec_bytes) {
        fprintf(stderr, "secretheap: check: bytes in spans: ordinary %llu/%llu, secure %llu/%llu\n",
                (unsigned long long)in_spans[0], (unsigned long long)ord_bytes, (unsigned long long)in_spans[1],
                (unsigned long long)sec_bytes);
        bad = 1;
    }
    if (mapped != bytes_mapped || committed != bytes_committed) {
        fprintf(stderr, "secretheap: check: totals mapped %llu/%llu committed %llu/%llu\n", (unsigned long long)mapped,
                (unsigned long long)bytes_mapped, (unsigned long long)committed, (unsigned long long)bytes_committed);
        bad = 1;
    }
    return bad ? EINVAL : 0;
}

void sh_chunk_foreach_span_in(struct sh_chunk *c, bool (*fn)(struct sh_span *, void *), void *arg) {
    if (c->large)
        return;
    for (uint32_t i = 0; i < c->npages;) {
        struct sh_span *s = atomic_load_explicit(&c->pagemap[i], memory_order_relaxed);
        if (!s) {
            i++;
            continue;
        }
        if (!fn(s, arg))
            return;
        i += s->npages ? s->npages : 1;
    }
}

/* sh_chunk_foreach_span's callback, run by the walk of one chunk to the end. */
struct span_visit {
    void (*fn)(struct sh_span *, void *);
    void *arg;
};

static bool visit_every(struct sh_span *s, void *a) {
    struct span_visit *v = a;
    v->fn(s, v->arg);
    return true;
}

void sh_chunk_foreach_span(void (*fn)(struct sh_span *, void *), void *arg) {
    struct span_visit v = {fn, arg};
    for (struct sh_chunk *c = chunks; c; c = c->next) /* never large: those are on larges */
        sh_chunk_foreach_span_in(c, visit_every, &v);
    for (struct sh_chunk *c = larges; c; c = c->next)
        if (c->spans[0].kind == SH_SPAN_LARGE)
            fn(&c->spans[0], arg);
}
