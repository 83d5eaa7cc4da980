/*
 * test_options.c — the C side of the one options table: the shared test
 * vectors (internal/options/testdata/vectors.tsv, also run against the Go
 * parser) through the C parser; fail closed (an invalid value aborts at
 * start-up naming the variable and the accepted values — it used to print a
 * line and run on defaults); unknown SECRETHEAP_* names reported once; the
 * enum words in the order of internal.h's enums.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

/* The vectors file: from the repository root (make runs tests there), or
 * found from this binary (build/<dir>/test_options). */
static FILE *open_vectors(void) {
    FILE *f = fopen("internal/options/testdata/vectors.tsv", "r");
    if (f)
        return f;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
    if (n <= 0)
        return NULL;
    exe[n] = 0;
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            return NULL;
        *slash = 0;
    }
    strcat(exe, "/internal/options/testdata/vectors.tsv");
    return fopen(exe, "r");
}

static void unescape(const char *in, char *out) {
    for (; *in; in++) {
        if (in[0] == '\\' && (in[1] == 's' || in[1] == 't' || in[1] == 'n')) {
            *out++ = in[1] == 's' ? ' ' : in[1] == 't' ? '\t' : '\n';
            in++;
        } else {
            *out++ = *in;
        }
    }
    *out = 0;
}

static void test_vectors(void) {
    FILE *f = open_vectors();
    CHECK_MSG(f != NULL, "internal/options/testdata/vectors.tsv not found");
    if (!f)
        return;
    char line[1024];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\n")] = 0;
        if (line[0] == 0 || line[0] == '#')
            continue;
        char *name = line, *raw = strchr(line, '\t'), *want = raw ? strchr(raw + 1, '\t') : NULL;
        CHECK_MSG(raw && want, "vectors.tsv:%d: three columns", lineno);
        if (!raw || !want)
            continue;
        *raw++ = 0;
        *want++ = 0;
        char value[1024], got[512];
        unescape(raw, value);
        int e = sh_option_check(name, value, got, sizeof got);
        if (strcmp(want, "error") == 0) {
            size_t nl = strlen(name);
            CHECK_MSG(e == EINVAL && strncmp(got, name, nl) == 0 && strncmp(got + nl, "=\"", 2) == 0 &&
                          h_contains(got, "(accepted: "),
                      "vectors.tsv:%d: %s=\"%s\": want an error, got %d \"%s\"", lineno, name, value, e, got);
        } else {
            CHECK_MSG(e == 0 && strcmp(got, want + 1) == 0, "vectors.tsv:%d: %s=\"%s\": want %s, got %d \"%s\"", lineno,
                      name, value, want + 1, e, got);
        }
        n++;
    }
    fclose(f);
    CHECK_MSG(n >= 50, "only %d vectors", n);
    char got[256];
    CHECK(sh_option_check("SECRETHEAP_NOPE", "1", got, sizeof got) == ENOENT);
}

static int mode_alloc_some(void) {
    void *p = secretheap_malloc(100);
    secretheap_free(p);
    return 0;
}

static int mode_enum_order(void) {
    void *p = secretheap_malloc(1);
    secretheap_free(p);
    return sh_opt.backend == SH_POLICY_LOCKED && sh_opt.on_exhausted == SH_EXH_ABORT &&
                   sh_opt.openssl == SH_OPENSSL_OFF && sh_opt.fork == SH_FORK_DONTFORK && sh_opt.limit == (64u << 20) &&
                   sh_opt.idle_chunks == 3 && strcmp(sh_opt.stats, "") == 0
               ? 0
               : 9;
}

/* Fail closed: main printed one line and ran on the defaults (exit 0). */
static void test_invalid_value_aborts(void) {
    static const struct {
        const char *env, *want;
    } cases[] = {
        {"SECRETHEAP_LIMIT=lots", "SECRETHEAP_LIMIT=\"lots\" is invalid (accepted: a size in bytes"},
        {"SECRETHEAP_LIMIT=16 K", "SECRETHEAP_LIMIT=\"16 K\" is invalid"},
        {"SECRETHEAP_FORK=spoon", "SECRETHEAP_FORK=\"spoon\" is invalid (accepted: copy, dontfork)"},
        {"SECRETHEAP_BACKEND=secrte", "SECRETHEAP_BACKEND=\"secrte\" is invalid (accepted: auto, secret, locked)"},
        {"SECRETHEAP_STATS=stdrr", "SECRETHEAP_STATS=\"stdrr\" is invalid (accepted: off, stderr, or a file path"},
        {"SECRETHEAP_NODUMP=yes", "SECRETHEAP_NODUMP=\"yes\" is invalid (accepted: 0 or 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct h_child ch;
        const char *env[] = {cases[i].env, NULL};
        h_reexec("alloc_some", env, -1, 0, &ch);
        CHECK_MSG(ch.signaled && ch.sig == SIGABRT, "%s: exit %d sig %d: %s", cases[i].env, ch.code, ch.sig, ch.err);
        CHECK_MSG(h_contains(ch.err, "secretheap: ") && h_contains(ch.err, cases[i].want), "%s: stderr: %s",
                  cases[i].env, ch.err);
    }
    /* Control: valid values, surrounding blanks and blank values print nothing. */
    struct h_child ch;
    const char *ok[] = {"SECRETHEAP_LIMIT= 64M ", "SECRETHEAP_FORK=COPY", "SECRETHEAP_BACKEND=", NULL};
    h_reexec("alloc_some", ok, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0 && !h_contains(ch.err, "secretheap:"), "control: stderr: %s", ch.err);
}

static void test_unknown_name_reported(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_BACKND=secret", NULL};
    h_reexec("alloc_some", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
    const char *w = strstr(ch.err, "SECRETHEAP_BACKND is not an option of secretheap and is ignored (options: "
                                   "SECRETHEAP_ + BACKEND, LIMIT");
    CHECK_MSG(w && !strstr(w + 1, "SECRETHEAP_BACKND"), "want one report: %s", ch.err);
    /* The project's tool variables are not options and not reported. */
    const char *tools[] = {"SECRETHEAP_REQUIRE=1", "SECRETHEAP_TESTUTIL_CHILD=x", NULL};
    h_reexec("alloc_some", tools, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0 && !h_contains(ch.err, "secretheap:"), "tools: stderr: %s", ch.err);
}

static void test_enum_order(void) {
    struct h_child ch;
    const char *env[] = {"SECRETHEAP_BACKEND=locked", "SECRETHEAP_ON_EXHAUSTED=abort",
                         "SECRETHEAP_OPENSSL=off",    "SECRETHEAP_FORK=dontfork",
                         "SECRETHEAP_LIMIT=64MiB",    "SECRETHEAP_IDLE_CHUNKS=3",
                         "SECRETHEAP_STATS=0",        NULL};
    h_reexec("enum_order", env, -1, 0, &ch);
    CHECK_MSG(ch.exited && ch.code == 0, "exit %d sig %d: %s", ch.code, ch.sig, ch.err);
}

static const struct h_mode modes[] = {
    {"alloc_some", mode_alloc_some},
    {"enum_order", mode_enum_order},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    int r = h_dispatch(argc, argv, modes);
    if (r >= 0)
        return r;
    RUN(test_vectors);
    RUN(test_invalid_value_aborts);
    RUN(test_unknown_name_reported);
    RUN(test_enum_order);
    return h_done();
}
