/*
 * internal.h — the C core's vocabulary, data structures and every cross-file
 * internal function, grouped by file. The design essay (allocation path,
 * free path, zeroing policy, fork) is in alloc/doc.go: the Go allocator and
 * this core implement the same design.
 *
 * Glossary
 *   OS page  the 4 KiB kernel unit; we never say plain "page".
 *   arena    one PROT_NONE, MAP_NORESERVE reservation (64 GiB of address
 *            space, less under RLIMIT_AS; no memory, no memlock) cut into
 *            4 MiB slots.
 *   slot     4 MiB of the arena. A chunk starts at the start of its slot;
 *            the rest of the slot stays PROT_NONE as a guard.
 *   chunk    a region of secret memory mapped MAP_FIXED at a slot: 2 MiB
 *            normally, a power of two down to 64 KiB when RLIMIT_MEMLOCK
 *            headroom is short, or a large region (one request bigger than
 *            half a chunk, spanning as many slots as it needs).
 *   span     a run of OS pages inside a chunk: a slab, a page run (one
 *            request of 32 KiB+1 .. 1 MiB) or the single span of a large
 *            region. Descriptors live out of band, indexed by first OS page.
 *   slab     a span holding blocks of one size class. A class's first
 *            slab is short (a quarter of the generated size, at least one
 *            block: heap.c slab_pages), later ones have the generated size.
 *   own slab  a partial slab on the list of the thread that last refilled
 *            from it (heap.c list_of): refills take their own slabs first,
 *            then unowned ones, and carve only when neither has a block.
 *            At thread exit its listed slabs become unowned (heap.c
 *            disown); its full slabs keep naming its cache, which goes to
 *            a pool (never unmapped) marked dead, so the first block freed
 *            into one lists it as unowned (heap.c partial_push).
 *   kept slab the one empty slab a class keeps listed (on whichever list)
 *            so that an alloc/free pair around zero live blocks does not
 *            carve and release a slab each time; at thread exit a chunk of
 *            one of the thread's empty slabs that holds nothing but kept
 *            slabs gives them back (heap.c disown).
 *   secure slab a slab taken for the secure reserve (OpenSSL mode all,
 *            sh_malloc_secure): on a list of its own, its blocks never go
 *            into magazines, and ordinary spans may not eat into the
 *            reserve's OS pages (pmdcache.c reserve_allows).
 *   block    one allocation handed to a caller.
 *   magazine a per-thread stack of free (already wiped) blocks of one class.
 *   commit   fault OS pages in (a kernel-side write into each OS page for
 *            memfd_secret, mlock for the locked backend) so a refusal is an
 *            error, not SIGBUS. Large regions commit lazily where the kernel
 *            cannot refuse a fault (old model, locked backend).
 *            A chunk's committed part is a prefix; read-ahead starts once a
 *            chunk has 256 KiB committed (pmdcache.c commit_to).
 *   fallback pool  ordinary memory of our own for SECRETHEAP_ON_EXHAUSTED=
 *            fallback (fallback.c): reserved ranges outside the arena,
 *            MADV_DONTDUMP, mlock'ed where memlock allows, power-of-two
 *            blocks behind a 16-byte header, wiped on free. free and
 *            realloc accept a pointer only if it is in the arena or here.
 *   guard    PROT_NONE, MAP_NORESERVE, MADV_DONTDUMP address space: the
 *            arena, and every chunk's place again after it is unmapped.
 *
 * No allocator metadata lives in secret memory: descriptors, bitmaps and
 * magazines are ordinary memory (mmap or libc), so an overflow of a secret
 * block cannot corrupt the allocator and free can validate any pointer.
 *
 * Locks, in the order they are taken: fork lock (fork.c) → tcache list
 * lock (heap.c) → class locks in class order (heap.c) → chunk lock
 * (pmdcache.c). The fast paths (magazine pop/push) take none: they run as
 * sections that a fork waits for (fork.c, the gate).
 */
#ifndef SECRETHEAP_INTERNAL_H
#define SECRETHEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/secretheap.h"
#include "sizeclasses.h"
#include "stats_table.h"

_Static_assert(SH_NUM_CLASSES == SECRETHEAP_NUM_CLASSES, "regenerate sizeclasses.h or update secretheap.h");
_Static_assert(SH_MAX_SLAB_BLOCKS <= 256, "slab bitmaps are four 64-bit words");

