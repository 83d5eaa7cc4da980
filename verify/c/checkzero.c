/* checkzero — a write after free, then allocations until the freed block
 * is handed out again. With SECRETHEAP_CHECK_ZERO=1 the library must abort
 * naming the write; without, the dirty block comes back (exit 3), which is
 * what the check exists to catch. Exit 4 if the block never came back. */
#include <stdio.h>

#include "secretheap.h"

int main(void) {
    unsigned char *p = secretheap_malloc(48);
    if (p == NULL)
        return 1;
    secretheap_free(p);
    ((volatile unsigned char *)p)[5] = 0x77; /* the bug under test */
    for (int i = 0; i < 4096; i++) {
        unsigned char *q = secretheap_malloc(48);
        if (q == p) {
            printf("block %p handed out again, byte 5 = %#x\n", (void *)q, q[5]);
            return q[5] ? 3 : 0;
        }
    }
    printf("block %p not handed out again\n", (void *)p);
    return 4;
}
