/*
 * test_basic.c — API semantics of the C core: malloc/calloc/realloc/free
 * edge cases, alignment, zero on allocation, wipe on free, usable size,
 * backend, /proc/self/maps, many sizes (classes, page runs, large regions),
 * foreign pointers, stats, options, the invariant checker.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static int all_bytes(const void *p, size_t n, unsigned char v) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != v)
            return 0;
    return 1;
}

/* The /proc/self/maps line covering p, or "" (copied into line). */
static void maps_line(const void *p, char *line, size_t n) {
    line[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char buf[512];
    while (fgets(buf, sizeof buf, f)) {
        unsigned long lo, hi;
        if (sscanf(buf, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
            snprintf(line, n, "%s", buf);
            break;
        }
    }
    fclose(f);
}

/* The PROT_NONE arena and every guard laid down again when a region is
 * unmapped are MADV_DONTDUMP ("dd"), or gcore writes all 64 GiB as zeros.
 * Control: a plain PROT_NONE mapping is not. */
static void test_arena_dontdump(void) {
    char fl[512];
    void *warm = secretheap_malloc(1);
    secretheap_free(warm);
    uintptr_t base = atomic_load(&sh_arena_base);
    CHECK(base != 0);
    /* The last slot: never mapped by this test program. */
    h_smaps_flags((void *)(base + atomic_load(&sh_arena_size) - SH_OS_PAGE), fl, sizeof fl);
    CHECK_MSG(h_contains(fl, " dd"), "arena end: %s", fl);
    /* A large region, unmapped on free: its slot is a guard again. */
    char *big = secretheap_malloc(3u << 20);
    CHECK(big != NULL);
    big[0] = 1;
    secretheap_free(big);
    char line[512];
    maps_line(big, line, sizeof line);
    CHECK_MSG(h_contains(line, "---p"), "freed region: %s", line);
    h_smaps_flags(big, fl, sizeof fl);
    CHECK_MSG(h_contains(fl, " dd"), "guard after unmap: %s", fl);
    /* Control. */
    void *plain = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(plain != MAP_FAILED);
    h_smaps_flags(plain, fl, sizeof fl);
    CHECK_MSG(fl[0] && !h_contains(fl, " dd"), "control: %s", fl);
    munmap(plain, 1 << 20);
}

static void test_null_and_zero_sizes(void) {
    secretheap_free(NULL);
    void *a = secretheap_malloc(0), *b = secretheap_malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(secretheap_usable_size(a) >= 1);
    secretheap_free(a);
    secretheap_free(b);
    void *c = secretheap_realloc(NULL, 40);
    CHECK(c != NULL && secretheap_usable_size(c) >= 40);
    errno = 0;
    CHECK(secretheap_realloc(c, 0) == NULL); /* frees */
    void *d = secretheap_calloc(0, 10);
    CHECK(d != NULL);
    secretheap_free(d);
    CHECK(secretheap_check() == 0);
}

static void test_overflow_enomem(void) {
    errno = 0;
    CHECK(secretheap_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(secretheap_calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(secretheap_malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(secretheap_malloc((size_t)PTRDIFF_MAX + 1) == NULL && errno == ENOMEM);
    char *p = secretheap_malloc(100);
    memset(p, 0x5a, 100);
    errno = 0;
    CHECK(secretheap_realloc(p, SIZE_MAX - 8) == NULL && errno == ENOMEM);
    CHECK(all_bytes(p, 100, 0x5a)); /* untouched on failure */
    secretheap_free(p);
    /* Larger than the arena can ever hold (64 GiB of address space): a size
     * error named as such, not exhaustion — no fallback counted. Run in a
     * child, which owns its stderr. */
    struct h_child ch;
    h_reexec("too_large", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0 && h_contains(ch.err, "larger than secret memory can ever hold") &&
                  !h_contains(ch.err, "exhausted"),
              "40 GiB: exit %d: %s", ch.code, ch.err);
    /* Control: a representable calloc succeeds and is zero. */
    void *q = secretheap_calloc(1000, 3);
    CHECK(q != NULL && all_bytes(q, 3000, 0));
    secretheap_free(q);
}

static const size_t sizes[] = {
    1,     8,     15,    16,    17,    31,    32,     33,     48,      100,           127,     128,    129,
    255,   256,   257,   500,   1000,  1024,  1025,   2000,   3000,    4095,          4096,    4097,   8000,
    17000, 32767, 32768, 32769, 40000, 65536, 100000, 500000, 1 << 20, (1 << 20) + 1, 3 << 20, 9 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_sizes_alignment_zero(void) {
    void *p[NSIZES * 4];
    for (size_t r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++) {
            size_t n = sizes[i];
            unsigned char *b = secretheap_malloc(n);
            p[r * NSIZES + i] = b;
            CHECK_MSG(b != NULL, "malloc(%zu)", n);
            if (!b)
                continue;
            CHECK_MSG(((uintptr_t)b & 15) == 0, "malloc(%zu) = %p not 16-byte aligned", n, (void *)b);
            CHECK_MSG(all_bytes(b, n, 0), "malloc(%zu) not zero", n);
            CHECK_MSG(secretheap_usable_size(b) >= n, "usable(%zu) = %zu", n, secretheap_usable_size(b));
            CHECK(secretheap_backend(b) == SECRETHEAP_BACKEND_SECRET);
            CHECK(secretheap_backend(b + n - 1) == SECRETHEAP_BACKEND_SECRET);
            memset(b, (int)(i + 1), secretheap_usable_size(b));
        }
    for (size_t r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++) {
            unsigned char *b = p[r * NSIZES + i];
            CHECK_MSG(all_bytes(b, sizes[i], (unsigned char)(i + 1)), "size %zu overwritten", sizes[i]);
        }
    CHECK(secretheap_check() == 0);
    for (size_t i = 0; i < NSIZES * 4; i++)
        secretheap_free(p[i]);
    CHECK(secretheap_check() == 0);
    /* Every size again: still zero after the previous round's wipes. */
    for (size_t i = 0; i < NSIZES; i++) {
        unsigned char *b = secretheap_malloc(sizes[i]);
        CHECK_MSG(all_bytes(b, secretheap_usable_size(b), 0), "reused block of %zu not zero", sizes[i]);
        secretheap_free(b);
    }
}

/* Reads a freed block through the chunk (it stays mapped): all zero. The
 * control reads the same address before free and sees the pattern. */
static void test_wipe_on_free(void) {
    static const size_t wsizes[] = {16, 48, 200, 1024, 4096, 20000, 32768, 50000, 300000};
    for (size_t i = 0; i < sizeof wsizes / sizeof wsizes[0]; i++) {
        size_t n = wsizes[i];
        volatile unsigned char *b = secretheap_malloc(n);
        size_t u = secretheap_usable_size((void *)b);
        memset((void *)b, 0xAB, u);
        CHECK_MSG(all_bytes((void *)b, u, 0xAB), "control: pattern readable before free (%zu)", n);
        secretheap_free((void *)b);
        CHECK_MSG(all_bytes((void *)b, u, 0), "block of %zu B not wiped on free", n);
    }
}

/* Every class is wiped whole on free, whichever wipe its size takes (inline
 * stores up to 128 B, the AVX2 loop up to 8 KiB where the CPU has it,
 * explicit_bzero beyond), including the neighbours' bytes being left alone. */
static void test_wipe_every_class(void) {
    for (unsigned c = 0; c < SH_NUM_CLASSES; c++) {
        size_t n = sh_class_size[c];
        unsigned char *a = secretheap_malloc(n), *b = secretheap_malloc(n);
        CHECK(a && b && secretheap_usable_size(a) == n);
        memset(a, 0xCD, n);
        memset(b, 0xEF, n);
        secretheap_free(a);
        CHECK_MSG(all_bytes(a, n, 0), "class %zu B not wiped whole", n);
        CHECK_MSG(all_bytes(b, n, 0xEF), "class %zu B: the wipe reached a neighbour", n);
        secretheap_free(b);
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    CHECK_MSG(sh_wipe_avx2_ok == (__builtin_cpu_supports("avx2") != 0), "AVX2 wipe chosen wrongly");
#endif
}

static void test_usable_size(void) {
    for (unsigned c = 0; c < SH_NUM_CLASSES; c++) {
        size_t n = sh_class_size[c];
        char *b = secretheap_malloc(n);
        CHECK_MSG(secretheap_usable_size(b) == n, "class %zu usable %zu", n, secretheap_usable_size(b));
        CHECK(secretheap_usable_size(b + 16) == 0); /* interior */
        secretheap_free(b);
        char *d = secretheap_malloc(n - 15 > 0 ? n - 15 : 1);
        CHECK(secretheap_usable_size(d) == n);
        secretheap_free(d);
    }
    char *r = secretheap_malloc(40000);
    CHECK(secretheap_usable_size(r) == 40960);
    secretheap_free(r);
    CHECK(secretheap_usable_size(NULL) == 0);
    int stack;
    CHECK(secretheap_usable_size(&stack) == 0);
    void *m = malloc(32);
    CHECK(secretheap_usable_size(m) == 0);
    CHECK(secretheap_backend(m) == SECRETHEAP_BACKEND_NONE);
    free(m);
}

static void test_backend_and_maps(void) {
    char *b = secretheap_malloc(64);
    char line[512];
    maps_line(b, line, sizeof line);
    CHECK_MSG(h_contains(line, "secretmem"), "maps line for %p: %s", (void *)b, line);
    void *m = malloc(64);
    maps_line(m, line, sizeof line);
    CHECK_MSG(!h_contains(line, "secretmem"), "control: libc block %p in %s", m, line);
    free(m);
    char *l = secretheap_malloc(3 << 20);
    maps_line(l, line, sizeof line);
    CHECK_MSG(h_contains(line, "secretmem"), "large region maps line: %s", line);
    CHECK(secretheap_backend(l + (2 << 20)) == SECRETHEAP_BACKEND_SECRET);
    secretheap_free(l);
    CHECK(secretheap_backend(b) == SECRETHEAP_BACKEND_SECRET);
    secretheap_free(b);
    CHECK(secretheap_backend(b) == SECRETHEAP_BACKEND_NONE);
}

static void test_realloc_moves_and_wipes(void) {
    static const size_t steps[] = {10, 16, 17, 100, 1000, 5000, 40000, 200000, 2 << 20, 100, 5};
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t n = steps[i];
        unsigned char *old = p;
        size_t old_usable = old ? secretheap_usable_size(old) : 0;
        int old_in_chunk_mapped = old && old_usable <= (1 << 20); /* large regions are unmapped */
        p = secretheap_realloc(p, n);
        CHECK(p != NULL);
        size_t keep = have < n ? have : n;
        for (size_t j = 0; j < keep; j++)
            if (p[j] != (unsigned char)(j * 7)) {
                CHECK_MSG(0, "realloc to %zu lost byte %zu", n, j);
                break;
            }
        if (old && old != p && old_in_chunk_mapped)
            CHECK_MSG(all_bytes(old, old_usable, 0), "old block of realloc %zu→%zu not wiped", have, n);
        for (size_t j = 0; j < n; j++)
            p[j] = (unsigned char)(j * 7);
        have = n;
    }
    secretheap_free(p);
    CHECK(secretheap_check() == 0);
}

/* A realloc that shrinks a block in place wipes what it gives up, so a later
 * grow in place shows zeros past the smaller size, as realloc promises (the
 * differential test against the Go heap found the old bytes coming back).
 * A slab block (48 -> 33 B keeps class 48) and a page run (40,000 ->
 * 36,000 B keeps its 10 OS pages). */
static void test_realloc_in_place_shrink_wipes(void) {
    static const struct { size_t big, small; } cases[] = {{48, 33}, {40000, 36000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t big = cases[i].big, small = cases[i].small;
        unsigned char *p = secretheap_malloc(big);
        CHECK(p != NULL);
        memset(p, 0xab, big);
        CHECK(secretheap_realloc(p, small) == p); /* in place */
        CHECK_MSG(all_bytes(p + small, big - small, 0), "shrink %zu -> %zu in place left the old bytes", big, small);
        CHECK(secretheap_realloc(p, big) == p);
        CHECK_MSG(all_bytes(p + small, big - small, 0), "grow %zu -> %zu in place shows old bytes", small, big);
        CHECK(all_bytes(p, small, 0xab));
        secretheap_free(p);
    }
    CHECK(secretheap_check() == 0);
}

static void test_stats(void) {
    struct secretheap_stats before, after;
    CHECK(secretheap_stats(&before, sizeof before) == 0);
    CHECK(before.struct_size == sizeof before);
    void *p[100];
    for (int i = 0; i < 100; i++)
        p[i] = secretheap_malloc(100);
    void *run = secretheap_malloc(50000), *large = secretheap_malloc(2 << 20);
    CHECK(secretheap_stats(&after, sizeof after) == 0);
    unsigned c = sh_size_to_class16[(100 + 15) / 16];
    CHECK(after.classes[c].size == 112);
    CHECK(after.classes[c].live_blocks == before.classes[c].live_blocks + 100);
    CHECK(after.classes[c].requested_bytes == before.classes[c].requested_bytes + 100 * 100);
    CHECK(after.classes[c].reserved_bytes == before.classes[c].reserved_bytes + 100 * 112);
    CHECK(after.run_blocks == before.run_blocks + 1 && after.run_requested_bytes == before.run_requested_bytes + 50000);
    CHECK(after.large_regions == before.large_regions + 1);
    CHECK(after.live_blocks == before.live_blocks + 102);
    CHECK(after.bytes_mapped >= after.committed_bytes && after.committed_bytes > 0);
    CHECK(after.chunks_secret >= 1 && after.backend == SECRETHEAP_BACKEND_SECRET);
    for (int i = 0; i < 100; i++)
        secretheap_free(p[i]);
    secretheap_free(run);
    secretheap_free(large);
    CHECK(secretheap_stats(&after, sizeof after) == 0);
    CHECK(after.classes[c].live_blocks == before.classes[c].live_blocks);
    CHECK(after.live_blocks == before.live_blocks);
    /* A shorter struct gets the prefix. */
    uint64_t small[3] = {0, 0, 0};
    CHECK(secretheap_stats((struct secretheap_stats *)small, sizeof small) == 0 && small[0] == sizeof small);
    CHECK(secretheap_stats(NULL, sizeof after) == EINVAL);
    CHECK(strcmp(secretheap_version(), SECRETHEAP_VERSION) == 0);
}

static void test_block_index_exact(void) {
    /* The multiply-shift index equals the division for every offset of every slab. */
    for (unsigned c = 0; c < SH_NUM_CLASSES; c++) {
        struct sh_span s;
        memset(&s, 0, sizeof s);
        uint32_t bs = sh_class_size[c];
        s.block_size = bs;
        s.div_mul = sh_class_div_mul[c]; /* the generated multiplier pmdcache.c gives every slab */
        size_t slab = (size_t)sh_class_slab_pages[c] * 4096;
        int bad = 0;
        for (size_t off = 0; off < slab && !bad; off++)
            if (sh_block_index(&s, off) != off / bs) {
                CHECK_MSG(0, "class %u offset %zu", bs, off);
                bad = 1;
            }
    }
}

/* ---- option variants, each in a fresh process ---- */

static int mode_alloc_some(void) {
    void *p = secretheap_malloc(100);
    secretheap_free(p);
    return 0;
}

static int mode_write_after_free(void) {
    char *p = secretheap_malloc(48);
    secretheap_free(p);
    p[3] = 1;                        /* write after free */
    char *q = secretheap_malloc(48); /* the same block comes back from the magazine */
    return q == p ? 0 : 5;
}

static int mode_locked(void) {
    char *p = secretheap_malloc(100);
    int ok = secretheap_backend(p) == SECRETHEAP_BACKEND_LOCKED;
    char line[512];
    maps_line(p, line, sizeof line);
    ok = ok && !h_contains(line, "secretmem");
    memset(p, 1, 100);
    secretheap_free(p);
    ok = ok && all_bytes(p, 112, 0) && secretheap_check() == 0;
    return ok ? 0 : 7;
}

static void test_stats_at_exit(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_STATS=stderr", NULL};
    h_reexec("alloc_some", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0 && h_contains(ch.err, "secretheap stats (pid") &&
                  h_contains(ch.err, "backend secret"),
              "stderr: %s", ch.err);
    /* Machine-readable too: one "  key value" line per struct field. */
    static const char *const fields[] = {
        "backend",
        "requested_bytes",
        "reserved_bytes",
        "live_blocks",
        "run_blocks",
        "run_requested_bytes",
        "run_reserved_bytes",
        "large_regions",
        "large_requested_bytes",
        "large_reserved_bytes",
        "chunks_mapped",
        "chunks_secret",
        "chunks_locked",
        "large_regions_mapped",
        "bytes_mapped",
        "committed_bytes",
        "idle_chunks",
        "fallbacks",
        "fork_reprivatised",
        "misuse_caught",
        "openssl_hooked",
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "\n  %s ", fields[i]);
        CHECK_MSG(h_contains(ch.err, want), "no \"%s\" line: %s", fields[i], ch.err);
    }
    CHECK_MSG(h_contains(ch.err, "\n  live_blocks 0\n") && h_contains(ch.err, "\n  class_112_slabs 1\n") &&
                  h_contains(ch.err, "\n  backend 1\n"),
              "stderr: %s", ch.err);
    char path[] = "/tmp/secretheap-stats-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char var[600];
    snprintf(var, sizeof var, "SECRETHEAP_STATS=%s", path);
    const char *env2[] = {var, NULL};
    h_reexec("alloc_some", env2, -1, 0, &ch);
    FILE *f = fopen(path, "r");
    char buf[4096] = "";
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    unlink(path);
    CHECK_MSG(h_contains(buf, "secretheap stats (pid"), "file: %s", buf);
}

/* SECRETHEAP_STATS=json:stderr: the same report as one JSON line for
 * programs (internal/stats reads it; cmd/secretheap's
 * TestStatsJSONFromLibrary checks its keys against the table). */
static void test_stats_json(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_STATS=json:stderr", NULL};
    h_reexec("alloc_some", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    const char *doc = strstr(ch.err, "{\"pid\":");
    CHECK_MSG(doc != NULL && strchr(doc, '\n') == doc + strlen(doc) - 1 && doc[strlen(doc) - 2] == '}',
              "not one JSON line: %s", ch.err);
    CHECK_MSG(h_contains(ch.err, "\"summary\":\"secretheap stats (pid ") &&
                  h_contains(ch.err, "\\n  backend secret;") && h_contains(ch.err, ",\"live_blocks\":0,") &&
                  h_contains(ch.err, ",\"backend\":1,") &&
                  h_contains(ch.err, "\"classes\":[{\"size\":16,\"requested_bytes\":") &&
                  h_contains(ch.err, ",\"failures_no_support\":") && !h_contains(ch.err, "\n  live_blocks "),
              "stderr: %s", ch.err);
#define KEY(f) CHECK_MSG(h_contains(ch.err, ",\"" #f "\":"), "no \"%s\": %s", #f, ch.err);
    SH_STATS_SCALARS(KEY)
#undef KEY
}

static void test_check_zero(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_CHECK_ZERO=1", NULL};
    h_reexec("write_after_free", env, -1, 0, &ch);
    CHECK_MSG(ch.signaled && ch.sig == SIGABRT && h_contains(ch.err, "write after free: block 0x") &&
                  h_contains(ch.err, "(class 48 B)"),
              "sig %d: %s", ch.sig, ch.err);
    /* Control: without the option the write goes unnoticed. */
    h_reexec("write_after_free", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static void test_locked_backend(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_BACKEND=locked", NULL};
    h_reexec("locked", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

/* Makes memfd_secret fail with ENOSYS in this process (seccomp), as on a
 * kernel without CONFIG_SECRETMEM. */
static int block_memfd_secret(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 447, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return -1;
    return 0;
}

static int mode_no_secretmem(void) {
    if (block_memfd_secret() != 0)
        return 70;
    errno = 0;
    char *p = secretheap_malloc(100);
    char *q = secretheap_malloc(5000);
    if (!p || !q)
        return errno == ENOMEM ? 71 : 72; /* 71: refused (policy secret) */
    int b = secretheap_backend(p);
    secretheap_free(p);
    secretheap_free(q);
    return b == SECRETHEAP_BACKEND_LOCKED ? 0 : 73;
}

/* auto: the locked backend with one loud warning; secret: an abort (as
 * docs/tuning.md says) naming the cause, never NULL or other memory.
 * Control: the filter really blocks it. */
static void test_without_memfd_secret(void) {
    struct h_child ch;
    h_reexec("no_secretmem", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "auto: exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    const char *w = strstr(ch.err, "WARNING: memfd_secret unavailable (ENOSYS)");
    CHECK_MSG(w && !strstr(w + 20, "memfd_secret unavailable"), "auto: want one warning: %s", ch.err);
    const char *env[] = {"SECRETHEAP_BACKEND=secret", "SECRETHEAP_ON_EXHAUSTED=fallback", NULL};
    h_reexec("no_secretmem", env, -1, 0, &ch);
    CHECK_MSG(!ch.exited && ch.sig == SIGABRT, "secret: exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    CHECK_MSG(h_contains(ch.err, "memfd_secret unavailable (ENOSYS)") && h_contains(ch.err, "secretmem.enable=1") &&
                  h_contains(ch.err, "SECRETHEAP_BACKEND=secret refuses"),
              "secret: %s", ch.err);
}

static int mode_dumpable(void) {
    void *p = secretheap_malloc(1);
    secretheap_free(p);
    return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
}

static void test_nodump(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_NODUMP=1", NULL};
    h_reexec("dumpable", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "NODUMP=1: exit %d: %s", ch.code, ch.err);
    h_reexec("dumpable", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 1, "control: exit %d: %s", ch.code, ch.err);
}

/* Blocks freed by an exit handler that runs after the allocator's own: the
 * chunks must stay mapped (never unmap at exit), frees and mallocs work. */
static char *late_blocks[64];
static unsigned long long mapped_at(void) {
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    return st.chunks_mapped;
}
static void late_handler(void) {
    unsigned long long before = mapped_at();
    for (int i = 0; i < 64; i++) {
        if (late_blocks[i][0] != (char)(i + 1))
            _exit(80);
        secretheap_free(late_blocks[i]);
    }
    char *p = secretheap_malloc(100);
    if (!p || p[0] != 0)
        _exit(81);
    secretheap_free(p);
    _exit(mapped_at() == before ? 0 : 82);
}
static void fill_late_blocks(void) {
    for (int i = 0; i < 64; i++) {
        size_t n = i == 0 ? (3u << 20) : (i % 2 ? 30000 : 200000); /* a large region and two chunks' worth */
        late_blocks[i] = secretheap_malloc(n);
        memset(late_blocks[i], i + 1, n);
    }
}
static int mode_free_after_exit(void) {
    atexit(late_handler); /* registered before the allocator's: runs after it */
    fill_late_blocks();
    return 0;
}
/* Control: the same frees before exit do unmap (IDLE_CHUNKS=0). */
static int mode_free_before_exit(void) {
    fill_late_blocks();
    unsigned long long before = mapped_at();
    for (int i = 0; i < 64; i++)
        secretheap_free(late_blocks[i]);
    return mapped_at() < before ? 0 : 83;
}

static void test_free_after_exit_handlers(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_IDLE_CHUNKS=0", NULL};
    h_reexec("free_after_exit", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    h_reexec("free_before_exit", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "control: exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

/*
 * Start-up commits little: a short-lived program that uses many classes a
 * little (one block of each class from 512 B to 32 KiB, like `openssl
 * version` touching 17 classes for 74 KB) commits about the blocks' own OS
 * pages — short first slabs, no read-ahead while the chunk is cold — not
 * a full slab of each class plus read-ahead (225 OS pages + 64 KiB before).
 */
static int mode_startup_commit(void) {
    uint64_t want = 0;
    for (unsigned cls = 15; cls < SH_NUM_CLASSES; cls++) {
        char *p = secretheap_malloc(sh_class_size[cls]);
        if (!p)
            return 2;
        p[0] = 1; /* kept live */
        want += (sh_class_size[cls] + SH_OS_PAGE - 1) / SH_OS_PAGE * SH_OS_PAGE;
    }
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    printf("committed=%llu want=%llu\n", (unsigned long long)st.committed_bytes, (unsigned long long)want);
    return st.committed_bytes <= want + want / 10 ? 0 : 1;
}

static void test_startup_commits_little(void) {
    struct h_child ch;
    h_reexec("startup_commit", NULL, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static int mode_too_large(void) {
    struct secretheap_stats st;
    errno = 0;
    void *p = secretheap_malloc((size_t)40 << 30);
    int e = errno;
    secretheap_stats(&st, sizeof st);
    return p == NULL && e == ENOMEM && st.fallbacks == 0 && st.exhausted_returns == 0 ? 0 : 1;
}

static const struct h_mode modes[] = {
    {"too_large", mode_too_large},
    {"startup_commit", mode_startup_commit},
    {"free_after_exit", mode_free_after_exit},
    {"free_before_exit", mode_free_before_exit},
    {"no_secretmem", mode_no_secretmem},
    {"dumpable", mode_dumpable},
    {"alloc_some", mode_alloc_some},
    {"write_after_free", mode_write_after_free},
    {"locked", mode_locked},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_arena_dontdump);
    RUN(test_null_and_zero_sizes);
    RUN(test_overflow_enomem);
    RUN(test_sizes_alignment_zero);
    RUN(test_wipe_on_free);
    RUN(test_wipe_every_class);
    RUN(test_usable_size);
    RUN(test_backend_and_maps);
    RUN(test_realloc_moves_and_wipes);
    RUN(test_realloc_in_place_shrink_wipes);
    RUN(test_stats);
    RUN(test_block_index_exact);
    RUN(test_stats_at_exit);
    RUN(test_stats_json);
    RUN(test_check_zero);
    RUN(test_locked_backend);
    RUN(test_without_memfd_secret);
    RUN(test_nodump);
    RUN(test_free_after_exit_handlers);
    RUN(test_startup_commits_little);
    CHECK(secretheap_check() == 0);
    return h_done();
}