#define SH_HIDDEN __attribute__((visibility("hidden")))
#define sh_likely(x) __builtin_expect(!!(x), 1)
#define sh_unlikely(x) __builtin_expect(!!(x), 0)

#define SH_OS_PAGE ((size_t)4096)
#define SH_OS_PAGE_SHIFT 12
#define SH_SLOT_SHIFT 22 /* 4 MiB slots */
#define SH_SLOT_SIZE ((size_t)1 << SH_SLOT_SHIFT)
#define SH_CHUNK_MAX ((size_t)2 << 20)                 /* normal chunk size */
#define SH_CHUNK_MIN ((size_t)64 << 10)                /* smallest chunk under memlock pressure */
#define SH_CHUNK_MAX_PAGES (SH_CHUNK_MAX / SH_OS_PAGE) /* 512 */
#define SH_LARGE_MIN (SH_CHUNK_MAX / 2)                /* > this: a large region of its own */
#ifndef SH_ARENA_SIZE
#define SH_ARENA_SIZE ((size_t)64 << 30) /* 64 GiB of address space, 16384 slots */
#endif
#define SH_ARENA_SLOTS (SH_ARENA_SIZE >> SH_SLOT_SHIFT)

enum { SH_BACKEND_NONE = 0, SH_BACKEND_SECRET = 1, SH_BACKEND_LOCKED = 2 };
enum { SH_SPAN_FREE = 0, SH_SPAN_SLAB = 1, SH_SPAN_RUN = 2, SH_SPAN_LARGE = 3 };

struct sh_chunk;
struct sh_tcache; /* heap.c: a thread's magazines and own slabs */

/*
 * A span descriptor. Fields marked (L) are guarded by the chunk lock and
 * fixed while the span is live; (C) by the lock of the span's class.
 */
struct sh_span {
    uintptr_t start;        /* (L) first byte */
    struct sh_chunk *chunk; /* (L) */
    uint32_t npages;        /* (L) OS pages */
    uint32_t block_size;    /* (L) class size, or npages*4096 for runs/large */
    uint64_t div_mul;       /* (L) sh_class_div_mul[cls]: block index without a divide */
    uint8_t kind;           /* (L) SH_SPAN_* */
    uint8_t cls;            /* (L) size class of a slab */
    uint8_t secure;         /* (L) 1: taken for the secure reserve (sh_malloc_secure) */
    uint16_t nblocks;       /* (L) blocks in a slab */
    uint16_t nfree;         /* (C) blocks free in freebits (not counting magazines) */
    uint16_t listed;        /* (C) 1 while on its class's partial list (secure slabs: the secure list) */
    uint16_t check_mag;     /* secretheap_check scratch: blocks seen in magazines */
    /* (C) the thread cache refilling from this slab, NULL if none. A
     * listed slab is on its owner's list (heap.c list_of): refills take
     * from their own slabs first, so two threads do not write the req slots
     * of one cache line (false sharing) in their fast paths. */
    struct sh_tcache *owner;
    uint64_t freebits[4];        /* (C) bit i set: block i is free and held centrally */
    struct sh_span *next, *prev; /* (C) partial list of the class */
    /* Run/large: requested bytes + 1 while live, 0 when free. */
    _Atomic size_t run_req;
    /*
     * Slab: per block, requested bytes + 1 while live, 0 while free (in the
     * bitmap or in a magazine). Written by whichever thread allocates or
     * frees the block without a lock: malloc with a relaxed store (a plain
     * move on x86), free with one atomic exchange (so of two racing frees
     * exactly one sees the block live). Double-free detection and the
     * requested-bytes statistic need nothing more.
     */
    _Atomic uint16_t req[SH_MAX_SLAB_BLOCKS];
};

