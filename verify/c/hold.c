/* hold — a target for the SECRETHEAP_NODUMP test: it allocates a block with
 * the library (which applies the option at initialisation), fills it and a
 * static buffer with known bytes, prints their addresses and whether it is
 * dumpable, and waits until stdin closes. */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "secretheap.h"

static unsigned char plain[64];

int main(void) {
    unsigned char *s = secretheap_malloc(64);
    if (s == NULL) {
        perror("hold: secretheap_malloc");
        return 1;
    }
    memset(s, 0xA5, 64);
    memset(plain, 0x5A, sizeof plain);
    printf("secret %p plain %p dumpable %d\n", (void *)s, (void *)plain, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    secretheap_free(s);
    return 0;
}
