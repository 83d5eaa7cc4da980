/*
 * stats.c — statistics (secretheap_stats) and the report printed at exit
 * when SECRETHEAP_STATS is set. Live-block figures are counted from the
 * out-of-band req slots when asked for, so the fast paths keep no counters.
 *
 * The values, their keys and their order are one table, internal/stats (Go),
 * which generates stats_table.h: the member lists used below and the checks
 * that struct secretheap_stats is that table.
 *
 * The report comes in two forms. Text (SECRETHEAP_STATS=stderr or a path),
 * for people: each block opens with a header line ("secretheap stats (pid N,
 * version V)", then the OpenSSL hooks' "secretheap openssl (pid N): …" if it
 * is linked in), has summary lines for people, then one "  key value" line
 * per value: two spaces, a snake_case key, one space, a value without
 * spaces. Core keys are the field names of struct secretheap_stats (backend
 * as its number), "failures_<cause>" per element of failures[] (cause names
 * as sh_cause_name, '-' as '_'), per class "class_<bytes>_<field>" for
 * classes with a slab; the OpenSSL hooks' keys start with "openssl_". Keys are
 * stable; new ones are only added. No human line has that two-token shape.
 * JSON (SECRETHEAP_STATS=json:stderr or json:PATH), for programs (the
 * secretheap command and cmd/benchreport read only this form): one object
 * per report on one line, "pid", "version", "summary" (the human lines of
 * both blocks, exactly as the text form prints them), every value under its
 * key as above, "classes" (every class, an object of struct
 * secretheap_class_stats's members) and "openssl" (the OpenSSL hooks' values, keys
 * without "openssl_") when the OpenSSL hooks are linked in. internal/stats reads it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
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

/* A bounded piece of the report being written. */
struct sbuf {
    char *p;
    size_t n, cap;
};

/* Appends to b without ever overrunning it (output is cut at the end). */
static void out(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct sbuf *b, const char *fmt, ...) {
    if (b->n + 1 >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (r > 0)
        b->n += (size_t)r < b->cap - b->n ? (size_t)r : b->cap - b->n - 1;
}

/* Appends s[0..n) as the inside of a JSON string. */
static void out_json_text(struct sbuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            out(b, "\\%c", c);
        else if (c == '\n')
            out(b, "\\n");
        else if (c < 0x20 || c >= 0x7f)
            out(b, "\\u%04x", c);
        else
            out(b, "%c", c);
    }
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

/* The core's human lines (the header, then summaries for people). */
static void core_human(struct sbuf *b, const struct secretheap_stats *st) {
    out(b, "secretheap stats (pid %d, version %s)\n", (int)getpid(), SECRETHEAP_VERSION);
    out(b,
        "  backend %s; chunks %llu secret + %llu locked (%llu idle) + %llu large regions; mapped %llu KiB; "
        "committed %llu KiB\n",
        backend_name(st->backend), (unsigned long long)st->chunks_secret, (unsigned long long)st->chunks_locked,
        (unsigned long long)st->idle_chunks, (unsigned long long)st->large_regions_mapped,
        (unsigned long long)(st->bytes_mapped >> 10), (unsigned long long)(st->committed_bytes >> 10));
    out(b,
        "  kernel model %s; memfd_secret %s; RLIMIT_MEMLOCK %s%llu KiB%s%s; committed %llu KiB secret + %llu KiB "
        "locked (+ %llu KiB lazy regions)\n",
        model_name(st->model), st->secret_unavailable ? sh_cause_name((int)st->secret_unavailable) : "available",
        st->memlock_limit == UINT64_MAX ? "unlimited (" : "",
        (unsigned long long)(st->memlock_limit == UINT64_MAX ? 0 : st->memlock_limit >> 10),
        st->memlock_limit == UINT64_MAX ? ")" : "",
        st->memlock_bypass  ? ", bypassed by CAP_IPC_LOCK"
        : st->budget_shared ? ", shared by the user's processes"
                            : "",
        (unsigned long long)(st->committed_secret_bytes >> 10), (unsigned long long)(st->committed_locked_bytes >> 10),
        (unsigned long long)(st->lazy_bytes >> 10));
    bool any_failure = false;
    for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++)
        any_failure |= st->failures[i] != 0;
    if (any_failure) {
        out(b, "  refused:");
        for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++)
            if (st->failures[i])
                out(b, " %s %llu", sh_cause_name(i), (unsigned long long)st->failures[i]);
        out(b, "\n");
    }
    out(b, "  live %llu blocks: %llu B requested, %llu B reserved\n", (unsigned long long)st->live_blocks,
        (unsigned long long)st->requested_bytes, (unsigned long long)st->reserved_bytes);
    out(b,
        "  page runs %llu (%llu B requested, %llu B reserved); large regions %llu (%llu B requested, %llu B "
        "reserved)\n",
        (unsigned long long)st->run_blocks, (unsigned long long)st->run_requested_bytes,
        (unsigned long long)st->run_reserved_bytes, (unsigned long long)st->large_regions,
        (unsigned long long)st->large_requested_bytes, (unsigned long long)st->large_reserved_bytes);
    out(b, "  fallbacks %llu; fork re-privatisations %llu; misuse caught %llu; openssl hooked %llu\n",
        (unsigned long long)st->fallbacks, (unsigned long long)st->fork_reprivatised,
        (unsigned long long)st->misuse_caught, (unsigned long long)st->openssl_hooked);
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        const struct secretheap_class_stats *c = &st->classes[i];
        if (c->slabs == 0)
            continue;
        out(b, "  class %6llu B: %6llu live, %9llu B requested, %9llu B reserved, %4llu slabs\n",
            (unsigned long long)c->size, (unsigned long long)c->live_blocks, (unsigned long long)c->requested_bytes,
            (unsigned long long)c->reserved_bytes, (unsigned long long)c->slabs);
    }
}

