/* fakecrypto.so — a stand-in libcrypto with just what the library's start-up
 * probe uses (CRYPTO_set_mem_functions, CRYPTO_secure_*, BN_secure_new,
 * BN_set_word, BN_clear_free) plus what dlopen_crypto calls. Built once
 * normally (its internal calls to CRYPTO_secure_zalloc go through the PLT,
 * as in Debian's libcrypto) and once with -Wl,-Bsymbolic (they bind inside
 * the library, as in some upstream builds): the probe must tell the two
 * apart. */
#include <stdlib.h>
#include <string.h>

#define API __attribute__((visibility("default")))
typedef void *(*m_fn)(size_t, const char *, int);
typedef void *(*r_fn)(void *, size_t, const char *, int);
typedef void (*f_fn)(void *, const char *, int);
static m_fn mf;
static r_fn rf;
static f_fn ff;

API int CRYPTO_set_mem_functions(m_fn m, r_fn r, f_fn f) {
    mf = m, rf = r, ff = f;
    return 1;
}
/* What the library asks to tell a hooked copy from one loaded again. */
API void CRYPTO_get_mem_functions(m_fn *m, r_fn *r, f_fn *f) { *m = mf, *r = rf, *f = ff; }
API void *CRYPTO_malloc(size_t n, const char *file, int line) { return mf ? mf(n, file, line) : malloc(n); }
API void CRYPTO_free(void *p, const char *file, int line) {
    if (ff)
        ff(p, file, line);
    else
        free(p);
}
API void *CRYPTO_secure_malloc(size_t n, const char *file, int line) { return CRYPTO_malloc(n, file, line); }
API void *CRYPTO_secure_zalloc(size_t n, const char *file, int line) {
    void *p = CRYPTO_secure_malloc(n, file, line);
    if (p)
        memset(p, 0, n);
    return p;
}
API void CRYPTO_secure_free(void *p, const char *file, int line) { CRYPTO_free(p, file, line); }
API void CRYPTO_secure_clear_free(void *p, size_t n, const char *file, int line) {
    if (p)
        memset(p, 0, n);
    CRYPTO_free(p, file, line);
}
API int CRYPTO_secure_allocated(const void *p) { return (void)p, 0; }

struct bn {
    unsigned long *d;
    int secure;
};
API void *BN_secure_new(void) {
    struct bn *b = CRYPTO_malloc(sizeof *b, __FILE__, __LINE__);
    if (b)
        b->d = NULL, b->secure = 1;
    return b;
}
API int BN_set_word(void *v, unsigned long w) {
    struct bn *b = v;
    if (b->d == NULL)
        b->d = b->secure ? CRYPTO_secure_zalloc(sizeof w, __FILE__, __LINE__)
                         : CRYPTO_malloc(sizeof w, __FILE__, __LINE__);
    if (b->d == NULL)
        return 0;
    b->d[0] = w;
    return 1;
}
API void BN_clear_free(void *v) {
    struct bn *b = v;
    if (b == NULL)
        return;
    if (b->d)
        CRYPTO_secure_clear_free(b->d, sizeof *b->d, __FILE__, __LINE__);
    CRYPTO_free(b, __FILE__, __LINE__);
}
