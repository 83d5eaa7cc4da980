/*
 * fork.c — fork safety. memfd_secret mappings are MAP_SHARED, so without
 * this a child would share secret pages with its parent while both hand out
 * blocks from diverging free lists (Botan#602). Each module has its own
 * prefork / postfork_parent / postfork_child hooks (jemalloc's pattern);
 * this file orders them so that every lock is taken in the documented order
 * (tcache list → classes → chunk) before fork and released after it:
 *   prepare  heap (tcache list + class locks), then chunk lock
 *   parent   release in reverse
 *   child    chunk: re-privatise every chunk (copy: new memfd_secret, copy
 *            the committed OS pages, mremap over the old address) or drop
 *            them (dontfork: MADV_DONTFORK already removed the mappings);
 *            a child that cannot re-privatise aborts with a message rather
 *            than keep sharing; then heap: put orphaned magazines back.
 * vfork and posix_spawn skip these handlers and exec at once, which is safe.
 */
#include "internal.h"

static void prepare(void) {
    sh_heap_prefork();
    sh_chunk_prefork();
}

static void parent(void) {
    sh_chunk_postfork_parent();
    sh_heap_postfork_parent();
}

static void child(void) {
    sh_chunk_postfork_child();
    sh_heap_postfork_child(sh_opt.fork == SH_FORK_DONTFORK);
}

void sh_fork_init(void) { pthread_atfork(prepare, parent, child); }