struct sh_chunk {
    uintptr_t base;                             /* first byte, slot-aligned */
    uintptr_t end;                              /* base + size */
    size_t size;                                /* mapped bytes */
    size_t committed;                           /* (L) OS pages [0, committed) are faulted in */
    uint32_t npages;                            /* size / 4096 */
    uint32_t slot, nslots;                      /* (L) slots of the arena it occupies */
    uint32_t free_pages;                        /* (L) */
    uint8_t backend;                            /* SH_BACKEND_* */
    uint8_t large;                              /* 1: a large region, span is &spans[0] */
    uint8_t lost;                               /* fork child under dontfork: mapping gone */
    uint8_t lazy;                               /* large region whose OS pages fault in on touch (committed stays 0) */
    uint64_t pagefree[SH_CHUNK_MAX_PAGES / 64]; /* (L) bit set: OS page free */
    struct sh_chunk *next, *prev;               /* (L) list of live chunks */
    size_t meta_size;                           /* bytes of this descriptor (mmap'd) */
    /* OS page → span covering it, NULL if free. Relaxed atomic: read by free without a lock. */
    _Atomic(struct sh_span *) *pagemap;
    struct sh_span *spans; /* indexed by first OS page (normal) or [0] (large) */
};

/* ---- options.c ---- */
/* struct sh_options and the enum options' constants (SH_POLICY_*, SH_EXH_*,
 * SH_OPENSSL_*, SH_FORK_*): generated from internal/options.Table. */
#include "options.h"
SH_HIDDEN extern struct sh_options sh_opt;
/* From sh_init only: reads the environment once; an invalid value aborts
 * naming it (fail closed), an unknown SECRETHEAP_* name is reported. */
SH_HIDDEN void sh_options_init(void);
SH_HIDDEN void sh_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
SH_HIDDEN _Noreturn void sh_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Parses raw (NULL or blank: the default) as option name would be: 0 and the
 * value in one canonical form (internal/options.Canonical) in out, EINVAL and
 * the error text, or ENOENT for a name that is no option. The test vectors
 * run through it. */
SH_HIDDEN int sh_option_check(const char *name, const char *raw, char *out, size_t n);

/* ---- init.c ---- */
SH_HIDDEN void sh_init(void); /* process initialisation, once; idempotent, thread-safe (pthread_once) */

/* ---- heap.c (its own state: heap.h; its checker: check.c) ---- */
SH_HIDDEN void sh_heap_init(void);                /* from sh_init only: locks, magazine sizes, thread key */
SH_HIDDEN void *sh_malloc_secure(size_t n);       /* may use the secure reserve (OpenSSL secure heap) */
SH_HIDDEN void sh_secure_reserve_enable(bool on); /* OpenSSL hooks, mode all */
SH_HIDDEN void sh_heap_prefork(void);             /* also waits until no section is open */
SH_HIDDEN bool sh_heap_trylock_all(void);         /* unseen fork child: the prefork locks, if free */
SH_HIDDEN void sh_heap_postfork_parent(void);
SH_HIDDEN void sh_heap_postfork_child(bool lost_chunks);
SH_HIDDEN void sh_heap_stats(struct secretheap_stats *st); /* per-class fields + live totals */
extern _Thread_local struct sh_tcache *sh_tls_cache;
/* Tests only (NULL otherwise): called by put_blocks between taking empty
 * slabs off their class list and giving them back, so a test can fork
 * inside that window. */
SH_HIDDEN extern void (*sh_test_hook_release)(void);

/* ---- pmdcache.c ---- */
SH_HIDDEN int sh_chunk_init(void); /* reserve the arena; 0 or errno */
SH_HIDDEN extern _Atomic uintptr_t sh_arena_base;
SH_HIDDEN extern _Atomic size_t sh_arena_size; /* 0 until the arena exists: everything is foreign */
SH_HIDDEN extern _Atomic(struct sh_chunk *) sh_slots[SH_ARENA_SLOTS];
/* A span of npages OS pages, committed and zero, registered in the pagemap.
 * kind/cls set up a slab's bitmap. NULL + errno ENOMEM when exhausted.
 * secure: for the secure reserve. While the reserve is on, ordinary spans
 * may not bring the OS pages in ordinary spans to within
 * SECRETHEAP_SECURE_RESERVE bytes (less what secure spans already hold) of
 * the most that memlock and SECRETHEAP_LIMIT allow mapped. */
