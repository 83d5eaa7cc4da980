/* plugin.so — stands for Python's _ssl module: a shared object linked with
 * libcrypto, dlopen()ed RTLD_LOCAL by a program that does not link libcrypto
 * itself. Its calls to OPENSSL_malloc and OPENSSL_secure_malloc go through
 * its PLT, as any real user's do. */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#ifdef ALLOC_IN_CTOR
/* Built with -DALLOC_IN_CTOR: allocate through OpenSSL in our constructor,
 * which runs inside dlopen, before the library's dlopen wrapper can install
 * its hooks; OpenSSL then refuses them. */
__attribute__((constructor)) static void early(void) { OPENSSL_free(OPENSSL_malloc(16)); }
#endif

static int theirs;
static void *their_malloc(size_t n, const char *f, int l) {
    (void)n, (void)f, (void)l;
    theirs++;
    return NULL;
}
static void *their_realloc(void *p, size_t n, const char *f, int l) {
    (void)p, (void)n, (void)f, (void)l;
    theirs++;
    return NULL;
}
static void their_free(void *p, const char *f, int l) {
    (void)p, (void)f, (void)l;
    theirs++;
}

__attribute__((visibility("default"))) int plugin_run(void) {
    int (*backend)(const void *);
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    char *p = OPENSSL_malloc(100);
    char *s = OPENSSL_secure_malloc(48);
    if (p == NULL || s == NULL)
        return 1;
    memset(p, 0x5a, 100);
    memset(s, 0x5b, 48);
    printf("malloc_backend %d\n", backend ? backend(p) : -1);
    printf("secure_backend %d\n", backend ? backend(s) : -1);
    printf("secure_initialized %d\n", CRYPTO_secure_malloc_initialized());
    int r = CRYPTO_set_mem_functions(their_malloc, their_realloc, their_free);
    printf("set_mem_functions %d\n", r);
    OPENSSL_free(p);
    OPENSSL_secure_clear_free(s, 48);
    char *q = OPENSSL_malloc(32);
    printf("after_backend %d\n", backend && q ? backend(q) : -1);
    OPENSSL_free(q);
    printf("their_calls %d\n", theirs);
    return theirs != 0 && r == 1; /* their functions called on our blocks: broken */
}
