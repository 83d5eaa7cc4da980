/*
 * secretmem.c — the source layer: secret memory from the kernel.
 *
 * States of address space, and the call that moves between them:
 *   none      → reserved   sh_source_reserve: PROT_NONE, MAP_NORESERVE (costs
 *                          no memory and no RLIMIT_MEMLOCK)
 *   reserved  → mapped     sh_source_map: memfd_secret + ftruncate + mmap
 *                          MAP_SHARED|MAP_FIXED (old model: charged to the
 *                          process's RLIMIT_MEMLOCK for the whole length at
 *                          once; new model: nothing charged yet), or the
 *                          locked backend
 *   mapped    → committed  sh_source_commit: a kernel-side write into each OS
 *                          page (secret: the kernel reports a refused OS page
 *                          as EFAULT instead of a SIGBUS at first touch; new
 *                          model: this is where the user's budget is charged)
 *                          or mlock (locked)
 *   committed → reserved   sh_source_unmap: wipe, mmap PROT_NONE over it
 * Every reserved range is MADV_DONTDUMP: a core dump writer that copies
 * PROT_NONE ranges (gdb's gcore writes zeros for them) would otherwise emit
 * the whole 64 GiB arena. A fresh PROT_NONE mapping does not inherit the
 * flag, so sh_source_guard sets it again wherever one is laid down.
 * memfd_secret OS pages cannot be released one by one (MADV_DONTNEED and
 * fallocate fail): they go back to the kernel only when the mapping goes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

static _Atomic int backend_in_use; /* SH_BACKEND_* of the last successful mapping */
static _Atomic int secret_broken;  /* errno of a failed memfd_secret (ENOSYS/EPERM), sticky */

struct sh_kernel sh_kernel;
_Thread_local int sh_fail_cause;
_Atomic uint64_t sh_stat_failures[SH_CAUSE_COUNT];

int sh_cause_of(int op, int err, int backend) {
    switch (err) {
    case 0:
        return SH_CAUSE_NONE;
    case ENOSYS:
        return op == SH_OP_CREATE ? SH_CAUSE_NO_SUPPORT : SH_CAUSE_OTHER;
    case EPERM:
    case EACCES:
        /* mlock with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK is EPERM. */
        return op == SH_OP_LOCK ? SH_CAUSE_MEMLOCK : SH_CAUSE_DENIED;
    case EAGAIN:
        /* mmap of a VM_LOCKED (old model) mapping past the limit; mlock. */
        return op == SH_OP_MAP || op == SH_OP_LOCK ? SH_CAUSE_MEMLOCK : SH_CAUSE_OTHER;
    case EFAULT:
        /* A kernel-side write whose fault was refused: on the new model the
         * per-user charge (VM_FAULT_SIGBUS); on the old one the charge was
         * taken at mmap, so only an out-of-memory fault is left. */
        if (op == SH_OP_COMMIT)
            return backend == SH_BACKEND_SECRET && sh_kernel.model == SECRETHEAP_MODEL_NEW ? SH_CAUSE_MEMLOCK
                                                                                           : SH_CAUSE_MEMORY;
        return SH_CAUSE_OTHER;
    case ENOMEM:
        /* mlock past the limit; elsewhere vm.max_map_count, address space or RAM. */
        return op == SH_OP_LOCK ? SH_CAUSE_MEMLOCK : SH_CAUSE_MEMORY;
    case EMFILE:
    case ENFILE:
        return SH_CAUSE_FDS;
    case EBADF:
        return SH_CAUSE_BADFD;
    default:
        return SH_CAUSE_OTHER;
    }
}

const char *sh_cause_name(int cause) {
    static const char *const names[SH_CAUSE_COUNT] = {"none",        "no-support", "denied", "memlock", "limit",
                                                      "descriptors", "memory",     "bad-fd", "arena",   "other"};
    return cause >= 0 && cause < SH_CAUSE_COUNT ? names[cause] : "other";
}

