/* foreign_free — a program that frees an OPENSSL_malloc block with libc's
 * free and reallocs another with libc's realloc: code that does not know
 * where the block came from (as a static libcrypto freeing what a dlopen'ed
 * one allocated). Under the library (mode all) the blocks are secret
 * memory; glibc would abort ("free(): invalid pointer"). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *p = OPENSSL_malloc(64);
    char *q = OPENSSL_malloc(32);
    if (p == NULL || q == NULL)
        return 2;
    memset(p, 0x5a, 64);
    strcpy(q, "kept");
    free(p);
    q = realloc(q, 4096);
    printf("realloc_kept %d\n", q != NULL && strcmp(q, "kept") == 0);
    free(q);
    printf("done 1\n");
    return 0;
}
