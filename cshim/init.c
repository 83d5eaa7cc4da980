/*
 * init.c — process initialisation of the C core, once, on first use: every
 * entry that needs the allocator calls sh_init (pthread_once), and
 * libsecretheap.so's constructor (preload/openssl.c) calls it only when a
 * libcrypto is present. Lazy on purpose: options are read from the
 * environment on the first allocator call, never from a constructor that
 * may run before the program has set them (options.c).
 *
 * This is the only file that calls into every module (options, heap, fork,
 * chunk cache, stats): the modules call back only through sh_init, so the
 * file-level call graph has no loop other than this lazy initialisation.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "internal.h"

static void at_exit(void) {
    /* Never unmap from here on: later exit handlers and destructors may
     * still use or free their blocks. */
    sh_chunk_set_exiting();
    if (sh_opt.stats[0])
        sh_stats_print(-1);
}

static void init_once(void) {
    sh_options_init();
    if (sh_opt.nodump)
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sh_heap_init();
    sh_fork_init(); /* before the arena: the gate is in place before any chunk */
    int e = sh_chunk_init();
    if (e)
        sh_log(0, "cannot reserve the %zu GiB arena (%s): every allocation will be exhausted",
               (size_t)(SH_ARENA_SIZE >> 30), strerror(e));
    atexit(at_exit);
    sh_log(1, "initialised (version %s)", SECRETHEAP_VERSION);
}

static pthread_once_t init_once_ctl = PTHREAD_ONCE_INIT;

void sh_init(void) { pthread_once(&init_once_ctl, init_once); }
