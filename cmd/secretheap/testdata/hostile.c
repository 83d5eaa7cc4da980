/*
 * hostile.c — targets for the CLI's hostile-process tests (hostile_test.go),
 * built by the test with cc. Each mode sets itself up, prints "ready" and
 * waits for its stdin to close.
 *
 *   hostile maps FILE N   maps FILE N times, alternately read-only and
 *                         read-write, so no two mappings merge (FILE's long
 *                         name makes /proc/PID/smaps huge)
 *   hostile big MIB NEEDLE  maps MIB MiB of anonymous memory (untouched, so
 *                         it costs no RAM) and writes NEEDLE, upper-cased, at
 *                         its very end
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void wait_stdin(void) {
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "maps") == 0) {
        int fd = open(argv[2], O_RDWR);
        if (fd < 0) {
            perror(argv[2]);
            return 1;
        }
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) {
            int prot = (i & 1) ? PROT_READ | PROT_WRITE : PROT_READ;
            if (mmap(NULL, 4096, prot, MAP_SHARED, fd, 0) == MAP_FAILED) {
                fprintf(stderr, "mmap %ld: %m\n", i);
                return 1;
            }
        }
        wait_stdin();
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "big") == 0) {
        size_t size = (size_t)atol(argv[2]) << 20, len = strlen(argv[3]);
        char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        /* Upper-cased on the way: the needle the test looks for is then
         * in the mapping only, not in argv. */
        for (size_t i = 0; i < len; i++)
            p[size - len + i] = (char)toupper((unsigned char)argv[3][i]);
        wait_stdin();
        return 0;
    }
    fprintf(stderr, "usage: hostile maps FILE N | big MIB NEEDLE\n");
    return 2;
}
