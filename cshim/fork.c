/*
 * fork.c — fork safety. memfd_secret mappings are MAP_SHARED, so without
 * this a child would share secret pages with its parent while both hand out
 * blocks from diverging free lists (Botan#602). Each module has its own
 * prefork / postfork_parent / postfork_child hooks (jemalloc's pattern);
 * this file orders them so that every lock is taken in the documented order
 * (fork → tcache list → classes → chunk) before fork and released after it:
 *   prepare  close the gate (below), heap (tcache list, wait until no thread
 *            is inside a lock-free section, class locks), then chunk lock
 *   parent   wait until the child has copied (chunk), release in reverse,
 *            open the gate
 *   child    chunk: re-privatise every chunk in use (copy: new memfd_secret,
 *            copy the OS pages in use, mremap over the old address) or drop
 *            them (dontfork); then heap: put orphaned magazines back.
 *
 * The gate. The fast paths (magazine pop and push, the wipe in free) take
 * no lock, so holding every lock does not stop them. Each of them runs as a
 * section: the thread marks its cache busy, then reads the gate word; a
 * closed gate sends it to wait on fork_mu (held by the forking thread from
 * prepare until the child has its copy). prepare closes the gate, makes
 * every thread see that (membarrier), then waits until no cache is busy:
 * after that no allocator code writes secret memory until the child's copy
 * is done, so the child gets the allocator's state at the fork call.
 *
 * The gate word lives in a private anonymous page marked MADV_WIPEONFORK:
 * it reads 0 in every child, whether or not the child handler ran. The
 * handler sets it to OPEN again; a child made without the handlers
 * (glibc's _Fork, clone or a raw fork system call) finds 0 at its first
 * allocator call, before the call writes anything, and gets private copies
 * first (unseen_child). vfork and posix_spawn share the parent's memory and
 * exec at once, which is safe; they see the parent's gate.
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

/* Until sh_fork_init maps the page (no chunk exists before that). */
static _Atomic uint32_t gate_static = SH_GATE_OPEN;
_Atomic(_Atomic uint32_t *) sh_fork_gate = &gate_static;

static pthread_mutex_t fork_mu = PTHREAD_MUTEX_INITIALIZER;
/* The thread in fork(), between prepare and its parent or child handler:
 * it may pass a closed gate (other libraries' atfork handlers that run
 * after ours may allocate). */
static _Thread_local bool forking;
static bool membarrier_ok;
static bool child_done; /* the child handler ran in this process (never in the parent) */
/* An unseen child's allocator that was closed (and every process it forks):
 * the handlers take no lock, since a thread that no longer exists may hold
 * them; a child copies every chunk again (they are this process's own now,
 * and a memfd_secret copy is MAP_SHARED like the original). */
static bool allocator_closed;

static void close_allocator(void) {
    sh_chunk_privatise_all();
    atomic_store(sh_gate(), SH_GATE_CLOSED);
}

