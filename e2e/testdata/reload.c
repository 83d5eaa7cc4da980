/* reload — a libcrypto (argv[1], a stand-in without -z nodelete) dlopen()ed,
 * unloaded and loaded again: the second copy starts with OpenSSL's default
 * allocator and must be hooked again. Prints the backend of a CRYPTO_malloc
 * block for each load (-1 without the library). */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    int (*backend)(const void *);
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    for (int round = 1; round <= 2; round++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            return 2;
        void *(*cmalloc)(size_t, const char *, int);
        void (*cfree)(void *, const char *, int);
        *(void **)&cmalloc = dlsym(h, "CRYPTO_malloc");
        *(void **)&cfree = dlsym(h, "CRYPTO_free");
        void *p = cmalloc(40, __FILE__, __LINE__);
        printf("%s_backend %d\n", round == 1 ? "first" : "second", backend && p ? backend(p) : -1);
        cfree(p, __FILE__, __LINE__);
        dlclose(h);
    }
    return 0;
}
