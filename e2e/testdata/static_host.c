/* static_host — a program with libcrypto linked in statically that loads a
 * dynamic engine (engine.c) linked against the shared libcrypto: two
 * libcryptos in one process, as in OpenSSL's own test_evp_extra with the
 * dasync engine. Prints "name value" lines; a block the engine allocated is
 * freed by the host's libcrypto (libc free), which must not abort. */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    ENGINE *e = ENGINE_by_id("dynamic");
    if (e == NULL || !ENGINE_ctrl_cmd_string(e, "SO_PATH", argv[1], 0) || !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0)) {
        ERR_print_errors_fp(stderr);
        return 2;
    }
    printf("engine %s\n", ENGINE_get_id(e));
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
    void *(*block)(size_t) = NULL;
    int (*backend)(const void *) = NULL;
    if (h != NULL)
        *(void **)&block = dlsym(h, "engine_block");
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    if (block == NULL)
        return 2;
    unsigned char *p = block(64);
    if (p == NULL)
        return 2;
    memset(p, 0x5a, 64);
    printf("engine_block_backend %d\n", backend ? backend(p) : -1);
    OPENSSL_free(p); /* the host's libcrypto: libc free */
    ENGINE_free(e);
    OPENSSL_cleanup();
    printf("done 1\n");
    return 0;
}
