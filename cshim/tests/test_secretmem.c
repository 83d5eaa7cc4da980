/*
 * test_secretmem.c — the source layer (secretmem.c) against the kernel it runs on: the
 * accounting model detected (checked against what smaps and VmLck show),
 * model-specific budget rules (each test asserts the rules of the model in
 * force, so it fails on either model when that model's code is removed),
 * commits that need no descriptor (a host that closes every descriptor or
 * reuses their numbers), every refusal named, the arena under RLIMIT_AS.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

static struct secretheap_stats stats(void) {
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    return st;
}

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = strtol(line + kl + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static long vmlck_kib(void) { return status_kib("VmLck"); }

static bool secretmem_works(void) {
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* The model the library detected is the one the kernel shows: the old
 * model's mapping is VM_LOCKED ("lo" in smaps) and charged to VmLck at
 * mmap; the new one's is neither. */
static void test_model_matches_smaps(void) {
    secretheap_free(secretheap_malloc(1)); /* init */
    struct secretheap_stats st = stats();
    if (!secretmem_works()) {
        CHECK_MSG(st.model == SECRETHEAP_MODEL_UNKNOWN && st.secret_unavailable != 0, "model %llu, unavailable %llu",
                  (unsigned long long)st.model, (unsigned long long)st.secret_unavailable);
        if (getenv("SECRETHEAP_REQUIRE"))
            CHECK_MSG(0, "memfd_secret unavailable and SECRETHEAP_REQUIRE is set");
        return;
    }
    long before = vmlck_kib();
    int fd = (int)syscall(SYS_memfd_secret, O_CLOEXEC);
    CHECK(ftruncate(fd, 64 << 10) == 0);
    void *p = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        /* Only the old model checks the limit at mmap. */
        CHECK_MSG(errno == EAGAIN && st.model == SECRETHEAP_MODEL_OLD, "mmap: %s, model %llu", strerror(errno),
                  (unsigned long long)st.model);
        return;
    }
    char flags[256];
    h_smaps_flags(p, flags, sizeof flags);
    long after = vmlck_kib();
    munmap(p, 64 << 10);
    bool locked = strstr(flags, " lo") != NULL;
    printf("model %llu, VmFlags %s VmLck %ld -> %ld KiB\n", (unsigned long long)st.model, flags, before, after);
    CHECK_MSG(st.model == (locked ? SECRETHEAP_MODEL_OLD : SECRETHEAP_MODEL_NEW), "model %llu but VmFlags %s",
              (unsigned long long)st.model, flags);
    CHECK_MSG(locked == (after - before >= 64), "VmFlags %s, VmLck %ld -> %ld", flags, before, after);
    CHECK(st.secret_unavailable == 0);
    CHECK(st.budget_shared == (st.model == SECRETHEAP_MODEL_NEW));
    CHECK(st.memlock_bypass == (st.model == SECRETHEAP_MODEL_OLD && geteuid() == 0));
}

/*
 * A host that closes every descriptor it did not open (sshd, daemons) and
 * then reuses the numbers: commits need no descriptor, so allocations stay
 * in secret memory and calloc stays zero. Before, the kept /dev/zero
 * descriptor's number went to a file of 0xAA bytes and calloc returned them
 * (or, closed, every commit failed with EBADF, reported as memlock).
 */
