/* dlsym_set — CPython's shape (ctypes): libcrypto dlopen()ed RTLD_LOCAL,
 * used, then CRYPTO_set_mem_functions found with dlsym on its handle (which
 * bypasses every interposer) and called with a real allocator (libc's,
 * counted). Argument "used": a block allocated before the call is freed
 * after it; "fresh": the call comes before libcrypto allocated anything.
 * Prints "name value" lines. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*m_fn)(size_t, const char *, int);
typedef void *(*r_fn)(void *, size_t, const char *, int);
typedef void (*f_fn)(void *, const char *, int);

static int theirs;
static void *their_malloc(size_t n, const char *f, int l) {
    (void)f, (void)l;
    theirs++;
    return malloc(n);
}
static void *their_realloc(void *p, size_t n, const char *f, int l) {
    (void)f, (void)l;
    theirs++;
    return realloc(p, n);
}
static void their_free(void *p, const char *f, int l) {
    (void)f, (void)l;
    theirs++;
    free(p);
}

int main(int argc, char **argv) {
    int used = argc > 1 && strcmp(argv[1], "used") == 0;
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return 2;
    m_fn cmalloc;
    f_fn cfree;
    int (*setmem)(m_fn, r_fn, f_fn);
    int (*backend)(const void *);
    *(void **)&cmalloc = dlsym(h, "CRYPTO_malloc");
    *(void **)&cfree = dlsym(h, "CRYPTO_free");
    *(void **)&setmem = dlsym(h, "CRYPTO_set_mem_functions");
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    if (cmalloc == NULL || cfree == NULL || setmem == NULL)
        return 2;
    char *p = used ? cmalloc(100, __FILE__, __LINE__) : NULL;
    if (p != NULL)
        memset(p, 0x5a, 100);
    printf("set_mem_functions %d\n", setmem(their_malloc, their_realloc, their_free));
    if (p != NULL)
        cfree(p, __FILE__, __LINE__);
    char *q = cmalloc(32, __FILE__, __LINE__);
    printf("after_backend %d\n", backend && q ? backend(q) : -1);
    cfree(q, __FILE__, __LINE__);
    printf("their_calls %d\n", theirs);
    return 0;
}
