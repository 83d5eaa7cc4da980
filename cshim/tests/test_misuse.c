/*
 * test_misuse.c — death tests: each misuse runs in a child that must abort
 * with the message naming it; each has a control child doing the valid
 * thing, which must exit normally.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static int double_free_48(void *arg) {
    (void)arg;
    void *p = secretheap_malloc(40); /* class 48 B */
    secretheap_free(p);
    if (!arg)
        secretheap_free(p);
    return 0;
}

static int interior_free(void *arg) {
    char *p = secretheap_malloc(100);
    secretheap_free(arg ? p : p + 16);
    return 0;
}

static int double_free_run(void *arg) {
    void *p = secretheap_malloc(50000);
    secretheap_free(p);
    if (!arg)
        secretheap_free(p);
    return 0;
}

static int interior_free_run(void *arg) {
    char *p = secretheap_malloc(50000);
    secretheap_free(arg ? p : p + 4096);
    return 0;
}

static int double_free_large(void *arg) {
    void *p = secretheap_malloc(3 << 20);
    secretheap_free(p);
    if (!arg)
        secretheap_free(p);
    return 0;
}

static int realloc_interior(void *arg) {
    char *p = secretheap_malloc(64);
    p = secretheap_realloc(arg ? p : p + 32, 200);
    secretheap_free(p);
    return 0;
}

static int double_free_other_thread_cache(void *arg) {
    /* Freed block sits in the magazine; the second free must still see it. */
    void *a = secretheap_malloc(16), *b = secretheap_malloc(16);
    secretheap_free(a);
    secretheap_free(b);
    if (!arg)
        secretheap_free(a);
    return 0;
}

static int free_guard(void *arg) {
    /* An address inside the arena but past the chunk: a wild pointer. */
    char *p = secretheap_malloc(16);
    struct sh_chunk *c = sh_chunk_of((uintptr_t)p);
    secretheap_free(arg ? p : (void *)(c->base + (3u << 20)));
    return 0;
}

/*
 * Foreign pointers: rejected before anything is written. A MAP_SHARED file
 * mapping shows any write in the file itself, which the parent reads after
 * the child died (today's core zeroed 512 KiB of it in realloc, then
 * crashed inside libc). arg: the control, a block of ours.
 */
static char shared_path[64];
#define SHARED_LEN ((size_t)1 << 20)
#define SHARED_BYTE 0x6b

