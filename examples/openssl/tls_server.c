/* tls_server — a TLS 1.3 server in the pre-forking pattern of nginx and
 * Apache: the parent loads the private key and certificate once, binds
 * 127.0.0.1, then forks workers that accept and handshake on the shared
 * listening socket. Run it with libsecretheap.so preloaded and the key, the
 * DRBG state and every TLS secret live in memfd_secret memory; each worker
 * gets private copies of those pages at fork (SECRETHEAP_FORK=copy).
 *
 *   tls_server -cert C -key K [-port P] [-workers W] [-selftest N]
 *
 * It prints "port P" on stdout once it listens (P is ephemeral with -port 0).
 * Each worker answers one line per connection with "worker PID: LINE".
 * -selftest N: the parent also acts as a client and makes N full handshakes
 * against its own workers, then shuts down; without it the server runs until
 * SIGTERM/SIGINT. At shutdown every process checks that a canary block it
 * allocated with OPENSSL_malloc still holds its own pattern (a child's writes
 * never reach the parent) and that the private key still matches the
 * certificate; the parent exits 0 only if it and every worker passed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define CANARY_LEN 4096

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void die(const char *what) {
    fprintf(stderr, "tls_server: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* canary_fill writes a pattern that depends on who writes it, so a block
 * shared by mistake between parent and child shows up as a mismatch. */
static void canary_fill(unsigned char *c, unsigned seed) {
    for (size_t i = 0; i < CANARY_LEN; i++)
        c[i] = (unsigned char)(seed * 131u + i * 7u);
}

static int canary_ok(const unsigned char *c, unsigned seed) {
    for (size_t i = 0; i < CANARY_LEN; i++)
        if (c[i] != (unsigned char)(seed * 131u + i * 7u))
            return 0;
    return 1;
}

static int serve_one(SSL_CTX *ctx, int fd) {
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return 0;
    SSL_set_fd(ssl, fd);
    int ok = 0;
    if (SSL_accept(ssl) == 1) {
        char line[256];
        int n = SSL_read(ssl, line, sizeof line - 1);
        if (n > 0) {
            line[n] = 0;
            char out[320];
            int m = snprintf(out, sizeof out, "worker %d: %s", (int)getpid(), line);
            ok = SSL_write(ssl, out, m) == m;
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    return ok;
}

/* worker accepts until told to stop. Returns the exit status. */
static int worker(SSL_CTX *ctx, int lfd, unsigned seed) {
    unsigned char *canary = OPENSSL_malloc(CANARY_LEN);
    if (canary == NULL)
        return 1;
    canary_fill(canary, seed);
    unsigned long served = 0, failed = 0;
    while (!stop) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            perror("tls_server: accept");
            failed++;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (serve_one(ctx, fd))
            served++;
        else
            failed++;
        close(fd);
    }
    int ok = canary_ok(canary, seed) && SSL_CTX_check_private_key(ctx) == 1;
    OPENSSL_free(canary);
    fprintf(stderr, "tls_server: worker %d served %lu, failed %lu, verify %s\n", (int)getpid(), served, failed,
            ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

/* selftest runs n full handshakes against our own port (no resumption). */
static int selftest(int port, int n) {
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (cctx == NULL)
        return 0;
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    int good = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* A dead worker must fail the self-test, not hang it. */
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        SSL *ssl = SSL_new(cctx);
        SSL_set_fd(ssl, fd);
        char msg[64], buf[256];
        int m = snprintf(msg, sizeof msg, "hello %d\n", i);
        if (SSL_connect(ssl) == 1 && SSL_write(ssl, msg, m) == m) {
            int r = SSL_read(ssl, buf, sizeof buf - 1);
            if (r > 0) {
                buf[r] = 0;
                if (strstr(buf, msg) != NULL && SSL_version(ssl) == TLS1_3_VERSION)
                    good++;
            }
        }
        SSL_free(ssl);
        close(fd);
        if (good != i + 1)
            break; /* the first failure decides; the rest would time out too */
    }
    SSL_CTX_free(cctx);
    fprintf(stderr, "tls_server: parent selftest %d/%d handshakes ok\n", good, n);
    return good == n;
}

int main(int argc, char **argv) {
    const char *cert = NULL, *key = NULL;
    int port = 0, nworkers = 2, nself = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-cert"))
            cert = argv[i + 1];
        else if (!strcmp(argv[i], "-key"))
            key = argv[i + 1];
        else if (!strcmp(argv[i], "-port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-workers"))
            nworkers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-selftest"))
            nself = atoi(argv[i + 1]);
        else
            break;
    }
    if (cert == NULL || key == NULL || nworkers < 1 || nworkers > MAX_WORKERS) {
        fprintf(stderr,
                "usage: tls_server -cert C -key K [-port P] [-workers 1..%d] "
                "[-selftest N]\n",
                MAX_WORKERS);
        return 2;
    }

    /* The key is loaded once, in the parent, before fork. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        die("cannot load certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("cannot load private key");
    if (SSL_CTX_check_private_key(ctx) != 1)
        die("key does not match certificate");

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("tls_server: listen");
        return 1;
    }
    port = ntohs(a.sin_port);

    unsigned char *canary = OPENSSL_malloc(CANARY_LEN);
    if (canary == NULL)
        die("OPENSSL_malloc");
    canary_fill(canary, 1);

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: accept returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pid_t kids[MAX_WORKERS];
    for (int i = 0; i < nworkers; i++) {
        fflush(stdout);
        kids[i] = fork();
        if (kids[i] < 0)
            die("fork");
        if (kids[i] == 0) {
            /* Workers end with the parent, whatever kills it. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() == 1)
                _exit(1);
            /* The child scribbles over its copy of the parent's canary:
             * with shared pages the parent would see it. */
            memset(canary, 0xA5, CANARY_LEN);
            exit(worker(ctx, lfd, 100u + (unsigned)i)); /* exit: at-exit reports run */
        }
    }
    printf("port %d\n", port);
    fflush(stdout);

    int ok = 1;
    if (nself >= 0) {
        ok = selftest(port, nself);
        stop = 1;
    }
    while (!stop)
        pause();
    for (int i = 0; i < nworkers; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < nworkers; i++) {
        int st;
        while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "tls_server: worker %d %s %d\n", (int)kids[i],
                    WIFSIGNALED(st) ? "killed by signal" : "exited with",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            ok = 0;
        }
    }
    if (!canary_ok(canary, 1) || SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "tls_server: parent verify FAILED\n");
        ok = 0;
    }
    OPENSSL_free(canary);
    close(lfd);
    SSL_CTX_free(ctx);
    fprintf(stderr, "tls_server: %s\n", ok ? "all verified" : "FAILED");
    return ok ? 0 : 1;
}