const char *sh_cause_text(int cause) {
    switch (cause) {
    case SH_CAUSE_NO_SUPPORT:
        return "the kernel has no memfd_secret (ENOSYS: older than 5.14, CONFIG_SECRETMEM=n, or Debian 12's 6.1 "
               "booted without secretmem.enable=1)";
    case SH_CAUSE_DENIED:
        return "denied by policy (EPERM/EACCES: a seccomp profile or an LSM refuses the call)";
    case SH_CAUSE_MEMLOCK:
        return "RLIMIT_MEMLOCK is used up (raise it: LimitMEMLOCK= in the systemd unit, memlock in "
               "/etc/security/limits.conf, docker run --ulimit memlock=, ulimit -l)";
    case SH_CAUSE_LIMIT:
        return "SECRETHEAP_LIMIT is reached";
    case SH_CAUSE_FDS:
        return "no file descriptor left (EMFILE/ENFILE: raise ulimit -n)";
    case SH_CAUSE_MEMORY:
        return "the kernel is out of mappings or memory (ENOMEM: vm.max_map_count, address space or RAM)";
    case SH_CAUSE_BADFD:
        return "a descriptor was closed under the library (EBADF)";
    case SH_CAUSE_ARENA:
        return "the arena's address space is full (RLIMIT_AS shrank it)";
    case SH_CAUSE_OTHER:
        return "an unexpected error";
    }
    return "no failure";
}

