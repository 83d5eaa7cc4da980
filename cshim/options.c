/*
 * options.c — one table of options (name, default, meaning), read once from
 * the environment on first use of the allocator (sh_init, under
 * pthread_once): never from a constructor that could run before the C
 * runtime is ready, and never again, so a later setenv changes nothing.
 * secure_getenv: in a setuid/setgid program the environment belongs to the
 * caller, who must not choose where stats are written or weaken the policy,
 * so every option keeps its default there.
 * An invalid value gets one line on stderr naming the variable and the
 * accepted values; the default is used.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

struct sh_options sh_opt = {
    .backend = SH_POLICY_AUTO,
    .limit = 0,
    .idle_chunks = 2,
    .on_exhausted = SH_EXH_FALLBACK,
    .openssl = SH_OPENSSL_ALL,
    .secure_reserve = 256 << 10,
    .fork = SH_FORK_COPY,
    .stats = "",
    .verbose = 0,
    .nodump = 0,
    .check_zero = 0,
};

enum { OPT_ENUM, OPT_SIZE, OPT_INT, OPT_OUTPUT };

struct opt {
    const char *name;
    const char *def;     /* default, as the user would write it */
    const char *meaning; /* one line */
    int kind;
    const char *const *values; /* OPT_ENUM: accepted words, index = value */
    long min, max;             /* OPT_INT */
    void *dst;
};

static const char *const v_backend[] = {"auto", "secret", "locked", NULL};
static const char *const v_exhausted[] = {"fallback", "null", "abort", NULL};
static const char *const v_openssl[] = {"all", "secure", "off", NULL};
static const char *const v_fork[] = {"copy", "dontfork", NULL};

static const struct opt table[] = {
    {"SECRETHEAP_BACKEND", "auto",
     "auto: memfd_secret, else the locked backend with one loud warning; secret: fail without it; locked",
     OPT_ENUM, v_backend, 0, 0, &sh_opt.backend},
    {"SECRETHEAP_LIMIT", "0", "most secret memory mapped (bytes, K/M/G); 0: only RLIMIT_MEMLOCK limits", OPT_SIZE,
     NULL, 0, 0, &sh_opt.limit},
    {"SECRETHEAP_IDLE_CHUNKS", "2", "wholly free chunks kept mapped for reuse", OPT_INT, NULL, 0, 4096,
     &sh_opt.idle_chunks},
    {"SECRETHEAP_ON_EXHAUSTED", "fallback",
     "fallback: libc memory, counted, one warning; null: NULL + ENOMEM; abort", OPT_ENUM, v_exhausted, 0, 0,
     &sh_opt.on_exhausted},
    {"SECRETHEAP_OPENSSL", "all", "all OpenSSL allocations, secure (only CRYPTO_secure_*), or off", OPT_ENUM,
     v_openssl, 0, 0, &sh_opt.openssl},
    {"SECRETHEAP_SECURE_RESERVE", "256K", "share of the limit kept for secure-heap allocations in mode all",
     OPT_SIZE, NULL, 0, 0, &sh_opt.secure_reserve},
    {"SECRETHEAP_FORK", "copy", "copy: children get private copies; dontfork: children lose the secrets",
     OPT_ENUM, v_fork, 0, 0, &sh_opt.fork},
    {"SECRETHEAP_STATS", "off", "off, stderr, or a file path: print statistics at exit", OPT_OUTPUT, NULL, 0, 0,
     sh_opt.stats},
    {"SECRETHEAP_VERBOSE", "0", "0 warnings only, 1 info, 2 debug", OPT_INT, NULL, 0, 2, &sh_opt.verbose},
    {"SECRETHEAP_NODUMP", "0", "1: prctl(PR_SET_DUMPABLE, 0) at start (blocks same-user ptrace)", OPT_INT, NULL, 0,
     1, &sh_opt.nodump},
    {"SECRETHEAP_CHECK_ZERO", "0", "1: verify a block is still zero when handed out again", OPT_INT, NULL, 0, 1,
     &sh_opt.check_zero},
};

int sh_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s)
        return EINVAL;
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

static void invalid(const struct opt *o, const char *val) {
    char want[160] = "";
    switch (o->kind) {
    case OPT_ENUM:
        for (const char *const *v = o->values; *v; v++) {
            if (v != o->values)
                strncat(want, ", ", sizeof want - strlen(want) - 1);
            strncat(want, *v, sizeof want - strlen(want) - 1);
        }
        break;
    case OPT_SIZE:
        snprintf(want, sizeof want, "a size in bytes with an optional K, M or G suffix");
        break;
    case OPT_INT:
        snprintf(want, sizeof want, "an integer from %ld to %ld", o->min, o->max);
        break;
    default:
        snprintf(want, sizeof want, "off, stderr or a file path");
    }
    sh_log(0, "%s=\"%s\" is invalid (accepted: %s); using the default %s", o->name, val, want, o->def);
}

void sh_options_init(void) {
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct opt *o = &table[i];
        const char *val = secure_getenv(o->name);
        if (!val)
            continue;
        switch (o->kind) {
        case OPT_ENUM: {
            int found = -1;
            for (int j = 0; o->values[j]; j++)
                if (strcasecmp(val, o->values[j]) == 0)
                    found = j;
            if (found < 0)
                invalid(o, val);
            else
                *(int *)o->dst = found;
            break;
        }
        case OPT_SIZE: {
            uint64_t v;
            if (sh_parse_size(val, &v) != 0)
                invalid(o, val);
            else
                *(uint64_t *)o->dst = v;
            break;
        }
        case OPT_INT: {
            char *end;
            errno = 0;
            long v = strtol(val, &end, 10);
            if (errno || end == val || *end || v < o->min || v > o->max)
                invalid(o, val);
            else
                *(int *)o->dst = (int)v;
            break;
        }
        case OPT_OUTPUT:
            if (strcasecmp(val, "off") == 0 || strcmp(val, "0") == 0 || *val == 0)
                ((char *)o->dst)[0] = 0;
            else if (strlen(val) >= sizeof sh_opt.stats)
                invalid(o, val);
            else
                strcpy((char *)o->dst, val);
            break;
        }
    }
}

static void vlog(const char *fmt, va_list ap) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "secretheap: ");
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
    buf[len++] = '\n';
    /* write(2), not stdio: no locks or buffers that a fork or an abort could strand. */
    ssize_t w = write(2, buf, len);
    (void)w;
}

void sh_log(int level, const char *fmt, ...) {
    if (level > sh_opt.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void sh_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
    abort();
}
