/*
 * options.c — the options, read once from the environment on first use of
 * the allocator (sh_init, under pthread_once): never from a constructor that
 * could run before the C runtime is ready, and never again, so a later
 * setenv changes nothing.
 *
 * The table is generated (options_table.h, from internal/options.Table in
 * Go: `make generate`), and so are the texts of its messages and struct
 * sh_options (options.h); the syntax is the one internal/options documents, and one set of
 * test vectors (internal/options/testdata/vectors.tsv) runs against this
 * parser (cshim/tests/test_options.c) and the Go one. Fail closed: an
 * invalid value prints the variable and the accepted values and aborts — a
 * typo never silently means the defaults. A SECRETHEAP_* name that is
 * neither an option nor a tool variable is reported once.
 * secure_getenv: in a setuid/setgid program the environment belongs to the
 * caller, who must not choose where stats are written or weaken the policy,
 * so every option keeps its default there (and nothing is reported).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "internal.h"

struct sh_options sh_opt; /* every member set from the table's defaults by sh_options_init */

enum { OPT_ENUM, OPT_SIZE, OPT_INT, OPT_OUTPUT };
enum { SH_SCOPE_BOTH, SH_SCOPE_C_ONLY };

struct sh_opt_def {
    const char *name;
    int kind;
    const char *def;           /* default, as the user would write it */
    const char *const *values; /* OPT_ENUM: accepted words, index = value */
    long min, max;             /* OPT_INT */
    void *dst;
    int scope;            /* SH_SCOPE_*: documentation only, the C library acts on all */
    const char *accepted; /* for messages, the same text as Go's */
    const char *meaning;  /* one line */
};

#include "options_table.h"

#define NOPTS (sizeof sh_option_table / sizeof sh_option_table[0])
static const char blanks[] = " \t\r\n\v\f";

/* The parsed value of one option. */
union value {
    int i;
    uint64_t u;
    char text[sizeof sh_opt.stats];
};

static bool all_digits(const char *s, size_t n) {
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Decimal digits [s, s+n) without overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The size syntax of internal/options: digits, then K/M/G and B or iB, or B. */
static bool parse_size(const char *s, size_t n, uint64_t *out) {
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    uint64_t v;
    if (i == 0 || !parse_u64(s, i, &v))
        return false;
    unsigned shift = 0;
    if (i < n) {
        switch (s[i]) {
        case 'k':
        case 'K':
            shift = 10;
            i++;
            break;
        case 'm':
        case 'M':
            shift = 20;
            i++;
            break;
        case 'g':
        case 'G':
            shift = 30;
            i++;
            break;
        default:
            break;
        }
        if (shift && n - i == 2 && (s[i] == 'i' || s[i] == 'I') && (s[i + 1] == 'b' || s[i + 1] == 'B'))
            i += 2;
        else if (n - i == 1 && (s[i] == 'b' || s[i] == 'B'))
            i++;
    }
    if (i != n || (shift && v > (UINT64_MAX >> shift)))
        return false;
    *out = v << shift;
    return true;
}

/* Parses [s, s+n) (already trimmed, not blank). */
static bool parse(const struct sh_opt_def *o, const char *s, size_t n, union value *v) {
    switch (o->kind) {
    case OPT_ENUM:
        for (int j = 0; o->values[j]; j++)
            if (strlen(o->values[j]) == n && strncasecmp(s, o->values[j], n) == 0) {
                v->i = j;
                return true;
            }
        return false;
    case OPT_SIZE:
        return parse_size(s, n, &v->u);
    case OPT_INT: {
        uint64_t u;
        if (!all_digits(s, n) || !parse_u64(s, n, &u) || u < (uint64_t)o->min || u > (uint64_t)o->max)
            return false;
        v->i = (int)u;
        return true;
    }
    default:
        if ((n == 3 && strncasecmp(s, "off", 3) == 0) || (n == 1 && s[0] == '0')) {
            v->text[0] = 0;
            return true;
        }
        size_t form = 0; /* "json:" (any case) first: the JSON form, stored as "json:" */
        if (n >= 5 && strncasecmp(s, "json:", 5) == 0) {
            memcpy(v->text, "json:", 5);
            form = 5;
            s += 5;
            n -= 5;
        }
        if (n == 6 && strncasecmp(s, "stderr", 6) == 0) {
            strcpy(v->text + form, "stderr");
            return true;
        }
        if (memchr(s, '/', n) && form + n < sizeof v->text) {
            memcpy(v->text + form, s, n);
            v->text[form + n] = 0;
            return true;
        }
        return false;
    }
}

/* raw NULL or blank: the default. false: invalid. */
static bool parse_raw(const struct sh_opt_def *o, const char *raw, union value *v) {
    const char *s = raw ? raw : "";
    s += strspn(s, blanks);
    size_t n = strlen(s);
    while (n > 0 && strchr(blanks, s[n - 1]))
        n--;
    if (n == 0) {
        s = o->def;
        n = strlen(s);
    }
    return parse(o, s, n, v);
}

static void store(const struct sh_opt_def *o, const union value *v) {
    switch (o->kind) {
    case OPT_ENUM:
    case OPT_INT:
        *(int *)o->dst = v->i;
        break;
    case OPT_SIZE:
        *(uint64_t *)o->dst = v->u;
        break;
    default:
        strcpy((char *)o->dst, v->text);
    }
}

static const struct sh_opt_def *lookup(const char *name, size_t n) {
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(sh_option_table[i].name) == n && strncmp(sh_option_table[i].name, name, n) == 0)
            return &sh_option_table[i];
    return NULL;
}