SH_HIDDEN struct sh_span *sh_span_alloc(uint32_t npages, int kind, int cls, bool secure);
SH_HIDDEN void sh_span_free(struct sh_span *s);                     /* span contents already wiped */
SH_HIDDEN struct sh_span *sh_large_alloc(size_t size, bool secure); /* own region, committed */
SH_HIDDEN void sh_large_free(struct sh_span *s);                    /* wipes and unmaps (not at exit) */
SH_HIDDEN void sh_chunk_prefork(void);
SH_HIDDEN void sh_chunk_postfork_parent(void);
SH_HIDDEN void sh_chunk_postfork_child(void); /* re-privatise or drop every chunk */
/* Unseen fork child with untrusted state: copy every mapped chunk into
 * private memory, reading only the slot table (no lock, no list). */
SH_HIDDEN void sh_chunk_privatise_all(void);
/* Tests only (NULL otherwise): called by the fork child before it copies. */
SH_HIDDEN extern void (*sh_test_hook_child_copy)(void);
SH_HIDDEN void sh_chunk_stats(struct secretheap_stats *st);
SH_HIDDEN int sh_chunk_check(void);        /* with chunk lock; 0 or EINVAL */
SH_HIDDEN void sh_chunk_set_exiting(void); /* from now on never unmap */
SH_HIDDEN void sh_chunk_lock(void);
SH_HIDDEN void sh_chunk_unlock(void);
SH_HIDDEN void sh_secure_reserve_set(bool on);
/* Calls fn on every live span; chunk lock held by the caller. */
SH_HIDDEN void sh_chunk_foreach_span(void (*fn)(struct sh_span *, void *), void *arg);
/* The same for the spans of one normal chunk (none for a large region), in
 * address order, until fn returns false. */
SH_HIDDEN void sh_chunk_foreach_span_in(struct sh_chunk *c, bool (*fn)(struct sh_span *, void *), void *arg);
SH_HIDDEN int sh_chunk_trylock(void); /* 0 or EBUSY */

/* Lock-free lookup of the chunk holding p, NULL if none (the guard part of a
 * slot, a free slot, or outside the arena). */
static inline struct sh_chunk *sh_chunk_of(uintptr_t p) {
    uintptr_t off = p - atomic_load_explicit(&sh_arena_base, memory_order_relaxed);
    if (off >= atomic_load_explicit(&sh_arena_size, memory_order_relaxed))
        return NULL;
    struct sh_chunk *c = atomic_load_explicit(&sh_slots[off >> SH_SLOT_SHIFT], memory_order_acquire);
    if (c == NULL || p >= c->end || p < c->base)
        return NULL;
    return c;
}

static inline bool sh_in_arena(uintptr_t p) {
    return p - atomic_load_explicit(&sh_arena_base, memory_order_relaxed) <
           atomic_load_explicit(&sh_arena_size, memory_order_relaxed);
}

/* ---- secretmem.c ---- */
/*
 * What the kernel gives, detected once at start-up (sh_source_detect, from
 * sh_chunk_init) by behaviour, never by version string: whether
 * memfd_secret works, and which accounting model charges it (see
 * SECRETHEAP_MODEL_* and docs/tuning.md). The model is read off one OS page
 * mapped for the probe: the old model makes the mapping VM_LOCKED (and
 * charges it to VmLck), the new one does not; MADV_COLD refuses VM_LOCKED
 * mappings with EINVAL, so one madvise tells them apart (see secretmem.c).
 */
struct sh_kernel {
    int model;              /* SECRETHEAP_MODEL_* (UNKNOWN when memfd_secret is unavailable) */
    int secret_cause;       /* SH_CAUSE_* why memfd_secret cannot be used, NONE if it can */
    int secret_errno;       /* the errno behind secret_cause */
    uint64_t memlock_limit; /* soft RLIMIT_MEMLOCK, UINT64_MAX for RLIM_INFINITY */
    bool cap_ipc_lock;      /* CAP_IPC_LOCK in the effective set */
};
SH_HIDDEN extern struct sh_kernel sh_kernel;
SH_HIDDEN void sh_source_detect(void);
/* Causes, numbered as SECRETHEAP_CAUSE_*: every failure of memfd_secret,
 * ftruncate, mmap and commit maps to one (sh_cause_of). Only MEMLOCK and
 * LIMIT lead to the exhaustion policy; NO_SUPPORT (and DENIED from
 * memfd_secret itself) to the locked backend under BACKEND=auto; the others
 * are never papered over with weaker memory. */