static void membarrier_register(void) {
    membarrier_ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

/*
 * Every running thread of the process executes a full memory barrier, so
 * that a section that marked its cache busy before this either sees the
 * closed gate or is seen busy: the other half of the fence the sections do
 * not pay for. membarrier(PRIVATE_EXPEDITED) does it with an IPI to each
 * CPU running one of our threads. Where it is refused (a seccomp filter),
 * write-protecting a page we touched does the same on x86: the kernel
 * flushes the TLB of every CPU running this mm with an IPI, and an
 * interrupt is serialising (HotSpot's "serialize page").
 */
static _Atomic(char *) serialize_page;
bool sh_test_no_membarrier;
static void barrier_all(void) {
    if (membarrier_ok && !sh_test_no_membarrier && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    char *p = atomic_load(&serialize_page);
    if (!p) {
        p = mmap(NULL, SH_OS_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        atomic_store(&serialize_page, p);
    }
    *(volatile char *)p = 1; /* present and writable: the downgrade must flush */
    mprotect(p, SH_OS_PAGE, PROT_READ);
    mprotect(p, SH_OS_PAGE, PROT_READ | PROT_WRITE);
}

static void prepare(void) {
    if (allocator_closed)
        return;
    pthread_mutex_lock(&fork_mu);
    forking = true;
    child_done = false;
    atomic_store(sh_gate(), SH_GATE_FORKING);
    barrier_all();
    sh_heap_prefork();
    sh_chunk_prefork();
}

static void parent(void) {
    if (allocator_closed)
        return;
    sh_chunk_postfork_parent();
    sh_heap_postfork_parent();
    atomic_store(sh_gate(), SH_GATE_OPEN);
    forking = false;
    pthread_mutex_unlock(&fork_mu);
}

static void child(void) {
    if (allocator_closed) {
        close_allocator();
        return;
    }
    if (child_done)
        return; /* run early by sh_fork_gate_wait */
    child_done = true;
    membarrier_register();
    sh_chunk_postfork_child();
    sh_heap_postfork_child(sh_opt.fork == SH_FORK_DONTFORK);
    forking = false;
    atomic_store(sh_gate(), SH_GATE_OPEN);
    pthread_mutex_unlock(&fork_mu);
}

/*
 * A child made without our handlers, at its first allocator call: it is the
 * only thread, and nothing of ours has written secret memory yet. If no
 * allocator lock was held at the fork (a thread that no longer exists
 * could have been halfway through changing the heap), it is a fork like
 * any other, only later: the same child work makes it private and
 * consistent. Otherwise every chunk is still made private (so neither the
 * program's writes nor ours reach the parent) but the allocator is closed
 * for good: allocations follow SECRETHEAP_ON_EXHAUSTED, frees of inherited
 * blocks are ignored.
 */
static void unseen_child(void) {
    child_done = true;
    membarrier_register();
    if (allocator_closed) {
        close_allocator();
        return;
    }
    bool locked = pthread_mutex_trylock(&fork_mu) == 0;
    if (locked && sh_heap_trylock_all()) { /* tcache list, classes, chunk */
        sh_log(1, "fork without the atfork handlers (_Fork, clone or a raw fork system call) seen at the first "
                  "allocator call: re-privatising now");
        sh_chunk_postfork_child();
        sh_heap_postfork_child(sh_opt.fork == SH_FORK_DONTFORK);
        atomic_store(sh_gate(), SH_GATE_OPEN);
        pthread_mutex_unlock(&fork_mu);
        return;
    }
    if (locked)
        pthread_mutex_unlock(&fork_mu);
    allocator_closed = true;
    close_allocator();
    sh_log(0, "WARNING: this process was made by fork without the atfork handlers (_Fork, clone or a raw fork "
              "system call) while another thread was inside the allocator: its secret blocks were copied to private "
              "memory, but the allocator state cannot be trusted; from now on allocations follow "
              "SECRETHEAP_ON_EXHAUSTED and frees of inherited blocks are ignored");
}

int sh_fork_gate_wait(uint32_t g) {
    if (g == SH_GATE_FORKING) {
        if (forking)
            return SH_GATE_PASS;
        pthread_mutex_lock(&fork_mu);
        pthread_mutex_unlock(&fork_mu);
        return SH_GATE_RETRY;
    }
    if (g == 0) {
        if (forking)
            child(); /* a child before our child handler ran (another library's handler allocates) */
        else
            unseen_child();
        return SH_GATE_RETRY;
    }
    return g == SH_GATE_CLOSED ? SH_GATE_CLOSED : SH_GATE_RETRY;
}

void sh_fork_init(void) {
    membarrier_register();
    void *p = mmap(NULL, SH_OS_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED && madvise(p, SH_OS_PAGE, MADV_WIPEONFORK) == 0) {
        _Atomic uint32_t *g = p;
        atomic_store(g, SH_GATE_OPEN);
        atomic_store(&sh_fork_gate, g);
    } else {
        if (p != MAP_FAILED)
            munmap(p, SH_OS_PAGE);
        sh_log(1,
               "MADV_WIPEONFORK unavailable (%s): a child made without the atfork handlers (_Fork, clone) "
               "would not be detected",
               strerror(errno));
    }
    pthread_atfork(prepare, parent, child);
}