static unsigned char *map_shared(void) {
    int fd = open(shared_path, O_RDWR);
    if (fd < 0)
        return NULL;
    unsigned char *m = mmap(NULL, SHARED_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return m == MAP_FAILED ? NULL : m;
}

static int realloc_shared_file(void *arg) {
    unsigned char *m = map_shared();
    if (!m)
        return 90;
    /* In front of the pointer: what glibc would read as a chunk header
     * saying 512 KiB (IS_MMAPPED), so malloc_usable_size trusts it. */
    uint64_t hdr = (512u << 10) | 2;
    memcpy(m + 4096 - 8, &hdr, 8);
    void *p = arg ? secretheap_malloc(64) : m + 4096;
    void *q = secretheap_realloc(p, 100);
    secretheap_free(q);
    return 0;
}

static int free_shared_file(void *arg) {
    unsigned char *m = map_shared();
    if (!m)
        return 90;
    secretheap_free(arg ? secretheap_malloc(64) : m + 8192);
    return 0;
}

static int free_libc_block(void *arg) {
    void *m = malloc(100);
    secretheap_free(arg ? secretheap_malloc(100) : m);
    if (arg)
        free(m);
    return 0;
}

static int realloc_libc_block(void *arg) {
    /* Other bytes in front of the pointer: malloc_usable_size crashed here. */
    char *m = malloc(256);
    memset(m, 0xff, 256);
    void *q = secretheap_realloc(arg ? secretheap_malloc(16) : m + 48, 64);
    secretheap_free(q);
    free(m);
    return 0;
}

static int free_stack(void *arg) {
    char buf[64];
    memset(buf, 1, sizeof buf);
    secretheap_free(arg ? secretheap_malloc(8) : buf + 16);
    return buf[0] == 1 ? 0 : 91;
}

struct death {
    const char *name;
    int (*fn)(void *);
    const char *want; /* substring of stderr */
};

static const struct death deaths[] = {
    {"double free (class 48)", double_free_48, "double free of 0x"},
    {"double free names the class", double_free_48, "(class 48 B)"},
    {"interior free", interior_free, "free of interior pointer 0x"},
    {"interior free names block and class", interior_free, "(block 0x"},
    {"double free of a page run", double_free_run, "double free of 0x"},
    {"interior free of a page run", interior_free_run, "free of interior pointer 0x"},
    {"double free of a large region", double_free_large, "in no live chunk"},
    {"realloc of an interior pointer", realloc_interior, "realloc of interior pointer 0x"},
    {"double free while cached", double_free_other_thread_cache, "double free of 0x"},
    {"free of a guard address", free_guard, "inside the secretheap arena but in no live chunk"},
    {"realloc of a shared file mapping", realloc_shared_file, "realloc of 0x"},
    {"realloc of a foreign pointer is named", realloc_shared_file, "not a block of secretheap"},
    {"free of a shared file mapping", free_shared_file, "not a block of secretheap"},
    {"free of a libc block", free_libc_block, "free of 0x"},
    {"realloc of a libc interior pointer", realloc_libc_block, "not a block of secretheap"},
    {"free of a stack address", free_stack, "not a block of secretheap"},
};

/* The file behind the shared mapping holds SHARED_BYTE everywhere, but for
 * the fake header the realloc test writes itself. */
static int shared_file_intact(void) {
    int fd = open(shared_path, O_RDONLY);
    if (fd < 0)
        return 0;
    static unsigned char buf[SHARED_LEN];
    ssize_t n = pread(fd, buf, SHARED_LEN, 0);
    close(fd);
    if (n != (ssize_t)SHARED_LEN)
        return 0;
    for (size_t i = 0; i < SHARED_LEN; i++)
        if (buf[i] != SHARED_BYTE && (i < 4096 - 8 || i >= 4096))
            return 0;
    return 1;
}

static void reset_shared_file(void) {
    int fd = open(shared_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    static unsigned char buf[SHARED_LEN];
    memset(buf, SHARED_BYTE, sizeof buf);
    CHECK(fd >= 0 && pwrite(fd, buf, sizeof buf, 0) == (ssize_t)sizeof buf);
    close(fd);
}

static void test_deaths(void) {
    snprintf(shared_path, sizeof shared_path, "/tmp/secretheap-misuse-%d", (int)getpid());
    for (size_t i = 0; i < sizeof deaths / sizeof deaths[0]; i++) {
        struct h_child ch;
        reset_shared_file();
        h_fork(deaths[i].fn, NULL, &ch);
        CHECK_MSG(ch.signaled && ch.sig == SIGABRT, "%s: exit %d sig %d: %s", deaths[i].name, ch.code, ch.sig, ch.err);
        CHECK_MSG(h_contains(ch.err, "secretheap: ") && h_contains(ch.err, deaths[i].want), "%s: stderr: %s",
                  deaths[i].name, ch.err);
        CHECK_MSG(shared_file_intact(), "%s: the shared file mapping was written to", deaths[i].name);
        /* Control: the valid variant runs to completion, silently. */
        h_fork(deaths[i].fn, (void *)1, &ch);
        CHECK_MSG(ch.exited && ch.code == 0 && ch.err[0] == 0, "%s control: exit %d sig %d: %s", deaths[i].name,
                  ch.code, ch.sig, ch.err);
    }
    unlink(shared_path);
}

/* The counter moves before the abort (abort skips exit handlers, so read it
 * from a SIGABRT handler). */
static void on_abort(int sig) {
    (void)sig;
    struct secretheap_stats st;
    secretheap_stats(&st, sizeof st);
    _exit(st.misuse_caught == 1 ? 42 : 43);
}

static int count_then_die(void *arg) {
    (void)arg;
    signal(SIGABRT, on_abort);
    return double_free_48(NULL);
}

static void test_misuse_counted(void) {
    struct h_child ch;
    h_fork(count_then_die, NULL, &ch);
    CHECK_MSG(ch.exited && ch.code == 42, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

int main(void) {
    RUN(test_deaths);
    RUN(test_misuse_counted);
    return h_done();
}
