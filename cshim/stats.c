/*
 * stats.c — statistics (secretheap_stats) and the report printed at exit
 * when SECRETHEAP_STATS is set. Live-block figures are counted from the
 * out-of-band req slots when asked for, so the fast paths keep no counters.
 *
 * The report is for people and for programs at once. Each block opens with
 * a header line ("secretheap stats (pid N, version V)", then the OpenSSL
 * skin's "secretheap openssl (pid N): …" if it is linked in), has summary
 * lines for people (kept as they were: cmd/secretheap, e2e/ and
 * cmd/benchreport read some of them), then one "  key value" line per
 * value: two spaces, a snake_case key, one space, a value without spaces.
 * Core keys are the field names of struct secretheap_stats (backend as its
 * number), "failures_<cause>" per element of failures[] (cause names as
 * sh_cause_name, '-' as '_'), per class "class_<bytes>_<field>" for classes with a slab; the
 * skin's keys start with "openssl_". Keys are stable; new ones are only
 * added. No human line has that two-token shape.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

_Atomic uint64_t sh_stat_fallbacks;
_Atomic uint64_t sh_stat_exhausted_returns;
_Atomic uint64_t sh_stat_reprivatised;
_Atomic uint64_t sh_stat_misuse;
_Atomic uint64_t sh_stat_openssl_hooked;

/*
 * What `secretheap inspect` reads from a running process's memory
 * (cmd/secretheap/ident.go). It finds this object by name in the library's
 * dynamic symbol table, which strip keeps, so the answer comes from the
 * process itself: not from a file path a process can fake, and without
 * opening any file. The magic proves the object is this library whatever
 * its file is called; the pointers lead to the live counters (relocated at
 * load, so the reader needs no symbol table). Layout is read from outside:
 * fields are only appended, and ident_counters grows with them.
 */
_Static_assert(SECRETHEAP_NUM_CAUSES == 10, "list every failures[] counter in secretheap_ident");
struct sh_ident {
    char magic[16];   /* "secretheap-ident" (no NUL) */
    char version[16]; /* SECRETHEAP_VERSION, NUL-padded */
    uint64_t ncounters;
    /* openssl_hooked, fallbacks, fork_reprivatised, misuse_caught, then
     * failures[1..SECRETHEAP_NUM_CAUSES-1] (cmd/secretheap/counters.go). */
    _Atomic uint64_t *counters[4 + SECRETHEAP_NUM_CAUSES - 1];
};
__attribute__((visibility("default"), used)) const struct sh_ident secretheap_ident = {
    .magic = {'s', 'e', 'c', 'r', 'e', 't', 'h', 'e', 'a', 'p', '-', 'i', 'd', 'e', 'n', 't'},
    .version = SECRETHEAP_VERSION,
    .ncounters = 4 + SECRETHEAP_NUM_CAUSES - 1,
    .counters = {&sh_stat_openssl_hooked, &sh_stat_fallbacks, &sh_stat_reprivatised, &sh_stat_misuse,
                 &sh_stat_failures[1], &sh_stat_failures[2], &sh_stat_failures[3], &sh_stat_failures[4],
                 &sh_stat_failures[5], &sh_stat_failures[6], &sh_stat_failures[7], &sh_stat_failures[8],
                 &sh_stat_failures[9]},
};

int secretheap_stats(struct secretheap_stats *out, size_t out_size) {
    if (!out || out_size < sizeof(uint64_t))
        return EINVAL;
    sh_init();
    struct secretheap_stats st;
    memset(&st, 0, sizeof st);
    st.backend = (uint64_t)sh_source_backend_in_use();
    if (sh_fork_gate_check() == 0) { /* else an unseen fork child's closed allocator: counters only */
        sh_chunk_stats(&st);
        sh_heap_stats(&st);
    }
    st.fallbacks = atomic_load(&sh_stat_fallbacks);
    st.fork_reprivatised = atomic_load(&sh_stat_reprivatised);
    st.misuse_caught = atomic_load(&sh_stat_misuse);
    st.openssl_hooked = atomic_load(&sh_stat_openssl_hooked);
    st.fallback_bytes = atomic_load(&sh_stat_fallback_live);
    st.exhausted_returns = atomic_load(&sh_stat_exhausted_returns);
    st.model = (uint64_t)sh_kernel.model;
    st.secret_unavailable = (uint64_t)sh_kernel.secret_cause;
    st.memlock_limit = sh_kernel.memlock_limit;
    st.memlock_bypass = sh_kernel.cap_ipc_lock && sh_kernel.model == SECRETHEAP_MODEL_OLD;
    st.budget_shared = sh_kernel.model != SECRETHEAP_MODEL_OLD && sh_kernel.secret_cause == SH_CAUSE_NONE &&
                       sh_opt.backend != SH_POLICY_LOCKED;
    for (int i = 0; i < SH_CAUSE_COUNT; i++)
        st.failures[i] = atomic_load(&sh_stat_failures[i]);
    size_t n = out_size < sizeof st ? out_size : sizeof st;
    st.struct_size = n;
    memcpy(out, &st, n);
    return 0;
}

