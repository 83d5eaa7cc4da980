/*
 * secretheap.h — a malloc-compatible allocator whose blocks live in secret
 * memory: memfd_secret(2) pages (removed from the kernel direct map, never
 * swapped, zeros in core dumps, unreadable through /proc/PID/mem or ptrace),
 * or mlock'ed anonymous memory where memfd_secret is missing.
 *
 * Every block is at least 16-byte aligned and zero when handed out; free
 * wipes it. When secret memory runs out under SECRETHEAP_ON_EXHAUSTED=
 * fallback, blocks come from the library's fallback pool: ordinary memory,
 * but its own (left out of core dumps, locked where RLIMIT_MEMLOCK allows)
 * and wiped on free like every other block.
 * Bad input is rejected before anything is written: a pointer that is
 * neither a block of ours nor a fallback block (memory from malloc(3),
 * mmap, the stack) given to secretheap_free or secretheap_realloc, a double
 * free, or a pointer into the middle of a block prints a message naming it
 * and aborts. Blocks from malloc(3) go to free(3), never here.
 *
 * Configuration comes from SECRETHEAP_* environment variables, read once
 * (the table: internal/options, docs/tuning.md); an invalid value aborts at
 * start-up naming the variable and the accepted values. The design is in
 * alloc/doc.go (the Go allocator implements the same one).
 */
#ifndef SECRETHEAP_H
#define SECRETHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SECRETHEAP_VERSION_MAJOR 0
#define SECRETHEAP_VERSION_MINOR 1
#define SECRETHEAP_VERSION_PATCH 0
#define SECRETHEAP_VERSION "0.1.0"

#if defined(__GNUC__)
#define SECRETHEAP_API __attribute__((visibility("default")))
#else
#define SECRETHEAP_API
#endif

/* Backends, as returned by secretheap_backend. */
#define SECRETHEAP_BACKEND_NONE 0   /* not a live block of ours */
#define SECRETHEAP_BACKEND_SECRET 1 /* memfd_secret pages */
#define SECRETHEAP_BACKEND_LOCKED 2 /* anonymous, mlock'ed, MADV_DONTDUMP */
/* The fallback pool (SECRETHEAP_ON_EXHAUSTED=fallback): ordinary anonymous
 * memory, MADV_DONTDUMP, wiped on free, locked only where memlock allows. */
#define SECRETHEAP_BACKEND_FALLBACK 3

/* Accounting models of memfd_secret memory, as in secretheap_stats.model
 * (detected at start-up from the kernel's behaviour, never its version). */
#define SECRETHEAP_MODEL_UNKNOWN 0 /* memfd_secret unavailable, or not yet detected */
#define SECRETHEAP_MODEL_OLD 1 /* charged per process for the whole mapping at mmap (VmLck); CAP_IPC_LOCK bypasses */
#define SECRETHEAP_MODEL_NEW 2 /* charged per user at each OS page's first fault; no bypass; not in VmLck */

/* Why secret memory was refused: secretheap_stats.failures[] index. */
#define SECRETHEAP_CAUSE_NONE 0
#define SECRETHEAP_CAUSE_NO_SUPPORT 1 /* memfd_secret ENOSYS: no kernel support (secretmem.enable=1 on 6.1) */
#define SECRETHEAP_CAUSE_DENIED 2     /* EPERM/EACCES: seccomp or an LSM denied the call */
#define SECRETHEAP_CAUSE_MEMLOCK 3    /* RLIMIT_MEMLOCK (EAGAIN at mmap, EFAULT at commit on the new model) */
#define SECRETHEAP_CAUSE_LIMIT 4      /* SECRETHEAP_LIMIT */
#define SECRETHEAP_CAUSE_FDS 5        /* EMFILE/ENFILE: descriptor limit */
#define SECRETHEAP_CAUSE_MEMORY 6     /* ENOMEM: vm.max_map_count, address space or RAM */
#define SECRETHEAP_CAUSE_BADFD 7      /* EBADF */
#define SECRETHEAP_CAUSE_ARENA 8      /* the arena's address space is full */
#define SECRETHEAP_CAUSE_OTHER 9      /* any other errno */
#define SECRETHEAP_NUM_CAUSES 10

/* Number of small size classes (16 B .. 32 KiB); see cshim/sizeclasses.h. */
#define SECRETHEAP_NUM_CLASSES 40

/* Per size class, at the moment secretheap_stats was called. */
struct secretheap_class_stats {
    uint64_t size;            /* block size of the class */
    uint64_t requested_bytes; /* sum of the sizes asked for by live blocks */
    uint64_t reserved_bytes;  /* live blocks * block size */
    uint64_t live_blocks;     /* blocks handed out and not freed */
    uint64_t slabs;           /* slabs of this class (OS-page runs) */
};

/*
 * The same fields as the Go allocator's alloc.Stats (snake_case here).
 * Fields are only ever appended; pass sizeof(struct secretheap_stats) so
 * that an older caller gets the prefix it knows.
 */
struct secretheap_stats {
    uint64_t struct_size; /* bytes filled in */
    uint64_t backend;     /* SECRETHEAP_BACKEND_* of the last chunk mapped, 0 before the first */

