/* fakecrypto.c — the few libcrypto functions libsecretheap.so looks for,
 * built twice for the secure-mode report test: once as an ordinary shared
 * library (its internal calls to CRYPTO_secure_zalloc go through the PLT,
 * like Debian's libcrypto), once with -Bsymbolic-functions (bound inside
 * the library, like some upstream builds), where an LD_PRELOAD library
 * cannot see them and must say so. BN_* here are minimal stand-ins with
 * the same allocation path as bn_lib.c: BN_set_word expands the number
 * with CRYPTO_secure_zalloc. */
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t, const char *, int);
typedef void *(*realloc_fn)(void *, size_t, const char *, int);
typedef void (*free_fn)(void *, const char *, int);

static malloc_fn m_fn;
static realloc_fn r_fn;
static free_fn f_fn;

int CRYPTO_set_mem_functions(malloc_fn m, realloc_fn r, free_fn f) {
    m_fn = m;
    r_fn = r;
    f_fn = f;
    return 1;
}

/* The library asks this to tell a hooked copy from one loaded again. */
void CRYPTO_get_mem_functions(malloc_fn *m, realloc_fn *r, free_fn *f) {
    *m = m_fn;
    *r = r_fn;
    *f = f_fn;
}

void *CRYPTO_malloc(size_t n, const char *file, int line) { return m_fn ? m_fn(n, file, line) : malloc(n); }

void *CRYPTO_realloc(void *p, size_t n, const char *file, int line) {
    return r_fn ? r_fn(p, n, file, line) : realloc(p, n);
}

void CRYPTO_free(void *p, const char *file, int line) {
    if (f_fn)
        f_fn(p, file, line);
    else
        free(p);
}

void *CRYPTO_secure_malloc(size_t n, const char *file, int line) { return CRYPTO_malloc(n, file, line); }

void *CRYPTO_secure_zalloc(size_t n, const char *file, int line) {
    void *p = CRYPTO_secure_malloc(n, file, line);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

void CRYPTO_secure_free(void *p, const char *file, int line) { CRYPTO_free(p, file, line); }

void CRYPTO_secure_clear_free(void *p, size_t n, const char *file, int line) {
    if (p != NULL)
        memset(p, 0, n);
    CRYPTO_free(p, file, line);
}

int CRYPTO_secure_malloc_init(size_t size, size_t minsize) {
    (void)size;
    (void)minsize;
    return 0;
}

int CRYPTO_secure_malloc_done(void) { return 1; }
int CRYPTO_secure_malloc_initialized(void) { return 0; }

int CRYPTO_secure_allocated(const void *p) {
    (void)p;
    return 0;
}

size_t CRYPTO_secure_actual_size(void *p) {
    (void)p;
    return 0;
}

size_t CRYPTO_secure_used(void) { return 0; }

struct fake_bn {
    unsigned long *d;
    int top;
};

void *BN_secure_new(void) { return CRYPTO_secure_zalloc(sizeof(struct fake_bn), __FILE__, __LINE__); }

int BN_set_word(void *bn, unsigned long w) {
    struct fake_bn *b = bn;
    if (b->d == NULL && (b->d = CRYPTO_secure_zalloc(4 * sizeof *b->d, __FILE__, __LINE__)) == NULL)
        return 0;
    b->d[0] = w;
    b->top = 1;
    return 1;
}

void BN_clear_free(void *bn) {
    struct fake_bn *b = bn;
    if (b == NULL)
        return;
    CRYPTO_secure_clear_free(b->d, 4 * sizeof *b->d, __FILE__, __LINE__);
    CRYPTO_secure_clear_free(b, sizeof *b, __FILE__, __LINE__);
}