void sh_source_guard(uintptr_t addr, size_t size) {
    mmap((void *)addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    madvise((void *)addr, size, MADV_DONTDUMP);
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

bool sh_source_guard_hole(uintptr_t addr, size_t size) {
    /* A hole left by MADV_DONTFORK is free address space from the moment
     * fork() returns: the sanitizer runtimes and atfork child handlers that
     * run before ours may already have mapped something there, and MAP_FIXED
     * would silently replace it. NOREPLACE fails with EEXIST instead; kernels
     * before 4.17 ignore the flag and treat the address as a hint, which the
     * address check catches. */
    void *p =
        mmap((void *)addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        return false;
    if ((uintptr_t)p != addr) {
        munmap(p, size);
        return false;
    }
    madvise(p, size, MADV_DONTDUMP);
    return true;
}

int sh_source_reserve(size_t size, size_t align, uintptr_t *out) {
    size_t len = size + align;
    void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    if (a > (uintptr_t)p)
        munmap(p, a - (uintptr_t)p);
    uintptr_t tail = (uintptr_t)p + len - (a + size);
    if (tail)
        munmap((void *)(a + size), tail);
    madvise((void *)a, size, MADV_DONTDUMP);
    *out = a;
    return 0;
}

/* memfd_secret + ftruncate + mmap at addr (MAP_FIXED) or anywhere (addr 0).
 * 0 or errno with *cause; *out the mapping. */
static int map_secret_at(uintptr_t addr, size_t size, void **out, int *cause) {
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        *cause = sh_cause_of(SH_OP_CREATE, e, SH_BACKEND_SECRET);
        return e;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        *cause = sh_cause_of(SH_OP_SIZE, e, SH_BACKEND_SECRET);
        return e;
    }
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE, MAP_SHARED | (addr ? MAP_FIXED : 0), fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (p == MAP_FAILED) {
        /* A failed MAP_FIXED may have removed the reservation: put it back. */
        if (addr)
            sh_source_guard(addr, size);
        *cause = sh_cause_of(SH_OP_MAP, e, SH_BACKEND_SECRET);
        return e;
    }
    *out = p;
    return 0;
}

/*
 * The accounting model, from one OS page of secret memory mapped (never
 * touched, so nothing is charged on the new model). The old model's mmap
 * sets VM_LOCKED on the mapping and charges it to the process (VmLck); the
 * new one ("mm/secretmem: properly account locked pages") sets only
 * VM_DONTDUMP and charges each OS page to the user at its first fault
 * (mm/secretmem.c: secretmem_mmap vs secretmem_account_folio). VM_LOCKED is
 * the whole difference seen from the mapping, and madvise(MADV_COLD)
 * refuses VM_LOCKED mappings with EINVAL (mm/madvise.c: can_madv_lru_vma)
 * while it is a no-op on an empty unlocked one: one system call, no /proc
 * (sandboxes often lack it), no version string (distributions backport).
 * mmap failing with EAGAIN is the old model too (past the limit already:
 * the new model's mmap never checks it). Under mlockall(MCL_FUTURE) every
 * new mapping is VM_LOCKED, so an anonymous page is asked the same
 * question: if it is locked too, the secret page says nothing and the model
 * stays unknown (treated as new: the stricter rules). Tests check the
 * answer against smaps' VmFlags "lo" and VmLck.
 */
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
static int probe_model(void) {
    void *p = NULL;
    int cause = 0;
    int e = map_secret_at(0, SH_OS_PAGE, &p, &cause);
    if (e == EAGAIN)
        return SECRETHEAP_MODEL_OLD;
    if (e) {
        sh_kernel.secret_cause = cause;
        sh_kernel.secret_errno = e;
        return SECRETHEAP_MODEL_UNKNOWN;
    }
    int secret_locked = madvise(p, SH_OS_PAGE, MADV_COLD) != 0 && errno == EINVAL;
    munmap(p, SH_OS_PAGE);
    if (!secret_locked)
        return SECRETHEAP_MODEL_NEW;
    void *a = mmap(NULL, SH_OS_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (a == MAP_FAILED)
        return SECRETHEAP_MODEL_OLD;
    int anon_locked = madvise(a, SH_OS_PAGE, MADV_COLD) != 0 && errno == EINVAL;
    munmap(a, SH_OS_PAGE);
    return anon_locked ? SECRETHEAP_MODEL_UNKNOWN : SECRETHEAP_MODEL_OLD;
}

/* CAP_IPC_LOCK in the effective set (one capget; reading CapEff from
 * /proc/self/status costs three system calls). */
static bool has_ipc_lock(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        return false;
    return d[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32));
}

void sh_source_detect(void) {
    struct rlimit rl;
    sh_kernel.memlock_limit =
        getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    sh_kernel.cap_ipc_lock = has_ipc_lock();
    sh_kernel.secret_cause = SH_CAUSE_NONE;
    sh_kernel.secret_errno = 0;
    sh_kernel.model = sh_opt.backend == SH_POLICY_LOCKED ? SECRETHEAP_MODEL_UNKNOWN : probe_model();
    int e = sh_kernel.secret_errno;
    if (e == ENOSYS || e == EPERM || e == EACCES)
        atomic_store(&secret_broken, e); /* permanent: map straight to the policy's answer */
}

static int map_secret(uintptr_t addr, size_t size, int *cause) {
    void *p;
    int e = map_secret_at(addr, size, &p, cause);
    if (e)
        return e;
    if (sh_opt.fork == SH_FORK_DONTFORK)
        madvise((void *)addr, size, MADV_DONTFORK);
    return 0;
}

static int map_locked(uintptr_t addr, size_t size, int *cause) {
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                   -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        sh_source_guard(addr, size); /* as in map_secret */
        *cause = sh_cause_of(SH_OP_MAP, e, SH_BACKEND_LOCKED);
        return e;
    }
    madvise(p, size, MADV_DONTDUMP);
    /* Copy policy: a fork child gets copy-on-write copies and re-locks them
     * (sh_source_reprivatise); dontfork: the child loses the mapping. We do
     * not use MADV_WIPEONFORK under copy: the child would silently see zeros
     * in blocks the allocator believes live. */
    if (sh_opt.fork == SH_FORK_DONTFORK)
        madvise(p, size, MADV_DONTFORK);
    return 0;
}

/* Whether memfd_secret itself is unavailable for good: ENOSYS, or the call
 * refused by seccomp/LSM (EPERM, EACCES). Nothing else from memfd_secret is
 * permanent (EMFILE, ENOMEM pass), so nothing else switches backends. */
static bool secret_unavailable(int e, int cause) {
    return cause == SH_CAUSE_NO_SUPPORT || (cause == SH_CAUSE_DENIED && (e == EPERM || e == EACCES));
}

static void warn_unavailable(int e) {
    int cause = e == ENOSYS ? SH_CAUSE_NO_SUPPORT : SH_CAUSE_DENIED;
    if (sh_opt.backend == SH_POLICY_SECRET)
        sh_log(0, "memfd_secret unavailable (%s): %s; SECRETHEAP_BACKEND=secret refuses ordinary and locked memory",
               e == ENOSYS  ? "ENOSYS"
               : e == EPERM ? "EPERM"
                            : "EACCES",
               sh_cause_text(cause));
    else
        sh_log(0,
               "WARNING: memfd_secret unavailable (%s): %s; using the weaker locked backend "
               "(mlock + MADV_DONTDUMP, still in the kernel direct map)",
               e == ENOSYS  ? "ENOSYS"
               : e == EPERM ? "EPERM"
                            : "EACCES",
               sh_cause_text(cause));
}

int sh_source_next_backend(void) {
    if (sh_opt.backend == SH_POLICY_LOCKED)
        return SH_BACKEND_LOCKED;
    if (atomic_load(&secret_broken) == 0 || sh_opt.backend == SH_POLICY_SECRET)
        return SH_BACKEND_SECRET;
    return SH_BACKEND_LOCKED;
}

int sh_source_map(uintptr_t addr, size_t size, int *backend, int *cause) {
    int e;
    static _Atomic int warned;
    *cause = SH_CAUSE_NONE;
    if (sh_opt.backend != SH_POLICY_LOCKED && atomic_load(&secret_broken) == 0) {
        e = map_secret(addr, size, cause);
        if (e == 0) {
            *backend = SH_BACKEND_SECRET;
            atomic_store(&backend_in_use, SH_BACKEND_SECRET);
            return 0;
        }
        if (!secret_unavailable(e, *cause))
            return e;
        int expected = 0;
        atomic_compare_exchange_strong(&secret_broken, &expected, e);
    }
    if (sh_opt.backend == SH_POLICY_SECRET || atomic_load(&secret_broken) != 0) {
        int b = atomic_load(&secret_broken);
        if (b && atomic_exchange(&warned, 1) == 0)
            warn_unavailable(b);
        if (sh_opt.backend == SH_POLICY_SECRET) {
            *cause = b == ENOSYS ? SH_CAUSE_NO_SUPPORT : SH_CAUSE_DENIED;
            return b;
        }
    }
    e = map_locked(addr, size, cause);
    if (e)
        return e;
    *backend = SH_BACKEND_LOCKED;
    atomic_store(&backend_in_use, SH_BACKEND_LOCKED);
    return 0;
}

/*
 * A kernel-side write into each OS page, with no descriptor. The kernel
 * copies the result of clock_gettime out with copy_to_user, which faults a
 * memfd_secret OS page in (and, on the new model, charges it) and turns a
 * refused fault into EFAULT where a user-space store would get SIGBUS. The
 * raw system call, not the vDSO: the vDSO writes from user space. The 16
 * bytes written are zeroed again at once (the OS page is present now).
 * Measured per committed OS page, in batches of 1, 16 and 64, against the
 * pread from a kept /dev/zero descriptor that this replaces (docs/design.md):
 * the same within noise, ~15 µs, since faulting the page in (direct-map
 * removal, TLB flush) dominates (getrandom + zeroing: ~25 µs); a descriptor kept for the life of the
 * process was closed by daemons (close_range) and, once its number was
 * reused, made calloc return the contents of an unrelated file.
 */
int sh_source_commit_some(uintptr_t addr, size_t n, int backend, size_t *done) {
    *done = 0;
    if (backend == SH_BACKEND_LOCKED) {
        /* mlock charges RLIMIT_MEMLOCK and populates; EAGAIN/ENOMEM past it. */
        if (mlock((void *)addr, n) != 0)
            return errno;
        *done = n;
        return 0;
    }
    for (size_t off = 0; off < n; off += SH_OS_PAGE) {
        struct timespec *ts = (struct timespec *)(addr + off);
        if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, ts) != 0)
            return errno ? errno : EFAULT;
        ts->tv_sec = 0;
        ts->tv_nsec = 0;
        *done = off + SH_OS_PAGE;
    }
    return 0;
}