    /* Live blocks, totals over classes, page runs and large regions. */
    uint64_t requested_bytes; /* bytes asked for */
    uint64_t reserved_bytes;  /* bytes reserved (block sizes) */
    uint64_t live_blocks;

    /* Page runs: requests above the largest class (32 KiB), OS pages inside a chunk. */
    uint64_t run_blocks, run_requested_bytes, run_reserved_bytes;
    /* Large regions: requests above half a chunk (1 MiB), a region of their own. */
    uint64_t large_regions, large_requested_bytes, large_reserved_bytes;

    /* Chunk cache. */
    uint64_t chunks_mapped;        /* chunks mapped (in use or idle), large regions included */
    uint64_t chunks_secret;        /* chunks (not large regions) from memfd_secret */
    uint64_t chunks_locked;        /* chunks (not large regions) from the locked backend */
    uint64_t large_regions_mapped; /* large regions mapped */
    uint64_t bytes_mapped;         /* secret memory mapped (charged to RLIMIT_MEMLOCK) */
    uint64_t committed_bytes;      /* OS pages committed (faulted in) */
    uint64_t idle_chunks;          /* wholly free chunks kept for reuse */

    uint64_t fallbacks;         /* allocations served from libc on exhaustion */
    uint64_t fork_reprivatised; /* chunks re-privatised in fork children */
    uint64_t misuse_caught;     /* double/interior frees, writes after free (then abort) */
    uint64_t openssl_hooked;    /* 1: OpenSSL's allocator is ours; 0: not (yet); 2: OpenSSL refused */

    struct secretheap_class_stats classes[SECRETHEAP_NUM_CLASSES];

    /* Appended after the classes (older callers see the prefix). */
    uint64_t fallback_bytes;    /* fallback pool bytes in live blocks (power-of-two blocks, headers included) */
    uint64_t exhausted_returns; /* allocations that returned NULL/ENOMEM because secret memory ran out */
    /* Appended in 0.2: the kernel's accounting, and what the library itself
     * committed (never read from VmLck, which the new model leaves at 0). */
    uint64_t model;                  /* SECRETHEAP_MODEL_* */
    uint64_t secret_unavailable;     /* SECRETHEAP_CAUSE_* why memfd_secret cannot be used, 0 if it can */
    uint64_t memlock_limit;          /* soft RLIMIT_MEMLOCK at start-up, bytes; UINT64_MAX: unlimited */
    uint64_t memlock_bypass;         /* 1: CAP_IPC_LOCK lifts the limit for secret memory (old model only) */
    uint64_t budget_shared;          /* 1: the limit is a per-user budget shared with every process of the uid */
    uint64_t committed_secret_bytes; /* OS pages committed in memfd_secret chunks and regions */
    uint64_t committed_locked_bytes; /* OS pages committed (mlock'ed) in locked-backend chunks and regions */
    uint64_t lazy_bytes; /* large regions mapped whose OS pages fault in on first touch (old model, locked) */
    uint64_t
        secure_reserve_bytes; /* secure reserve in force: SECRETHEAP_SECURE_RESERVE capped to a quarter of the budget */
    uint64_t arena_bytes;     /* address space reserved for chunks (shrunk under RLIMIT_AS) */
    uint64_t failures[SECRETHEAP_NUM_CAUSES]; /* refused chunk mappings and commits, by SECRETHEAP_CAUSE_* */
};

/* malloc(3) semantics; the block is zero. NULL with errno ENOMEM when
 * exhausted and SECRETHEAP_ON_EXHAUSTED=null. */
SECRETHEAP_API void *secretheap_malloc(size_t n);
/* Overflowing nmemb*size → NULL, errno ENOMEM. */
SECRETHEAP_API void *secretheap_calloc(size_t nmemb, size_t size);
/* p NULL → malloc(n); n 0 → free(p), NULL. A moved block's old copy is wiped.
 * On failure p is untouched and NULL is returned with errno ENOMEM. A p that
 * is not a live block of ours aborts, naming it, before anything is written. */
SECRETHEAP_API void *secretheap_realloc(void *p, size_t n);
/* Wipes the block. NULL is fine; a pointer that is not a block of ours aborts,
 * naming it, before anything is written. */
SECRETHEAP_API void secretheap_free(void *p);
/* Usable bytes of a live block we handed out, 0 for anything else. */
SECRETHEAP_API size_t secretheap_usable_size(const void *p);
/* SECRETHEAP_BACKEND_* of the live block containing p (any byte of it; for
 * a fallback block, its start). */
SECRETHEAP_API int secretheap_backend(const void *p);
/* Fills *out (out_size bytes of it). 0 on success, EINVAL if out is NULL or
 * out_size is smaller than the first field. */
SECRETHEAP_API int secretheap_stats(struct secretheap_stats *out, size_t out_size);
/* Checks every slab and chunk invariant (used + free == capacity, free blocks
 * inside their slab and wiped, committed >= used). 0 if all hold, else EINVAL
 * after a message on stderr. Exact when no other thread is allocating. */
SECRETHEAP_API int secretheap_check(void);
/* The library's SECRETHEAP_VERSION (may differ from the header compiled against). */
SECRETHEAP_API const char *secretheap_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SECRETHEAP_H */