/* failures_<cause> ('-' as '_'). */
static void failure_key(char *key, size_t cap, int cause) {
    snprintf(key, cap, "failures_%s", sh_cause_name(cause));
    for (char *k = key; *k; k++)
        if (*k == '-')
            *k = '_';
}

/* The core's machine-readable lines: "  key value", keys from the table. */
static void core_kv(struct sbuf *b, const struct secretheap_stats *st) {
#define KV(f) out(b, "  " #f " %llu\n", (unsigned long long)st->f);
    SH_STATS_SCALARS(KV)
#undef KV
    for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++) {
        char key[32];
        failure_key(key, sizeof key, i);
        out(b, "  %s %llu\n", key, (unsigned long long)st->failures[i]);
    }
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        const struct secretheap_class_stats *c = &st->classes[i];
        if (c->slabs == 0)
            continue;
#define KV(f) out(b, "  class_%llu_" #f " %llu\n", (unsigned long long)c->size, (unsigned long long)c->f);
        KV(requested_bytes) KV(reserved_bytes) KV(live_blocks) KV(slabs)
#undef KV
    }
}

/* The OpenSSL hooks' human lines and its "  openssl_<key> value" lines. */
static void hooks_human(struct sbuf *b, const struct sh_openssl_stats *o) {
    out(b,
        "secretheap openssl (pid %d): mode %s; hooks %s; refused %llu; secure interposed %s; secure served by %s\n"
        "  calls: malloc %llu, realloc %llu, free %llu, secure alloc %llu, secure free %llu; secure live %llu B; "
        "set_mem_functions refused %llu, honoured %llu\n",
        (int)getpid(), o->mode, o->hooks, (unsigned long long)o->refused, o->secure_interposed, o->secure_served_by,
        (unsigned long long)o->malloc_calls, (unsigned long long)o->realloc_calls, (unsigned long long)o->free_calls,
        (unsigned long long)o->secure_alloc_calls, (unsigned long long)o->secure_free_calls,
        (unsigned long long)o->secure_live_bytes, (unsigned long long)o->set_mem_functions_refused,
        (unsigned long long)o->set_mem_functions_honoured);
}

static void hooks_kv(struct sbuf *b, const struct sh_openssl_stats *o) {
#define T(f) out(b, "  openssl_" #f " %s\n", o->f);
#define N(f) out(b, "  openssl_" #f " %llu\n", (unsigned long long)o->f);
    SH_OPENSSL_STATS(T, N)
#undef T
#undef N
}