enum {
    SH_CAUSE_NONE = SECRETHEAP_CAUSE_NONE,
    SH_CAUSE_NO_SUPPORT = SECRETHEAP_CAUSE_NO_SUPPORT,
    SH_CAUSE_DENIED = SECRETHEAP_CAUSE_DENIED,
    SH_CAUSE_MEMLOCK = SECRETHEAP_CAUSE_MEMLOCK,
    SH_CAUSE_LIMIT = SECRETHEAP_CAUSE_LIMIT,
    SH_CAUSE_FDS = SECRETHEAP_CAUSE_FDS,
    SH_CAUSE_MEMORY = SECRETHEAP_CAUSE_MEMORY,
    SH_CAUSE_BADFD = SECRETHEAP_CAUSE_BADFD,
    SH_CAUSE_ARENA = SECRETHEAP_CAUSE_ARENA,
    SH_CAUSE_OTHER = SECRETHEAP_CAUSE_OTHER,
    SH_CAUSE_COUNT = SECRETHEAP_NUM_CAUSES
};
enum { SH_OP_CREATE, SH_OP_SIZE, SH_OP_MAP, SH_OP_COMMIT, SH_OP_LOCK };
SH_HIDDEN int sh_cause_of(int op, int err, int backend);
SH_HIDDEN const char *sh_cause_name(int cause); /* "memlock", "no-support", … */
SH_HIDDEN const char *sh_cause_text(int cause); /* the cause and its fix, one phrase */
/* The cause of this thread's last refused span or region (pmdcache.c sets it,
 * heap.c's exhaustion handling reads it). */
SH_HIDDEN extern _Thread_local int sh_fail_cause;
SH_HIDDEN extern _Atomic uint64_t sh_stat_failures[SH_CAUSE_COUNT];

/* Reserve size bytes aligned to align, PROT_NONE + MAP_NORESERVE + MADV_DONTDUMP
 * (no memory, no memlock, nothing in a core dump). */
SH_HIDDEN int sh_source_reserve(size_t size, size_t align, uintptr_t *out);
/* Reserved → mapped: secret memory MAP_FIXED at addr, nothing committed.
 * Picks the backend from the policy; *backend tells which. 0 or an errno;
 * *cause (SH_CAUSE_*) says why. */
SH_HIDDEN int sh_source_map(uintptr_t addr, size_t size, int *backend, int *cause);
/* Mapped → committed for [addr, addr+n): every OS page faulted in by a
 * kernel-side write (secret: a refused page is EFAULT, never SIGBUS) or
 * mlock (locked), using no descriptor. 0 or the errno (EFAULT: refused). */
SH_HIDDEN int sh_source_commit(uintptr_t addr, size_t n, int backend);
/* The same, saying in *done how many bytes (whole OS pages) were committed
 * before a refusal: those stay committed and charged. */
SH_HIDDEN int sh_source_commit_some(uintptr_t addr, size_t n, int backend, size_t *done);
/* Large regions where a fault cannot be refused (old model: charged at
 * mmap; locked: mlock2 MLOCK_ONFAULT charges now): make [addr, addr+n)
 * usable without faulting it in. 0, or an errno if the backend must commit
 * eagerly (new model: a later fault could be refused with SIGBUS). */
SH_HIDDEN int sh_source_commit_lazy(uintptr_t addr, size_t n, int backend);
/* Anything → reserved: PROT_NONE, MAP_NORESERVE, MADV_DONTDUMP over [addr, addr+size). */
SH_HIDDEN void sh_source_guard(uintptr_t addr, size_t size);
/* Guard a range that may no longer be ours (a fork child's MADV_DONTFORK
 * hole): only where nothing is mapped; false if something else is there. */
SH_HIDDEN bool sh_source_guard_hole(uintptr_t addr, size_t size);
/* Committed/mapped → reserved: wipe the committed part (lazy: every OS page
 * that is resident), unmap, PROT_NONE again. */
SH_HIDDEN void sh_source_unmap(uintptr_t addr, size_t size, size_t committed, int backend, bool lazy);
/* The wipe alone (a large region freed while the process exits). */
SH_HIDDEN void sh_source_wipe(uintptr_t addr, size_t size, size_t committed, bool lazy);
/* Bytes the next mapping of backend may still take under RLIMIT_MEMLOCK;
 * *unlimited for RLIM_INFINITY or (old model, locked backend) CAP_IPC_LOCK.
 * own_secret: bytes of secret memory this process has committed (the new
 * model's charge, which no file shows). Old model / locked: limit - VmLck.
 * New model: limit - own_secret, a ceiling only (the budget is the user's,
 * shared and unreadable: the kernel's refusal at commit is the truth).
 * Old model / locked: ~4 system calls, so pmdcache.c caches it (headroom()). */