static int mode_close_all(void) {
    void *warm = secretheap_malloc(64); /* a commit before the host closes everything */
    if (syscall(SYS_close_range, 3, ~0U, 0) != 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    char path[] = "/tmp/secretheap-test-XXXXXX";
    int junk = mkstemp(path);
    unlink(path);
    static char aa[1 << 16];
    memset(aa, 0xAA, sizeof aa);
    for (int i = 0; i < 64; i++)
        if (write(junk, aa, sizeof aa) != (ssize_t)sizeof aa)
            return 90;
    for (int fd = junk + 1; fd < junk + 8; fd++)
        dup2(junk, fd); /* every low number is now that file */
    int bad = 0, fallback = 0;
    for (int i = 0; i < 2000; i++) { /* 2000 * 3000 B: many fresh commits, a second chunk */
        unsigned char *p = secretheap_calloc(1, 3000);
        if (!p)
            return 91;
        if (secretheap_backend(p) == SECRETHEAP_BACKEND_FALLBACK)
            fallback++;
        for (int j = 0; j < 3000; j++)
            bad += p[j] != 0;
        p[0] = 1;
    }
    void *big = secretheap_calloc(1, 3 << 20); /* a large region */
    if (!big || ((unsigned char *)big)[4096 * 100] != 0)
        bad++;
    secretheap_free(warm);
    struct secretheap_stats st = stats();
    printf("bad=%d fallback=%d failures_badfd=%llu failures_memlock=%llu\n", bad, fallback,
           (unsigned long long)st.failures[SECRETHEAP_CAUSE_BADFD],
           (unsigned long long)st.failures[SECRETHEAP_CAUSE_MEMLOCK]);
    /* Under a small RLIMIT_MEMLOCK some requests fall back, for memlock
     * only; never for a descriptor. */
    uint64_t other = 0;
    for (int c = 0; c < SECRETHEAP_NUM_CAUSES; c++)
        if (c != SECRETHEAP_CAUSE_MEMLOCK)
            other += st.failures[c];
    return bad ? 1 : other ? 2 : fallback && !st.failures[SECRETHEAP_CAUSE_MEMLOCK] ? 3 : 0;
}

static void test_host_closes_descriptors(void) {
    struct h_child ch;
    h_reexec("close_all", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

/* No descriptor left (EMFILE) is named as such and never served from
 * ordinary memory (it is not exhaustion): NULL, counted, one warning. */
static int mode_no_fds(void) {
    struct rlimit rl = {64, 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    while (open("/dev/null", O_RDONLY) >= 0)
        ;
    void *p = secretheap_malloc(100);
    struct secretheap_stats st = stats();
    printf("p=%s failures_descriptors=%llu fallbacks=%llu\n", p ? "non-null" : "null",
           (unsigned long long)st.failures[SECRETHEAP_CAUSE_FDS], (unsigned long long)st.fallbacks);
    return p == NULL && errno == ENOMEM && st.failures[SECRETHEAP_CAUSE_FDS] >= 1 && st.fallbacks == 0 ? 0 : 1;
}

static void test_no_descriptors_named(void) {
    if (!secretmem_works()) {
        printf("skip: memfd_secret unavailable (the locked backend needs no descriptor)\n");
        return;
    }
    struct h_child ch;
    h_reexec("no_fds", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    CHECK_MSG(h_contains(ch.err, "no file descriptor left") && !h_contains(ch.err, "RLIMIT_MEMLOCK is used up"), "%s",
              ch.err);
}

/* Every errno maps to its cause, per call. */
static void test_cause_table(void) {
    sh_kernel.model = SECRETHEAP_MODEL_NEW;
    CHECK(sh_cause_of(SH_OP_CREATE, ENOSYS, SH_BACKEND_SECRET) == SH_CAUSE_NO_SUPPORT);
    CHECK(sh_cause_of(SH_OP_CREATE, EPERM, SH_BACKEND_SECRET) == SH_CAUSE_DENIED);
    CHECK(sh_cause_of(SH_OP_MAP, EACCES, SH_BACKEND_SECRET) == SH_CAUSE_DENIED);
    CHECK(sh_cause_of(SH_OP_CREATE, EMFILE, SH_BACKEND_SECRET) == SH_CAUSE_FDS);
    CHECK(sh_cause_of(SH_OP_CREATE, ENFILE, SH_BACKEND_SECRET) == SH_CAUSE_FDS);
    CHECK(sh_cause_of(SH_OP_MAP, EAGAIN, SH_BACKEND_SECRET) == SH_CAUSE_MEMLOCK);
    CHECK(sh_cause_of(SH_OP_MAP, ENOMEM, SH_BACKEND_SECRET) == SH_CAUSE_MEMORY);
    CHECK(sh_cause_of(SH_OP_SIZE, EBADF, SH_BACKEND_SECRET) == SH_CAUSE_BADFD);
    CHECK(sh_cause_of(SH_OP_COMMIT, EFAULT, SH_BACKEND_SECRET) == SH_CAUSE_MEMLOCK);
    CHECK(sh_cause_of(SH_OP_LOCK, ENOMEM, SH_BACKEND_LOCKED) == SH_CAUSE_MEMLOCK);
    CHECK(sh_cause_of(SH_OP_LOCK, EPERM, SH_BACKEND_LOCKED) == SH_CAUSE_MEMLOCK);
    sh_kernel.model = SECRETHEAP_MODEL_OLD; /* charged at mmap: a refused fault is memory, not memlock */
    CHECK(sh_cause_of(SH_OP_COMMIT, EFAULT, SH_BACKEND_SECRET) == SH_CAUSE_MEMORY);
    for (int c = 0; c < SH_CAUSE_COUNT; c++)
        CHECK(sh_cause_name(c)[0] && sh_cause_text(c)[0]);
}

/*
 * Root with an 8 MiB RLIMIT_MEMLOCK asks for 12 MiB, as one large region
 * and touched from user space. Old model: CAP_IPC_LOCK bypasses the limit,
 * the region is lazy (mapped and charged whole at mmap, OS pages fault in
 * on touch: committed_bytes does not grow by 12 MiB). New model: no bypass,
 * every OS page is committed by a kernel-side write first, the refusal is
 * EFAULT and the request follows the exhaustion policy (fallback) — a lazy
 * region there would die of SIGBUS at the first refused touch.
 */
static int mode_big_region(void) {
    secretheap_free(secretheap_malloc(1));
    struct secretheap_stats before = stats();
    size_t n = (size_t)12 << 20;
    unsigned char *p = secretheap_malloc(n);
    if (!p)
        return 80;
    struct secretheap_stats mid = stats();
    memset(p, 0x5a, n); /* a user-space touch of every OS page */
    int backend = secretheap_backend(p);
    secretheap_free(p);
    struct secretheap_stats st = stats();
    printf("model=%llu backend=%d committed_delta=%llu lazy=%llu fallbacks=%llu failures_memlock=%llu\n",
           (unsigned long long)st.model, backend, (unsigned long long)(mid.committed_bytes - before.committed_bytes),
           (unsigned long long)mid.lazy_bytes, (unsigned long long)st.fallbacks,
           (unsigned long long)st.failures[SECRETHEAP_CAUSE_MEMLOCK]);
    if (st.model == SECRETHEAP_MODEL_OLD)
        return backend == SECRETHEAP_BACKEND_SECRET && mid.lazy_bytes == n &&
                       mid.committed_bytes - before.committed_bytes < ((size_t)1 << 20)
                   ? 0
                   : 1;
    if (st.model == SECRETHEAP_MODEL_NEW)
        return backend == SECRETHEAP_BACKEND_FALLBACK && st.fallbacks >= 1 &&
                       st.failures[SECRETHEAP_CAUSE_MEMLOCK] >= 1 && mid.lazy_bytes == 0
                   ? 0
                   : 2;
    return 3;
}

static void test_big_region_by_model(void) {
    if (!secretmem_works()) {
        printf("skip: memfd_secret unavailable\n");
        CHECK_MSG(!getenv("SECRETHEAP_REQUIRE"), "memfd_secret unavailable and SECRETHEAP_REQUIRE is set");
        return;
    }
    if (geteuid() != 0) {
        printf("skip: needs root (CAP_IPC_LOCK is what the models disagree on)\n");
        return;
    }
    struct rlimit keep, rl = {8 << 20, 8 << 20};
    getrlimit(RLIMIT_MEMLOCK, &keep);
    setrlimit(RLIMIT_MEMLOCK, &rl);
    struct h_child ch;
    h_reexec("big_region", NULL, -1, 0, &ch);
    setrlimit(RLIMIT_MEMLOCK, &keep);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

/*
 * Under RLIMIT_AS the arena takes at most an eighth of it, so the program
 * keeps its address space (it took whatever fitted: 512 MiB of a 1 GiB
 * limit, and a 600 MiB mapping of the program's then failed).
 */
static int mode_rlimit_as(void) {
    /* 1 GiB more than the process uses now (sanitizers map terabytes of shadow). */
    rlim_t lim = (rlim_t)status_kib("VmSize") * 1024 + ((rlim_t)1 << 30);
    struct rlimit rl = {lim, lim};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 70;
    void *p = secretheap_malloc(100);
    struct secretheap_stats st = stats();
    void *own = mmap(NULL, (size_t)600 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    printf("arena=%llu MiB own=%s backend=%d\n", (unsigned long long)(st.arena_bytes >> 20),
           own == MAP_FAILED ? "failed" : "ok", secretheap_backend(p));
    return st.arena_bytes <= ((size_t)128 << 20) && st.arena_bytes >= ((size_t)64 << 20) && own != MAP_FAILED && p &&
                   secretheap_backend(p) != SECRETHEAP_BACKEND_NONE
               ? 0
               : 1;
}

static void test_arena_fits_rlimit_as(void) {
    struct h_child ch;
    h_reexec("rlimit_as", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static const struct h_mode modes[] = {
    {"close_all", mode_close_all},
    {"no_fds", mode_no_fds},
    {"big_region", mode_big_region},
    {"rlimit_as", mode_rlimit_as},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_model_matches_smaps);
    RUN(test_host_closes_descriptors);
    RUN(test_no_descriptors_named);
    RUN(test_cause_table);
    RUN(test_big_region_by_model);
    RUN(test_arena_fits_rlimit_as);
    return h_done();
}