const char *secretheap_version(void) { return SECRETHEAP_VERSION; }

static const char *backend_name(uint64_t b) {
    return b == SH_BACKEND_SECRET ? "secret" : b == SH_BACKEND_LOCKED ? "locked" : "none";
}

static const char *model_name(uint64_t m) {
    return m == SECRETHEAP_MODEL_OLD   ? "old (per process at mmap, in VmLck)"
           : m == SECRETHEAP_MODEL_NEW ? "new (per user at first fault, not in VmLck)"
                                       : "unknown";
}

/* Appends to buf without ever overrunning it (output is cut at the end). */
static void out(char *buf, size_t *n, size_t cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void out(char *buf, size_t *n, size_t cap, const char *fmt, ...) {
    if (*n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (r > 0)
        *n += (size_t)r < cap - *n ? (size_t)r : cap - *n - 1;
}

/* Writes buf to fd, waiting at most STATS_WRITE_MS in all for a full pipe
 * or FIFO (opened non-blocking) to drain: a reader that stops reading cuts
 * the report short, it never holds the program. */
#define STATS_WRITE_MS 1000
static void stats_write(int fd, const char *buf, size_t n) {
    int budget = STATS_WRITE_MS;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && budget > 0) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            (void)poll(&p, 1, budget);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            budget -= (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000) + 1;
            continue;
        }
        break;
    }
}

/* fd < 0: where SECRETHEAP_STATS says (stderr, or appended to a file). */
void sh_stats_print(int fd) {
    bool close_fd = false;
    if (fd < 0) {
        if (strcmp(sh_opt.stats, "stderr") == 0) {
            fd = 2;
        } else {
            /* O_NONBLOCK: a FIFO with no reader fails at once (ENXIO)
             * instead of holding the program's exit until one comes. */
            fd = open(sh_opt.stats, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
            if (fd < 0) {
                sh_log(0, "cannot write stats to %s: %s%s", sh_opt.stats, strerror(errno),
                       errno == ENXIO ? " (a FIFO nobody reads)" : "");
                return;
            }
            close_fd = true;
        }
    }
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    char buf[16384];
    size_t n = 0;
#define OUT(...) out(buf, &n, sizeof buf, __VA_ARGS__)
    OUT("secretheap stats (pid %d, version %s)\n", (int)getpid(), SECRETHEAP_VERSION);
    OUT("  backend %s; chunks %llu secret + %llu locked (%llu idle) + %llu large regions; mapped %llu KiB; "
        "committed %llu KiB\n",
        backend_name(st.backend), (unsigned long long)st.chunks_secret, (unsigned long long)st.chunks_locked,
        (unsigned long long)st.idle_chunks, (unsigned long long)st.large_regions_mapped,
        (unsigned long long)(st.bytes_mapped >> 10), (unsigned long long)(st.committed_bytes >> 10));
    OUT("  kernel model %s; memfd_secret %s; RLIMIT_MEMLOCK %s%llu KiB%s%s; committed %llu KiB secret + %llu KiB "
        "locked (+ %llu KiB lazy regions)\n",
        model_name(st.model), st.secret_unavailable ? sh_cause_name((int)st.secret_unavailable) : "available",
        st.memlock_limit == UINT64_MAX ? "unlimited (" : "",
        (unsigned long long)(st.memlock_limit == UINT64_MAX ? 0 : st.memlock_limit >> 10),
        st.memlock_limit == UINT64_MAX ? ")" : "",
        st.memlock_bypass  ? ", bypassed by CAP_IPC_LOCK"
        : st.budget_shared ? ", shared by the user's processes"
                           : "",
        (unsigned long long)(st.committed_secret_bytes >> 10), (unsigned long long)(st.committed_locked_bytes >> 10),
        (unsigned long long)(st.lazy_bytes >> 10));
    bool any_failure = false;
    for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++)
        any_failure |= st.failures[i] != 0;
    if (any_failure) {
        OUT("  refused:");
        for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++)
            if (st.failures[i])
                OUT(" %s %llu", sh_cause_name(i), (unsigned long long)st.failures[i]);
        OUT("\n");
    }
    OUT("  live %llu blocks: %llu B requested, %llu B reserved\n", (unsigned long long)st.live_blocks,
        (unsigned long long)st.requested_bytes, (unsigned long long)st.reserved_bytes);
    OUT("  page runs %llu (%llu B requested, %llu B reserved); large regions %llu (%llu B requested, %llu B "
        "reserved)\n",
        (unsigned long long)st.run_blocks, (unsigned long long)st.run_requested_bytes,
        (unsigned long long)st.run_reserved_bytes, (unsigned long long)st.large_regions,
        (unsigned long long)st.large_requested_bytes, (unsigned long long)st.large_reserved_bytes);
    OUT("  fallbacks %llu; fork re-privatisations %llu; misuse caught %llu; openssl hooked %llu\n",
        (unsigned long long)st.fallbacks, (unsigned long long)st.fork_reprivatised,
        (unsigned long long)st.misuse_caught, (unsigned long long)st.openssl_hooked);
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        const struct secretheap_class_stats *c = &st.classes[i];
        if (c->slabs == 0)
            continue;
        OUT("  class %6llu B: %6llu live, %9llu B requested, %9llu B reserved, %4llu slabs\n",
            (unsigned long long)c->size, (unsigned long long)c->live_blocks, (unsigned long long)c->requested_bytes,
            (unsigned long long)c->reserved_bytes, (unsigned long long)c->slabs);
    }
    /* Machine-readable: "  key value", keys = struct secretheap_stats fields. */
