/*
 * staticssl.c — a program with OpenSSL linked in statically and its symbols
 * exported (-Wl,--export-dynamic), as node is built: the library hooks its
 * CRYPTO_set_mem_functions through the global scope, and inspect must say
 * OpenSSL lives in the program itself. Prints "ready", waits for stdin to
 * close. Built by hostile_test.go.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new(); /* an allocation through the hooks */
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    EVP_MD_CTX_free(ctx);
    return 0;
}