static bool is_tool(const char *name, size_t n) {
    for (const char *const *t = sh_tool_names; *t; t++) {
        size_t tn = strlen(*t);
        if ((tn == n && strncmp(*t, name, n) == 0) || ((*t)[tn - 1] == '_' && n >= tn && strncmp(*t, name, tn) == 0))
            return true;
    }
    return false;
}

int sh_option_check(const char *name, const char *raw, char *out, size_t n) {
    const struct sh_opt_def *o = lookup(name, strlen(name));
    if (!o) {
        if (n)
            out[0] = 0;
        return ENOENT;
    }
    union value v;
    if (!parse_raw(o, raw, &v)) {
        snprintf(out, n, "%s=\"%s\" is invalid (accepted: %s)", o->name, raw, o->accepted);
        return EINVAL;
    }
    switch (o->kind) {
    case OPT_ENUM:
        snprintf(out, n, "%s", o->values[v.i]);
        break;
    case OPT_INT:
        snprintf(out, n, "%d", v.i);
        break;
    case OPT_SIZE:
        snprintf(out, n, "%llu", (unsigned long long)v.u);
        break;
    default:
        snprintf(out, n, "%s", v.text[0] ? v.text : "off");
    }
    return 0;
}

extern char **environ;

void sh_options_init(void) {
    for (size_t i = 0; i < NOPTS; i++) {
        const struct sh_opt_def *o = &sh_option_table[i];
        union value v;
        if (!parse_raw(o, NULL, &v))
            sh_fatal("the default of %s (%s) does not parse: regenerate options_table.h", o->name, o->def);
        store(o, &v);
    }
    if (getauxval(AT_SECURE))
        return; /* setuid/setgid: secure_getenv gives nothing, keep the defaults, report nothing */
    for (size_t i = 0; i < NOPTS; i++) {
        const struct sh_opt_def *o = &sh_option_table[i];
        const char *raw = secure_getenv(o->name);
        union value v;
        if (!parse_raw(o, raw, &v))
            sh_fatal("%s=\"%s\" is invalid (accepted: %s)", o->name, raw, o->accepted);
        store(o, &v);
    }
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        if (n > 11 && strncmp(*e, "SECRETHEAP_", 11) == 0 && !lookup(*e, n) && !is_tool(*e, n))
            sh_log(0, "%.*s is not an option of secretheap and is ignored (options: SECRETHEAP_ + %s)", (int)n, *e,
                   SH_OPTION_NAMES);
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
