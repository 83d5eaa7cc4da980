/*
 * probe.c — which memfd_secret accounting model the running kernel uses,
 * measured without the library and without reading the version string.
 * vmtest prints it next to each kernel so that the table says what the
 * library was up against.
 *
 * As uid 65534 with RLIMIT_MEMLOCK = 64 KiB it maps a 1 MiB secret file:
 *   old model  mmap is charged for the whole length: EAGAIN/ENOMEM at mmap
 *   new model  mmap succeeds; each page is charged at its first touch, and
 *              the touch past the limit is SIGBUS (page 16 of 256)
 * Output, one line: "memfd_secret missing (ENOSYS)", "model old (mmap: …)",
 * "model new (SIGBUS at page N of 256)" or "model unknown (…)". Exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <grp.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

#define LEN (1u << 20)

static sigjmp_buf env;
static void on_bus(int sig) {
    (void)sig;
    siglongjmp(env, 1);
}

int main(void) {
    struct rlimit rl = {64 << 10, 64 << 10};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
        return perror("probe: setrlimit"), 1;
    if (geteuid() == 0 &&
        (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0))
        return perror("probe: drop to uid 65534"), 1;
    int fd = (int)syscall(SYS_memfd_secret, 0);
    if (fd < 0) {
        if (errno == ENOSYS)
            printf("memfd_secret missing (ENOSYS)\n");
        else
            printf("memfd_secret fails: %s\n", strerror(errno));
        return 0;
    }
    if (ftruncate(fd, LEN) != 0)
        return perror("probe: ftruncate"), 1;
    volatile unsigned char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        printf("model old (mmap of 1 MiB under a 64 KiB limit: %s)\n", strerror(errno));
        return 0;
    }
    struct sigaction sa = {.sa_handler = on_bus};
    sigaction(SIGBUS, &sa, NULL);
    volatile unsigned page = 0;
    if (sigsetjmp(env, 1) == 0) {
        for (page = 0; page < LEN / 4096; page++)
            p[page * 4096] = 1;
        printf("model unknown (mmap and every touch of 1 MiB succeeded under a 64 KiB limit)\n");
    } else {
        printf("model new (SIGBUS at page %u of %u under a 64 KiB limit)\n", page, LEN / 4096);
    }
    return 0;
}
