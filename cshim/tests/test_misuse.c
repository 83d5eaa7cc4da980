/*
 * test_misuse.c — death tests: each misuse runs in a child that must abort
 * with the message naming it; each has a control child doing the valid
 * thing, which must exit normally.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
};

static void test_deaths(void) {
    for (size_t i = 0; i < sizeof deaths / sizeof deaths[0]; i++) {
        struct h_child ch;
        h_fork(deaths[i].fn, NULL, &ch);
        CHECK_MSG(ch.signaled && ch.sig == SIGABRT, "%s: exit %d sig %d: %s", deaths[i].name, ch.code, ch.sig,
                  ch.err);
        CHECK_MSG(h_contains(ch.err, "secretheap: ") && h_contains(ch.err, deaths[i].want), "%s: stderr: %s",
                  deaths[i].name, ch.err);
        /* Control: the valid variant runs to completion, silently. */
        h_fork(deaths[i].fn, (void *)1, &ch);
        CHECK_MSG(ch.exited && ch.code == 0 && ch.err[0] == 0, "%s control: exit %d sig %d: %s", deaths[i].name,
                  ch.code, ch.sig, ch.err);
    }
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
