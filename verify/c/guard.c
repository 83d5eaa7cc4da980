/* guard MODE — overflows for the guard-page death tests. Each mode writes
 * one byte (or a memset) relative to a block; the "-last" modes are the
 * controls and write the last byte that is still inside, which must not
 * fault. Exit 0 if nothing faulted.
 *   chunk-end   a small block's chunk: the first byte past the chunk (2 MiB)
 *   chunk-last  the last byte of that chunk
 *   large-end   a region of its own (1.5 MiB): memset over its end by 1 byte
 *   large-last  memset of exactly its usable size
 *   large-before the byte before the region */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "secretheap.h"

#define CHUNK ((uintptr_t)2 << 20)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: guard MODE\n");
        return 2;
    }
    const char *m = argv[1];
    if (!strncmp(m, "chunk-", 6)) {
        unsigned char *p = secretheap_malloc(64);
        if (p == NULL || secretheap_backend(p) == SECRETHEAP_BACKEND_NONE) {
            fprintf(stderr, "guard: no secret block\n");
            return 1;
        }
        uintptr_t end = ((uintptr_t)p & ~(CHUNK - 1)) + CHUNK;
        volatile unsigned char *t = (volatile unsigned char *)(end - (strcmp(m, "chunk-last") == 0));
        fprintf(stderr, "guard: block %p, writing %p\n", (void *)p, (void *)t);
        *t = 0x41;
        return 0;
    }
    size_t n = (size_t)1536 << 10;
    unsigned char *p = secretheap_malloc(n);
    if (p == NULL) {
        fprintf(stderr, "guard: no large block\n");
        return 1;
    }
    size_t u = secretheap_usable_size(p);
    fprintf(stderr, "guard: region %p, usable %zu\n", (void *)p, u);
    if (!strcmp(m, "large-end"))
        memset(p, 0x41, u + 1);
    else if (!strcmp(m, "large-last"))
        memset(p, 0x41, u);
    else if (!strcmp(m, "large-before"))
        *(volatile unsigned char *)(p - 1) = 0x41;
    else {
        fprintf(stderr, "guard: unknown mode %s\n", m);
        return 2;
    }
    secretheap_free(p);
    return 0;
}
