/* report — a program linked against a fake libcrypto (fakecrypto.c); the
 * preloaded library's constructor hooks and probes it before main runs. */
#include <stdio.h>

int main(void) {
    puts("ok");
    return 0;
}
