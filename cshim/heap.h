/*
 * heap.h — the slab allocator's own state, shared by heap.c (allocation,
 * free, thread exit, fork) and check.c (the invariant checker) and by no
 * other file. Everything else reaches the heap through internal.h.
 */
#ifndef SECRETHEAP_HEAP_H
#define SECRETHEAP_HEAP_H

#include "internal.h"

struct sh_mag_item {
    void *p;
    _Atomic uint16_t *req; /* the block's req slot, saved to skip the lookup on pop */
};

struct sh_mag {
    uint32_t count, cap;
    struct sh_mag_item *items;
};

/* A thread's magazines and the partial slabs it owns. The magazines are
 * its thread's alone; own[cls] is guarded by the lock of class cls (another
 * thread that frees into one of these slabs lists it here); the list links
 * are guarded by sh_tc_mu. */
struct sh_tcache {
    /* 1 while a section is open (heap.c sec_mark): written by its thread
     * only, read by a forking thread, which waits until it is 0. */
    _Atomic uint32_t busy;
    /* Its thread exited: the cache is in the pool (never unmapped, so a full
     * slab that still names it as owner points at readable memory), and a
     * slab that gets a free block goes to the unowned list instead of its
     * own list (partial_push). Written under sh_tc_mu, read under class locks. */
    _Atomic bool dead;
    struct sh_mag mags[SH_NUM_CLASSES];
    struct sh_span *own[SH_NUM_CLASSES] __attribute__((aligned(64)));
    struct sh_tcache *next, *prev;
    size_t map_size;
    struct sh_mag_item storage[];
};

/* Slabs with centrally free blocks are listed, each on one list: its owner
 * thread's own[cls] (sh_tcache), the class's partial list if nobody owns
 * it, or the class's secure list. */
struct sh_class {
    pthread_mutex_t mu;
    struct sh_span *partial;  /* unowned ordinary slabs with free blocks, guarded by mu */
    struct sh_span *spartial; /* the same for secure slabs (the secure reserve), guarded by mu */
    uint64_t slabs;           /* both kinds, guarded by mu */
    uint32_t nlisted[2];      /* listed slabs, ordinary (all owners) and secure, guarded by mu */
} __attribute__((aligned(64)));

/* The classes' lists and locks; the list of live threads' caches. */
SH_HIDDEN extern struct sh_class sh_classes[SH_NUM_CLASSES];
SH_HIDDEN extern pthread_mutex_t sh_tc_mu;
SH_HIDDEN extern struct sh_tcache *sh_tc_list; /* guarded by sh_tc_mu */

#endif /* SECRETHEAP_HEAP_H */
