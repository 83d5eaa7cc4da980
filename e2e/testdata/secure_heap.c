/* secure_heap — a program that turns on OpenSSL's own secure heap
 * (CRYPTO_secure_malloc_init, as some servers do) and uses the secure-heap
 * API and its life cycle (init, done, init again). Under the library (modes all and secure) these calls are served from
 * secret memory instead and OpenSSL's arena is never built. Prints
 * "name value" lines; exit 0 when every call behaved as the API promises. */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    int (*backend)(const void *);
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    int init = CRYPTO_secure_malloc_init(64 * 1024, 16);
    printf("init %d\n", init);
    printf("initialized %d\n", CRYPTO_secure_malloc_initialized());
    unsigned char *p = OPENSSL_secure_zalloc(100);
    if (p == NULL)
        return 1;
    int zero = 1;
    for (int i = 0; i < 100; i++)
        zero &= p[i] == 0;
    memset(p, 0x42, 100);
    printf("zeroed %d\n", zero);
    printf("backend %d\n", backend ? backend(p) : -1);
    printf("actual_size_ok %d\n", CRYPTO_secure_actual_size(p) >= 100);
    printf("used_ok %d\n", CRYPTO_secure_used() >= 100);
    printf("allocated %d\n", CRYPTO_secure_allocated(p));
    printf("done_while_live %d\n", CRYPTO_secure_malloc_done());
    OPENSSL_secure_clear_free(p, 100);
    printf("used_after_free %zu\n", CRYPTO_secure_used());
    printf("done %d\n", CRYPTO_secure_malloc_done());
    printf("initialized_after_done %d\n", CRYPTO_secure_malloc_initialized());
    printf("init_again %d\n", CRYPTO_secure_malloc_init(64 * 1024, 16) >= 1);
    printf("initialized_again %d\n", CRYPTO_secure_malloc_initialized());
    CRYPTO_secure_malloc_done();
    return init >= 1 && zero ? 0 : 1;
}
