/* heap_fuzz.c — libFuzzer harness for the C core's public API.
 *
 * The input is an operation stream. Each operation is one opcode byte
 * followed by its operands; a slot table of NSLOTS live blocks is kept, each
 * with the size asked for and the byte it was filled with. After every
 * operation the harness checks what the API promises:
 *   - a new block (malloc, calloc, realloc that moved, past the copy) is zero;
 *   - usable_size >= the size asked for, and backend names our memory;
 *   - a block keeps every byte written to it until it is freed, and realloc
 *     keeps the common prefix;
 *   - calloc that overflows returns NULL with errno ENOMEM;
 *   - secretheap_check (the invariant checker) passes;
 *   - at the end, with every block freed, live_blocks is back to where it
 *     started.
 * A failed check aborts with a message naming it, which libFuzzer reports as
 * a crash with the input that caused it. ASan and UBSan watch the core itself.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cshim/include/secretheap.h"

#define NSLOTS 32

struct slot {
    unsigned char *p;
    size_t n;          /* size asked for */
    unsigned char val; /* every byte of [0, n) holds val */
};

static struct slot slots[NSLOTS];

static void fail(const char *what, size_t a, size_t b) {
    fprintf(stderr, "heap_fuzz: %s (%zu, %zu)\n", what, a, b);
    abort();
}

/* take returns the next input byte, 0 past the end. */
static unsigned take(const uint8_t **d, size_t *n) {
    if (*n == 0)
        return 0;
    (*n)--;
    return *(*d)++;
}

/* size_from picks a size from three bytes, biased to the interesting
 * ranges: tiny, the 16-byte classes, every small class (<= 32 KiB), page
 * runs, whole OS pages, and rarely (1 in 32) a request larger than half a
 * chunk, which gets a region of its own. Big blocks are rare because the
 * checker after every op walks all committed memory. */
static size_t size_from(const uint8_t **d, size_t *n) {
    unsigned sel = take(d, n);
    unsigned v = take(d, n) | (take(d, n) << 8);
    switch (sel & 15) {
    case 0:
        return v & 31; /* 0..31, incl. 0 */
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
        return v & 1023; /* 16-byte classes */
    case 6:
    case 7:
    case 8:
    case 9:
    case 10:
        return (v % 32768) + 1; /* every small class */
    case 11:
    case 12:
        return 32768 + (v % (256 * 1024)); /* page runs */
    case 13:
        return (size_t)4096 * (v % 64); /* exact OS pages */
    case 14:
        return (size_t)1 << (v % 18); /* powers of two up to 128 KiB */
    default:
        return (sel & 16) ? (size_t)1100 * 1024 + v : (size_t)1 << (v % 21);
    }
}