/* The JSON document: one line, keys from the table (internal/stats). */
static void json(struct sbuf *b, const struct secretheap_stats *st, const struct sh_openssl_stats *o,
                 const struct sbuf *summary) {
    out(b, "{\"pid\":%d,\"version\":\"%s\",\"summary\":\"", (int)getpid(), SECRETHEAP_VERSION);
    out_json_text(b, summary->p, summary->n);
    out(b, "\"");
#define KV(f) out(b, ",\"" #f "\":%llu", (unsigned long long)st->f);
    SH_STATS_SCALARS(KV)
#undef KV
    for (int i = 1; i < SECRETHEAP_NUM_CAUSES; i++) {
        char key[32];
        failure_key(key, sizeof key, i);
        out(b, ",\"%s\":%llu", key, (unsigned long long)st->failures[i]);
    }
    out(b, ",\"classes\":[");
    for (int i = 0; i < SECRETHEAP_NUM_CLASSES; i++) {
        const struct secretheap_class_stats *c = &st->classes[i];
        const char *sep = "";
        out(b, "%s{", i ? "," : "");
#define KV(f) out(b, "%s\"" #f "\":%llu", sep, (unsigned long long)c->f), sep = ",";
        SH_CLASS_STATS_MEMBERS(KV)
#undef KV
        out(b, "}");
    }
    out(b, "]");
    if (o) {
        const char *sep = "";
        out(b, ",\"openssl\":{");
#define T(f) out(b, "%s\"" #f "\":\"%s\"", sep, o->f), sep = ",";
#define N(f) out(b, "%s\"" #f "\":%llu", sep, (unsigned long long)o->f), sep = ",";
        SH_OPENSSL_STATS(T, N)
#undef T
#undef N
        out(b, "}");
    }
    out(b, "}\n");
}

/* The OpenSSL hooks' block comes once per process, after the core's. */
static atomic_int hooks_reported;

/* Report buffers: human lines, key value lines, the OpenSSL hooks', the output. */
#define STATS_PART 16384
#define STATS_BUF (4 * STATS_PART + 65536)

/* fd < 0: where SECRETHEAP_STATS says (stderr, or appended to a file),
 * in its form ("json:" first: one JSON line). */
void sh_stats_print(int fd) {
    bool close_fd = false, as_json = false;
    if (fd < 0) {
        const char *dest = sh_opt.stats;
        if (strncmp(dest, "json:", 5) == 0) {
            as_json = true;
            dest += 5;
        }
        if (strcmp(dest, "stderr") == 0) {
            fd = 2;
        } else {
            /* O_NONBLOCK: a FIFO with no reader fails at once (ENXIO)
             * instead of holding the program's exit until one comes. */
            fd = open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
            if (fd < 0) {
                sh_log(0, "cannot write stats to %s: %s%s", dest, strerror(errno),
                       errno == ENXIO ? " (a FIFO nobody reads)" : "");
                return;
            }
            close_fd = true;
        }
    }
    /* Not on the stack (this runs on whatever thread calls exit) and not
     * from ourselves (the allocator is what is being reported). */
    char *mem = mmap(NULL, STATS_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        sh_log(0, "cannot write stats: mmap: %s", strerror(errno));
        if (close_fd)
            close(fd);
        return;
    }
    struct sbuf human = {mem, 0, STATS_PART}, kv = {mem + STATS_PART, 0, STATS_PART};
    struct sbuf hooks = {mem + 2 * STATS_PART, 0, STATS_PART}, skv = {mem + 3 * STATS_PART, 0, STATS_PART};
    struct sbuf doc = {mem + 4 * STATS_PART, 0, STATS_BUF - 4 * STATS_PART};

    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    core_human(&human, &st);
    core_kv(&kv, &st);
    /* The OpenSSL hooks' block right after ours, to the same place: not from an
     * exit handler of its own, whose order against ours depends on which
     * constructor ran first. Weak: the core links without the OpenSSL hooks. */
    struct sh_openssl_stats os_st, *os = NULL;
    if (sh_openssl_stats && !atomic_exchange(&hooks_reported, 1)) {
        memset(&os_st, 0, sizeof os_st);
        sh_openssl_stats(&os_st);
        os = &os_st;
        hooks_human(&hooks, os);
        hooks_kv(&skv, os);
    }
    if (as_json) {
        out(&human, "%.*s", (int)hooks.n, hooks.p);
        json(&doc, &st, os, &human);
    } else {
        out(&doc, "%.*s%.*s%.*s%.*s", (int)human.n, human.p, (int)kv.n, kv.p, (int)hooks.n, hooks.p, (int)skv.n, skv.p);
    }
    stats_write(fd, doc.p, doc.n);
    munmap(mem, STATS_BUF);
    if (close_fd)
        close(fd);
}