int sh_source_commit(uintptr_t addr, size_t n, int backend) {
    size_t done;
    return sh_source_commit_some(addr, n, backend, &done);
}

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
int sh_source_commit_lazy(uintptr_t addr, size_t n, int backend) {
    if (backend == SH_BACKEND_LOCKED) {
        /* Charged now for the whole length; each OS page is locked as it
         * faults in (never swapped), so a touch cannot be refused. */
        if (syscall(SYS_mlock2, (void *)addr, n, MLOCK_ONFAULT) == 0)
            return 0;
        return errno == EINVAL || errno == ENOSYS ? sh_source_commit(addr, n, backend) : errno;
    }
    /* Old model: the mmap charged the whole length, so a fault is never
     * refused for memlock. New or unknown model: it could be (SIGBUS). */
    return sh_kernel.model == SECRETHEAP_MODEL_OLD ? 0 : EAGAIN;
}

/* Wipes the OS pages of [addr, addr+size) that are resident (mincore):
 * touching the others would fault them in only to zero them. */
static void wipe_resident(uintptr_t addr, size_t size) {
    unsigned char vec[512];
    for (size_t off = 0; off < size;) {
        size_t pages = (size - off) / SH_OS_PAGE;
        if (pages > sizeof vec)
            pages = sizeof vec;
        if (mincore((void *)(addr + off), pages * SH_OS_PAGE, vec) != 0) {
            sh_wipe((void *)(addr + off), pages * SH_OS_PAGE); /* cannot tell: wipe all */
        } else {
            for (size_t i = 0; i < pages; i++)
                if (vec[i] & 1)
                    sh_wipe((void *)(addr + off + i * SH_OS_PAGE), SH_OS_PAGE);
        }
        off += pages * SH_OS_PAGE;
    }
}