static int all_equal(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static void check_block(const struct slot *s) {
    if (s->p == NULL)
        return;
    if (secretheap_usable_size(s->p) < s->n)
        fail("usable_size below the size asked for", secretheap_usable_size(s->p), s->n);
    if (s->n > 0 && secretheap_backend(s->p) == SECRETHEAP_BACKEND_NONE)
        fail("backend says a live block is not ours", (size_t)(uintptr_t)s->p, s->n);
    if (!all_equal(s->p, s->n, s->val))
        fail("block contents changed while live", (size_t)(uintptr_t)s->p, s->n);
}

static void put(struct slot *s, unsigned char *p, size_t n, unsigned char val) {
    s->p = p;
    s->n = n;
    s->val = val;
    if (p != NULL && n > 0)
        memset(p, val, n);
}

static void release(struct slot *s) {
    check_block(s);
    secretheap_free(s->p);
    s->p = NULL;
    s->n = 0;
}

static uint64_t live_blocks(void) {
    struct secretheap_stats st;
    if (secretheap_stats(&st, sizeof st) != 0)
        fail("secretheap_stats failed", 0, 0);
    return st.live_blocks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t live0 = live_blocks();
    const uint8_t *d = data;
    size_t n = size;
    unsigned ops = 0;

    while (n > 0 && ops++ < 1024) {
        unsigned op = take(&d, &n);
        struct slot *s = &slots[take(&d, &n) % NSLOTS];
        unsigned char val = (unsigned char)(op | 1); /* never 0: a wipe shows */
        switch (op % 6) {
        case 0: { /* malloc */
            release(s);
            size_t sz = size_from(&d, &n);
            unsigned char *p = secretheap_malloc(sz);
            if (p == NULL && sz > 0)
                fail("malloc returned NULL", sz, 0);
            if (!all_equal(p, sz, 0))
                fail("malloc returned a block that is not zero", sz, 0);
            put(s, p, sz, val);
            break;
        }
        case 1: { /* calloc, sometimes overflowing */
            release(s);
            size_t a = size_from(&d, &n) & 0xfff, b = take(&d, &n) + 1;
            if (take(&d, &n) == 0xff) {
                errno = 0;
                if (secretheap_calloc(SIZE_MAX / 2, 3) != NULL || errno != ENOMEM)
                    fail("calloc overflow not refused with ENOMEM", SIZE_MAX / 2, 3);
                break;
            }
            unsigned char *p = secretheap_calloc(a, b);
            if (p == NULL && a * b > 0)
                fail("calloc returned NULL", a, b);
            if (!all_equal(p, a * b, 0))
                fail("calloc returned a block that is not zero", a, b);
            put(s, p, a * b, val);
            break;
        }
        case 2: { /* realloc: NULL → malloc, 0 → free, else keep the prefix */
            check_block(s);
            size_t sz = size_from(&d, &n);
            size_t old_usable = s->p ? secretheap_usable_size(s->p) : 0;
            unsigned char *p = secretheap_realloc(s->p, sz);
            if (sz == 0 && s->p != NULL) {
                if (p != NULL)
                    fail("realloc to 0 did not return NULL", 0, 0);
                s->p = NULL;
                s->n = 0;
                break;
            }
            /* realloc(NULL, 0) is malloc(0): NULL or a block. */
            if (p == NULL && sz > 0)
                fail("realloc returned NULL", sz, 0);
            size_t keep = s->n < sz ? s->n : sz;
            if (!all_equal(p, keep, s->val))
                fail("realloc lost the old contents", keep, sz);
            /* A block that moved is a fresh one and must be zero past
             * what was copied: realloc may copy the old block's whole
             * usable size, which holds what this harness wrote into the
             * usable tail. One grown in place may hold that tail too. */
            size_t copied = old_usable > keep ? old_usable : keep;
            if (p != s->p && sz > copied && !all_equal(p + copied, sz - copied, 0))
                fail("realloc moved to a block that is not zero", copied, sz);
            put(s, p, sz, val);
            break;
        }
        case 3: /* free */
            release(s);
            break;
        case 4: /* rewrite a live block in place */
            check_block(s);
            if (s->p != NULL)
                put(s, s->p, s->n, val);
            break;
        default: /* usable_size: the whole usable tail is ours and writable */
            check_block(s);
            if (s->p != NULL) {
                size_t u = secretheap_usable_size(s->p);
                /* Left dirty on purpose: free must wipe the whole
                 * block, not the size asked for, or the next malloc
                 * of it is not zero (checked above). */
                if (u > s->n)
                    memset(s->p + s->n, 0x5a, u - s->n);
            }
            break;
        }
        if (secretheap_check() != 0)
            fail("secretheap_check failed", ops, op);
    }
    for (int i = 0; i < NSLOTS; i++)
        release(&slots[i]);
    if (secretheap_check() != 0)
        fail("secretheap_check failed after freeing everything", 0, 0);
    uint64_t live1 = live_blocks();
    if (live1 != live0)
        fail("live_blocks not back to its start value", (size_t)live0, (size_t)live1);
    return 0;
}
