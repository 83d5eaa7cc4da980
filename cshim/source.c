/*
 * source.c — the source layer: secret memory from the kernel.
 *
 * States of address space, and the call that moves between them:
 *   none      → reserved   sh_source_reserve: PROT_NONE, MAP_NORESERVE (costs
 *                          no memory and no RLIMIT_MEMLOCK)
 *   reserved  → mapped     sh_source_map: memfd_secret + ftruncate + mmap
 *                          MAP_SHARED|MAP_FIXED (charged to RLIMIT_MEMLOCK for
 *                          the whole length at once), or the locked backend
 *   mapped    → committed  sh_source_commit: pread from /dev/zero (secret: the
 *                          kernel reports a refused OS page as EFAULT instead of
 *                          a SIGBUS at first touch) or mlock (locked)
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
#include <unistd.h>

#include "internal.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

static int zero_fd = -1;            /* /dev/zero, opened on first commit */
static _Atomic int backend_in_use;  /* SH_BACKEND_* of the last successful mapping */
static _Atomic int secret_broken;   /* errno of a failed memfd_secret (ENOSYS/EPERM), sticky */

void sh_source_guard(uintptr_t addr, size_t size) {
    mmap((void *)addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    madvise((void *)addr, size, MADV_DONTDUMP);
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

static int map_secret(uintptr_t addr, size_t size) {
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0)
        return errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (p == MAP_FAILED) {
        /* A failed MAP_FIXED may have removed the reservation: put it back. */
        sh_source_guard(addr, size);
        return e == EAGAIN ? ENOMEM : e; /* EAGAIN: past RLIMIT_MEMLOCK */
    }
    if (sh_opt.fork == SH_FORK_DONTFORK)
        madvise((void *)addr, size, MADV_DONTFORK);
    return 0;
}

static int map_locked(uintptr_t addr, size_t size) {
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        sh_source_guard(addr, size); /* as in map_secret */
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

int sh_source_map(uintptr_t addr, size_t size, int *backend) {
    int e;
    if (sh_opt.backend != SH_POLICY_LOCKED && atomic_load(&secret_broken) == 0) {
        e = map_secret(addr, size);
        if (e == 0) {
            *backend = SH_BACKEND_SECRET;
            atomic_store(&backend_in_use, SH_BACKEND_SECRET);
            return 0;
        }
        if (e != ENOSYS && e != EPERM)
            return e == EAGAIN ? ENOMEM : e;
        int expected = 0;
        if (atomic_compare_exchange_strong(&secret_broken, &expected, e)) {
            if (sh_opt.backend == SH_POLICY_SECRET)
                sh_log(0, "memfd_secret unavailable (%s): %s; SECRETHEAP_BACKEND=secret refuses to continue",
                       e == ENOSYS ? "ENOSYS" : "EPERM",
                       e == ENOSYS ? "kernel lacks CONFIG_SECRETMEM or boots with secretmem.enable=0"
                                   : "blocked by a seccomp profile");
            else
                sh_log(0, "WARNING: memfd_secret unavailable (%s): %s; using the weaker locked backend "
                          "(mlock + MADV_DONTDUMP, still in the kernel direct map)",
                       e == ENOSYS ? "ENOSYS" : "EPERM",
                       e == ENOSYS ? "kernel lacks CONFIG_SECRETMEM or boots with secretmem.enable=0"
                                   : "blocked by a seccomp profile");
        }
    }
    if (sh_opt.backend == SH_POLICY_SECRET)
        return atomic_load(&secret_broken);
    e = map_locked(addr, size);
    if (e)
        return e;
    *backend = SH_BACKEND_LOCKED;
    atomic_store(&backend_in_use, SH_BACKEND_LOCKED);
    return 0;
}

int sh_source_commit(uintptr_t addr, size_t n, int backend) {
    if (backend == SH_BACKEND_LOCKED) {
        /* mlock charges RLIMIT_MEMLOCK and populates; EAGAIN/ENOMEM past it. */
        return mlock((void *)addr, n) == 0 ? 0 : ENOMEM;
    }
    if (zero_fd < 0) {
        /* Called under the chunk lock, so one opener. */
        zero_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        if (zero_fd < 0)
            return errno ? errno : EIO;
    }
    while (n > 0) {
        ssize_t r = pread(zero_fd, (void *)addr, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ENOMEM; /* EFAULT: the kernel refused an OS page (memlock) */
        }
        if (r == 0)
            return EIO;
        addr += (size_t)r;
        n -= (size_t)r;
    }
    return 0;
}

void sh_source_unmap(uintptr_t addr, size_t size, size_t committed, int backend) {
    (void)backend;
    /* The kernel zeroes memfd_secret OS pages on release too; wiping first
     * keeps the promise independent of the backend and of kernel versions. */
    if (committed)
        sh_wipe((void *)addr, committed);
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

/* CAP_IPC_LOCK in the effective set (one capget; reading CapEff from
 * /proc/self/status costs three system calls). */
static bool has_ipc_lock(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        return false;
    return d[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32));
}

uint64_t sh_source_headroom(bool *unlimited) {
    atomic_fetch_add_explicit(&sh_stat_headroom_reads, 1, memory_order_relaxed);
    static const char *const keys[] = {"VmLck"};
    char vals[1][64];
    struct rlimit rl;
    *unlimited = false;
    /* CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK (memfd_secret checks capable()). */
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || has_ipc_lock()) {
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