SH_HIDDEN uint64_t sh_source_headroom(int backend, uint64_t own_secret, bool *unlimited);
SH_HIDDEN extern _Atomic uint64_t sh_stat_headroom_reads; /* calls of the above (tests) */
/* Address space left under RLIMIT_AS (limit - VmSize), UINT64_MAX if none. */
SH_HIDDEN uint64_t sh_source_as_room(void);
/* The backend the next mapping will use (policy, and whether memfd_secret works). */
SH_HIDDEN int sh_source_next_backend(void);
/* Fork child: give the mapping at addr private pages holding the same
 * bytes in [0, keep) (copy policy: a new memfd_secret file, committed
 * there, nothing past keep) or re-lock [0, keep) (locked backend: its
 * copy-on-write pages are already private). 0 or errno; on failure the
 * mapping at addr is unchanged. */
SH_HIDDEN int sh_source_reprivatise(uintptr_t addr, size_t size, size_t keep, int backend);
/* Fork child that cannot have secret memory: the same into ordinary private
 * memory (MADV_DONTDUMP; *locked: mlock of [0, keep) succeeded). 0 or errno. */
SH_HIDDEN int sh_source_privatise_ordinary(uintptr_t addr, size_t size, size_t keep, bool *locked);
/* Mark a mapping MADV_DONTFORK (dontfork policy). */
SH_HIDDEN int sh_source_dontfork(uintptr_t addr, size_t size);
SH_HIDDEN int sh_source_backend_in_use(void); /* SH_BACKEND_* of the last mapping */

/* ---- fallback.c ---- */
/* Ordinary memory (own anonymous mappings, MADV_DONTDUMP, mlock'ed where
 * memlock allows, wiped on free) for SECRETHEAP_ON_EXHAUSTED=fallback. */
SH_HIDDEN void *sh_fallback_alloc(size_t n);        /* zeroed; NULL + ENOMEM */
SH_HIDDEN bool sh_fallback_owns(const void *p);     /* p lies in the pool (a block or not) */
SH_HIDDEN size_t sh_fallback_usable(const void *p); /* usable bytes of the live block at p, else 0 */
/* Wipes and frees the live block at p (p in the pool); anything else there
 * (double free, interior pointer) aborts naming op. */
SH_HIDDEN void sh_fallback_free(void *p, const char *op);
SH_HIDDEN extern _Atomic uint64_t sh_stat_fallback_live; /* bytes of live fallback blocks */

/* ---- stats.c ---- */
SH_HIDDEN extern _Atomic uint64_t sh_stat_fallbacks;
SH_HIDDEN extern _Atomic uint64_t sh_stat_exhausted_returns;
SH_HIDDEN extern _Atomic uint64_t sh_stat_reprivatised;
SH_HIDDEN extern _Atomic uint64_t sh_stat_misuse;
SH_HIDDEN extern _Atomic uint64_t sh_stat_openssl_hooked;
/* The whole report (core block, then the OpenSSL hooks') to fd, as text; fd < 0:
 * where and in which form (text, or json: one JSON line) SECRETHEAP_STATS
 * says. Format: see stats.c. */
SH_HIDDEN void sh_stats_print(int fd);

/* ---- preload/openssl.c (the OpenSSL hooks; absent from the C unit tests but one) ---- */
/* Its values for the stats report (struct sh_openssl_stats: stats_table.h,
 * from internal/stats); called by sh_stats_print. */
SH_HIDDEN void sh_openssl_stats(struct sh_openssl_stats *out) __attribute__((weak));

/* ---- fork.c ---- */
SH_HIDDEN void sh_fork_init(void); /* gate page, membarrier, pthread_atfork; once */
/*
 * The fork gate (fork.c): a word in a MADV_WIPEONFORK page. OPEN normally;
 * FORKING from prepare until the child has its copy; 0 in a child until the
 * child handler runs (and for good in a child made without the handlers,
 * until its first allocator call); CLOSED in such a child whose allocator
 * state could not be trusted. Every allocator entry that may write secret
 * memory or move blocks without a lock reads it inside a section (heap.c
 * sec_enter): one load on the fast path.
 */
