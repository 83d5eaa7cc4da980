/* peek PID ADDR — an attacker with the target's uid: opens /proc/PID/mem and
 * reads 8 bytes at ADDR, then attaches with ptrace and peeks the same word.
 * Prints one line: open=<errno name|ok> read=<hex|errno> attach=<..> peek=<..>. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EPERM:
        return "EPERM";
    case EACCES:
        return "EACCES";
    case EIO:
        return "EIO";
    case EFAULT:
        return "EFAULT";
    case ESRCH:
        return "ESRCH";
    default:
        return strerror(e);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: peek PID ADDR\n");
        return 2;
    }
    pid_t pid = (pid_t)atoi(argv[1]);
    uintptr_t addr = (uintptr_t)strtoull(argv[2], NULL, 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);

    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("open=%s read=- ", ename(errno));
    } else {
        uint64_t w = 0;
        ssize_t n = pread(fd, &w, sizeof w, (off_t)addr);
        if (n == (ssize_t)sizeof w)
            printf("open=ok read=%016" PRIx64 " ", w);
        else
            printf("open=ok read=%s ", n < 0 ? ename(errno) : "short");
        close(fd);
    }

    if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) {
        printf("attach=%s peek=-\n", ename(errno));
        return 0;
    }
    int st;
    waitpid(pid, &st, 0);
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, pid, (void *)addr, NULL);
    if (errno != 0)
        printf("attach=ok peek=%s\n", ename(errno));
    else
        printf("attach=ok peek=%016lx\n", (unsigned long)w);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
    return 0;
}
