/* dlopen_crypto — what Python's ssl module does: the program does not link
 * libcrypto; it dlopen()s it after start (RTLD_LOCAL), then allocates through
 * it. Given a plugin (a .so exporting plugin_run, linked with libcrypto) it
 * dlopen()s that and runs it instead, which is Python's exact shape; given
 * libcrypto itself it calls libcrypto's own definitions through dlsym on the
 * handle, which bypasses every interposer (the hardest case for us). Prints, for a CRYPTO_malloc block and a
 * CRYPTO_secure_malloc block, secretheap_backend() of the pointer (-1 when libsecretheap.so is not loaded), and the
 * result of a later CRYPTO_set_mem_functions call. Exit status 0 when every call succeeded. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *(*m_fn)(size_t, const char *, int);
typedef void *(*r_fn)(void *, size_t, const char *, int);
typedef void (*f_fn)(void *, const char *, int);

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

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "libcrypto.so.3";
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen %s: %s\n", name, dlerror());
        return 1;
    }
    int (*plugin)(void);
    *(void **)&plugin = dlsym(h, "plugin_run");
    if (plugin != NULL)
        return plugin();
    m_fn cmalloc, csecure;
    void (*cfree)(void *, const char *, int), (*csfree)(void *, const char *, int);
    int (*setmem)(m_fn, r_fn, f_fn);
    int (*backend)(const void *);
    *(void **)&cmalloc = dlsym(h, "CRYPTO_malloc");
    *(void **)&cfree = dlsym(h, "CRYPTO_free");
    *(void **)&csecure = dlsym(h, "CRYPTO_secure_malloc");
    *(void **)&csfree = dlsym(h, "CRYPTO_secure_free");
    *(void **)&setmem = dlsym(RTLD_DEFAULT, "CRYPTO_set_mem_functions");
    if (setmem == NULL) /* not interposed: the libcrypto's own */
        *(void **)&setmem = dlsym(h, "CRYPTO_set_mem_functions");
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    if (cmalloc == NULL || cfree == NULL || csecure == NULL || csfree == NULL || setmem == NULL) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    char *p = cmalloc(100, __FILE__, __LINE__);
    char *s = csecure(48, __FILE__, __LINE__);
    if (p == NULL || s == NULL)
        return 1;
    memset(p, 0x5a, 100);
    memset(s, 0x5b, 48);
    printf("malloc_backend %d\n", backend ? backend(p) : -1);
    printf("secure_backend %d\n", backend ? backend(s) : -1);
    /* A later caller tries to replace the allocator: OpenSSL would accept
     * (customisation stays allowed once custom functions are in), and then
     * free our blocks with their_free. */
    int r = setmem(their_malloc, their_realloc, their_free);
    printf("set_mem_functions %d\n", r);
    if (r == 1 && backend != NULL) {
        cfree(p, __FILE__, __LINE__); /* must not reach their_free */
        p = NULL;
    }
    csfree(s, __FILE__, __LINE__);
    char *q = cmalloc(32, __FILE__, __LINE__);
    printf("after_backend %d\n", backend && q ? backend(q) : -1);
    printf("their_calls %d\n", theirs);
    if (q != NULL)
        cfree(q, __FILE__, __LINE__);
    if (p != NULL)
        cfree(p, __FILE__, __LINE__);
    return 0;
}