enum { SH_GATE_OPEN = 1, SH_GATE_FORKING = 2, SH_GATE_CLOSED = 3 };
SH_HIDDEN extern _Atomic(_Atomic uint32_t *) sh_fork_gate; /* set once, before the arena */
static inline _Atomic uint32_t *sh_gate(void) { return atomic_load_explicit(&sh_fork_gate, memory_order_acquire); }
/* The gate read g != OPEN, outside any section: waits for the fork to end,
 * or makes an unseen child private. Returns what to do next. */
enum { SH_GATE_RETRY = 0, SH_GATE_PASS = 1 /* the forking thread itself */ };
SH_HIDDEN int sh_fork_gate_wait(uint32_t g); /* SH_GATE_RETRY, _PASS or _CLOSED */
/* heap.c: for entries outside heap.c that take allocator locks (stats.c,
 * check.c): passes the gate; 0, or SH_GATE_CLOSED. */
SH_HIDDEN int sh_fork_gate_check(void);
SH_HIDDEN extern bool sh_test_no_membarrier; /* tests: the forker's barrier without membarrier */

/* ---- wipe ---- */
/*
 * Zero n bytes so that the compiler cannot drop the stores. free() writes to
 * memory the program will (as far as the compiler can tell) never read again,
 * which is exactly the dead store an optimiser removes, and LTO could see
 * through our own free. explicit_bzero (glibc ≥ 2.25) is a memset followed
 * by a compiler barrier that claims to read the buffer, so it is as fast as
 * memset (vectorised, ifunc'd) and cannot be elided.
 */
void explicit_bzero(void *s, size_t n);
static inline void sh_wipe(void *p, size_t n) { explicit_bzero(p, n); }

/*
 * Small blocks (≤ 128 B, 16-byte aligned, a multiple of 16): inline 16-byte
 * stores, then an empty asm that takes the pointer and clobbers memory, so
 * the compiler must assume the stores are read and cannot drop them (the
 * same barrier explicit_bzero uses). Saves the call: 2 ns instead of 5 ns
 * for 32 B here; from 256 B on glibc's memset is as fast or faster.
 * no-tree-loop-distribute-patterns keeps gcc from turning the loop back into
 * a memset call.
 */
typedef uint64_t sh_v16 __attribute__((vector_size(16)));
#if defined(__clang__)
#define SH_NO_MEMSET_IDIOM /* clang may call memset here: still not dropped, only slower */
#else
#define SH_NO_MEMSET_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
/*
 * Larger blocks up to 8 KiB (class sizes above 128 B are multiples of 32):
 * an AVX2 store loop where the CPU has it (sh_wipe_avx2_ok, set once at
 * init). glibc's memset switches to rep stosb from 2 KiB on, which on this
 * machine (AMD EPYC) wipes 4 KiB in ~46-49 ns against ~40 ns for the loop,
 * and 256 B in 4.6 ns against 3.1 ns; from 16 KiB on they are equal. The
 * 4096 B malloc+free pair is almost all wipe (bench/c/allocbench.c).
 */
SH_HIDDEN extern bool sh_wipe_avx2_ok;
SH_HIDDEN void sh_wipe_avx2(void *p, size_t n); /* n a multiple of 32 */
SH_NO_MEMSET_IDIOM static inline void sh_wipe_block(void *p, size_t n) {
    if (n <= 128) {
        sh_v16 *q = p, z = {0, 0};
        for (size_t i = 0; i < n / 16; i++)
            q[i] = z;
        __asm__ __volatile__("" : : "r"(p) : "memory");
    } else if (n <= 8192 && sh_wipe_avx2_ok) {
        sh_wipe_avx2(p, n);
    } else {
        explicit_bzero(p, n);
    }
}

/* Index of the block at offset off of a slab, without a divide: exact for
 * every offset inside a slab of its class (alloc/mksizeclasses.go checks it;
 * alloc's span.blockIndex is the same). */
static inline uint32_t sh_block_index(const struct sh_span *s, uintptr_t off) {
    return (uint32_t)(((uint64_t)off * s->div_mul) >> 32);
}

#endif /* SECRETHEAP_INTERNAL_H */