#define KV(f) OUT("  " #f " %llu\n", (unsigned long long)st.f)
    KV(backend);
    KV(requested_bytes);
    KV(reserved_bytes);
    KV(live_blocks);
    KV(run_blocks);
    KV(run_requested_bytes);
    KV(run_reserved_bytes);
    KV(large_regions);
    KV(large_requested_bytes);
    KV(large_reserved_bytes);
    KV(chunks_mapped);
    KV(chunks_secret);
    KV(chunks_locked);
    KV(large_regions_mapped);
    KV(bytes_mapped);
    KV(committed_bytes);
    KV(idle_chunks);
    KV(fallbacks);
    KV(fork_reprivatised);
    KV(misuse_caught);
    KV(openssl_hooked);
    KV(fallback_bytes);
    KV(exhausted_returns);
    KV(model);
    KV(secret_unavailable);
    KV(memlock_limit);
    KV(memlock_bypass);
    KV(budget_shared);
    KV(committed_secret_bytes);
    KV(committed_locked_bytes);
    KV(lazy_bytes);
    KV(secure_reserve_bytes);
    KV(arena_bytes);
#undef KV
    for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++) {
        char key[32];
        snprintf(key, sizeof key, "failures_%s", sh_cause_name(i));
        for (char *k = key; *k; k++)
            if (*k == '-')
                *k = '_';
        OUT("  %s %llu\n", key, (unsigned long long)st.failures[i]);
    }
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        const struct secretheap_class_stats *c = &st.classes[i];
        if (c->slabs == 0)
            continue;
        OUT("  class_%llu_requested_bytes %llu\n  class_%llu_reserved_bytes %llu\n  class_%llu_live_blocks %llu\n"
            "  class_%llu_slabs %llu\n",
            (unsigned long long)c->size, (unsigned long long)c->requested_bytes, (unsigned long long)c->size,
            (unsigned long long)c->reserved_bytes, (unsigned long long)c->size, (unsigned long long)c->live_blocks,
            (unsigned long long)c->size, (unsigned long long)c->slabs);
    }
#undef OUT
    stats_write(fd, buf, n);
    /* The OpenSSL skin's block right after ours, to the same place: not
     * from an exit handler of its own, whose order against ours depends on
     * which constructor ran first. Weak: the core links without the skin. */
    if (sh_openssl_stats_print)
        sh_openssl_stats_print(fd);
    if (close_fd)
        close(fd);
}