void sh_source_wipe(uintptr_t addr, size_t size, size_t committed, bool lazy) {
    if (lazy)
        wipe_resident(addr, size);
    else if (committed)
        sh_wipe((void *)addr, committed);
}

void sh_source_unmap(uintptr_t addr, size_t size, size_t committed, int backend, bool lazy) {
    (void)backend;
    /* The kernel zeroes memfd_secret OS pages on release too; wiping first
     * keeps the promise independent of the backend and of kernel versions. */
    sh_source_wipe(addr, size, committed, lazy);
    sh_source_guard(addr, size);
}

/* One read of /proc/self/status (without stdio: no malloc); copies the
 * value of each "Key:" asked for. */
static void status_fields(const char *const *keys, char (*vals)[64], int n) {
    char buf[4096];
    for (int i = 0; i < n; i++)
        vals[i][0] = 0;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        return;
    buf[got] = 0;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        for (int i = 0; i < n; i++) {
            size_t kl = strlen(keys[i]);
            if (strncmp(line, keys[i], kl) == 0 && line[kl] == ':') {
                char *v = line + kl + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                size_t j = 0;
                while (v[j] && v[j] != '\n' && j + 1 < sizeof vals[i]) {
                    vals[i][j] = v[j];
                    j++;
                }
                vals[i][j] = 0;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
}

_Atomic uint64_t sh_stat_headroom_reads;

uint64_t sh_source_as_room(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    static const char *const keys[] = {"VmSize"};
    char vals[1][64];
    status_fields(keys, vals, 1);
    uint64_t used = vals[0][0] ? strtoull(vals[0], NULL, 10) * 1024 : 0;
    return rl.rlim_cur > used ? rl.rlim_cur - used : 0;
}

uint64_t sh_source_headroom(int backend, uint64_t own_secret, bool *unlimited) {
    atomic_fetch_add_explicit(&sh_stat_headroom_reads, 1, memory_order_relaxed);
    static const char *const keys[] = {"VmLck"};
    char vals[1][64];
    struct rlimit rl;
    *unlimited = false;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        *unlimited = true;
        return UINT64_MAX;
    }
    if (backend == SH_BACKEND_SECRET && sh_kernel.model != SECRETHEAP_MODEL_OLD) {
        /* New model: charged per user at fault, no CAP_IPC_LOCK bypass, not
         * in VmLck. What this process committed is a lower bound of the
         * user's charge, so the limit minus it is a ceiling; other processes
         * of the uid may have taken the rest (commit's EFAULT says so). */
        return rl.rlim_cur > own_secret ? rl.rlim_cur - own_secret : 0;
    }
    /* Old model and mlock: CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK (both check
     * capable() via mlock_future_ok / can_do_mlock). */
    if (has_ipc_lock()) {
        *unlimited = true;
        return UINT64_MAX;
    }
    status_fields(keys, vals, 1);
    uint64_t locked = vals[0][0] ? strtoull(vals[0], NULL, 10) * 1024 : 0;
    return rl.rlim_cur > locked ? rl.rlim_cur - locked : 0;
}

int sh_source_reprivatise(uintptr_t addr, size_t size, size_t keep, int backend) {
    if (backend == SH_BACKEND_LOCKED) {
        /* The child already has private copy-on-write copies; mlock is not
         * inherited, so lock them again (keeps them out of swap). */
        if (keep && mlock((void *)addr, keep) != 0)
            return errno;
        return 0;
    }
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0)
        return errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    void *tmp = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (tmp == MAP_FAILED)
        return e == EAGAIN ? ENOMEM : e; /* EAGAIN: past RLIMIT_MEMLOCK (old model) */
    /* Commit explicitly so a refusal is EFAULT here (new model: the user's
     * budget), not SIGBUS in memcpy; munmap gives back what was charged. */
    if (keep && (e = sh_source_commit((uintptr_t)tmp, keep, SH_BACKEND_SECRET)) != 0) {
        munmap(tmp, size);
        return e;
    }
    memcpy(tmp, (void *)addr, keep);
    /* Atomically replaces the shared mapping (the parent keeps its own). */
    void *r = mremap(tmp, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)addr);
    if (r == MAP_FAILED) {
        e = errno;
        sh_wipe(tmp, keep);
        munmap(tmp, size);
        return e;
    }
    return 0;
}

int sh_source_privatise_ordinary(uintptr_t addr, size_t size, size_t keep, bool *locked) {
    *locked = false;
    void *tmp = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (tmp == MAP_FAILED)
        return errno;
    madvise(tmp, size, MADV_DONTDUMP);
    memcpy(tmp, (void *)addr, keep);
    /* Locked after the move: mlock of a part splits the mapping, and mremap
     * moves one mapping only (EFAULT otherwise, as measured on 6.1.192).
     * Where the limit refuses, the copy is ordinary memory (the exhaustion
     * policy's fallback, counted and reported by the caller). */
    void *r = mremap(tmp, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)addr);
    if (r == MAP_FAILED) {
        int e = errno;
        sh_wipe(tmp, keep);
        munmap(tmp, size);
        return e;
    }
    *locked = keep == 0 || mlock((void *)addr, keep) == 0;
    return 0;
}

int sh_source_dontfork(uintptr_t addr, size_t size) {
    return madvise((void *)addr, size, MADV_DONTFORK) == 0 ? 0 : errno;
}

int sh_source_backend_in_use(void) { return atomic_load(&backend_in_use); }
