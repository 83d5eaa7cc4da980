/*
 * tlsbench — full TLS 1.3 handshakes per second (ECDSA P-256 server key,
 * default key exchange, no session resumption), driven by cmd/benchreport.
 *
 *   tlsbench inproc [-s SECS] [-n N] [--count]
 *       client and server in this process over a memory BIO pair. Run it with
 *       and without LD_PRELOAD=libsecretheap.so: the cryptography is the same,
 *       so the difference is the allocator. --count (without the library)
 *       counts OpenSSL's live bytes through CRYPTO_set_mem_functions and
 *       reports their peak (the denominator of committed ÷ live).
 *   tlsbench gencert DIR
 *       writes DIR/key.pem and DIR/cert.pem (self-signed, P-256) for a server.
 *   tlsbench client -p PORT -ca CERT [-s SECS] [-j THREADS] [-n MAX] [-w WARM]
 *       full handshakes over TCP to 127.0.0.1:PORT (examples/openssl's
 *       tls_server: send one line, read the answer, close), for SECS seconds
 *       or MAX handshakes, whichever comes first (each socket operation times
 *       out after 5 s, and more than 20 failures end the run), after WARM
 *       seconds (default 0.5) of uncounted warm-up handshakes.
 *
 * Output: one JSON line. Before timing, the first handshake is checked: TLS
 * 1.3, not resumed, the server's certificate verified and its key EC P-256;
 * under LD_PRELOAD, an OPENSSL_malloc block must be served by the library
 * (its hook is active), else the run aborts with status 3.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "secretheap.h"

__attribute__((noreturn)) static void die(const char *m) {
    fprintf(stderr, "tlsbench: %s\n", m);
    ERR_print_errors_fp(stderr);
    exit(2);
}

__attribute__((noreturn)) static void check_failed(const char *m) {
    fprintf(stderr, "tlsbench: self-check failed: %s\n", m);
    exit(3);
}

/* cpu: this process's CPU time (all threads, kernel included). */
static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- counting allocator (--count) ------------------------------------- */

/* Each block carries its requested size in a 16-byte header. */
static atomic_size_t live_bytes, peak_bytes;

static void count_add(size_t n) {
    size_t l = atomic_fetch_add(&live_bytes, n) + n;
    size_t p = atomic_load(&peak_bytes);
    while (l > p && !atomic_compare_exchange_weak(&peak_bytes, &p, l)) {
    }
}

static void *count_malloc(size_t n, const char *f, int l) {
    (void)f, (void)l;
    unsigned char *p = malloc(n + 16);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    count_add(n);
    return p + 16;
}

static void count_free(void *q, const char *f, int l) {
    (void)f, (void)l;
    if (q == NULL)
        return;
    unsigned char *p = (unsigned char *)q - 16;
    size_t n;
    memcpy(&n, p, sizeof n);
    atomic_fetch_sub(&live_bytes, n);
    free(p);
}

static void *count_realloc(void *q, size_t n, const char *f, int l) {
    if (q == NULL)
        return count_malloc(n, f, l);
    if (n == 0) {
        count_free(q, f, l);
        return NULL;
    }
    unsigned char *p = (unsigned char *)q - 16;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *np = realloc(p, n + 16);
    if (np == NULL)
        return NULL;
    memcpy(np, &n, sizeof n);
    atomic_fetch_sub(&live_bytes, old);
    count_add(n);
    return np + 16;
}

/* ---- the library, if preloaded ---------------------------------------- */

static int (*sh_backend)(const void *);
static int (*sh_stats)(struct secretheap_stats *, size_t);

/* check_hook: if libsecretheap.so is in the process, OpenSSL's allocations
 * must go to it. Returns 1 if preloaded (and hooked), 0 if not loaded. */
static int check_hook(void) {
    sh_backend = (int (*)(const void *))dlsym(RTLD_DEFAULT, "secretheap_backend");
    sh_stats = (int (*)(struct secretheap_stats *, size_t))dlsym(RTLD_DEFAULT, "secretheap_stats");
    if (sh_backend == NULL)
        return 0;
    void *p = OPENSSL_malloc(32);
    int b = sh_backend(p);
    OPENSSL_free(p);
    if (b != SECRETHEAP_BACKEND_SECRET)
        check_failed("libsecretheap.so is loaded but OPENSSL_malloc is not served from secret memory");
    return 1;
}

/* ---- key and certificate ---------------------------------------------- */

static void make_cert(EVP_PKEY **key, X509 **cert) {
    *key = EVP_EC_gen("P-256");
    *cert = X509_new();
    if (*key == NULL || *cert == NULL)
        die("key generation");
    X509_set_version(*cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(*cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(*cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(*cert), 86400);
    X509_set_pubkey(*cert, *key);
    X509_NAME *n = X509_get_subject_name(*cert);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(*cert, n);
    if (X509_sign(*cert, *key, EVP_sha256()) == 0)
        die("X509_sign");
}

static SSL_CTX *client_ctx(X509 *ca) {
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (c == NULL)
        die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    /* The client really verifies the server (one ECDSA verification). */
    if (X509_STORE_add_cert(SSL_CTX_get_cert_store(c), ca) != 1)
        die("trust store");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    return c;
}

/* check_session: the claims of the benchmark, on a finished client SSL. */
static void check_session(SSL *c) {
    if (SSL_version(c) != TLS1_3_VERSION)
        check_failed("not TLS 1.3");
    if (SSL_session_reused(c))
        check_failed("session was resumed");
    if (SSL_get_verify_result(c) != X509_V_OK)
        check_failed("server certificate not verified");
    X509 *peer = SSL_get1_peer_certificate(c);
    if (peer == NULL)
        check_failed("no server certificate");
    EVP_PKEY *pk = X509_get0_pubkey(peer);
    char group[64] = "";
    size_t gl = 0;
    if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC ||
        !EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof group, &gl) || strcmp(group, "prime256v1") != 0)
        check_failed("server key is not ECDSA P-256");
    X509_free(peer);
}

/* ---- in-process handshakes -------------------------------------------- */

static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, int check) {
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb = NULL, *cb = NULL;
    if (s == NULL || c == NULL || !BIO_new_bio_pair(&sb, 0, &cb, 0))
        die("SSL_new");
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int sdone = 0, cdone = 0;
    for (int round = 0; round < 100 && !(sdone && cdone); round++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                break;
        }
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                break;
        }
    }
    int ok = sdone && cdone;
    if (ok && check)
        check_session(c);
    SSL_free(s);
    SSL_free(c);
    return ok;
}

static void cmd_inproc(int argc, char **argv) {
    double secs = 2.0;
    long n = 0;
    int count = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atol(argv[++i]);
        else if (!strcmp(argv[i], "--count"))
            count = 1;
        else
            die("inproc: unknown argument");
    }
    /* Before OpenSSL's first allocation, or it refuses. */
    if (count && !CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free))
        check_failed("--count: CRYPTO_set_mem_functions refused");
    int preload = check_hook();
    if (count && preload)
        check_failed("--count cannot run under the library");

    EVP_PKEY *key;
    X509 *cert;
    make_cert(&key, &cert);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = client_ctx(cert);
    if (sctx == NULL)
        die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(sctx, 0);
    if (SSL_CTX_use_certificate(sctx, cert) != 1 || SSL_CTX_use_PrivateKey(sctx, key) != 1)
        die("use cert/key");

    if (!handshake(sctx, cctx, 1))
        die("handshake failed");
    for (int i = 0; i < 20 && n == 0; i++) /* warm up */
        if (!handshake(sctx, cctx, 0))
            die("handshake failed");
    long done = 0;
    double t0 = now(), c0 = cpu(), t;
    do {
        if (!handshake(sctx, cctx, 0))
            die("handshake failed");
        done++;
        t = now() - t0;
    } while (n > 0 ? done < n : t < secs);
    double c = cpu() - c0;

    /* rate: per wall second; cpu_rate: per CPU second of this process (the
     * machine is shared: other processes' time is left out). */
    printf("{\"kind\":\"tls\",\"mode\":\"inproc\",\"preload\":%s,\"handshakes\":%ld,\"secs\":%.4f,"
           "\"rate\":%.2f,\"cpu_rate\":%.2f",
           preload ? "true" : "false", done, t, (double)done / t, (double)done / c);
    if (count)
        printf(",\"peak_live_bytes\":%zu", atomic_load(&peak_bytes));
    struct secretheap_stats st;
    if (preload && sh_stats != NULL && sh_stats(&st, sizeof st) == 0)
        printf(",\"bytes_committed\":%" PRIu64 ",\"bytes_mapped\":%" PRIu64 ",\"requested_bytes\":%" PRIu64
               ",\"fallbacks\":%" PRIu64,
               st.committed_bytes, st.bytes_mapped, st.requested_bytes, st.fallbacks);
    printf("}\n");
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(cert);
    EVP_PKEY_free(key);
}

/* ---- certificate files for a server ----------------------------------- */

static void cmd_gencert(const char *dir) {
    EVP_PKEY *key;
    X509 *cert;
    make_cert(&key, &cert);
    char path[4096];
    snprintf(path, sizeof path, "%s/key.pem", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
        die("write key");
    fclose(f);
    snprintf(path, sizeof path, "%s/cert.pem", dir);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, cert))
        die("write cert");
    fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
}

/* ---- TCP client for a forking server ---------------------------------- */

struct client {
    pthread_t tid;
    SSL_CTX *ctx;
    int port;
    double deadline;
    long max; /* stop after this many handshakes */
    long done, failed;
    long slow; /* connections that took over 200 ms (a stalled peer) */
    int check;
};

static int one_connection(struct client *cl) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0}; /* bounded: a stuck server fails the run, not hangs it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        SSL *s = SSL_new(cl->ctx);
        SSL_set_fd(s, fd);
        if (SSL_connect(s) == 1) {
            if (cl->check)
                check_session(s);
            char buf[256];
            if (SSL_write(s, "bench\n", 6) == 6 && SSL_read(s, buf, sizeof buf) > 0)
                ok = 1;
        }
        SSL_free(s);
    }
    close(fd);
    return ok;
}

static void *client_main(void *arg) {
    struct client *cl = arg;
    while (now() < cl->deadline && cl->done < cl->max) {
        double t = now();
        int ok = one_connection(cl);
        if (now() - t > 0.2)
            cl->slow++;
        if (ok)
            cl->done++;
        else if (++cl->failed > 20)
            break;
    }
    return NULL;
}

static void cmd_client(int argc, char **argv) {
    int port = 0, threads = 1;
    long max = 1000000;
    double secs = 2.0, warm = 0.5;
    const char *ca = NULL;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-p"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-ca"))
            ca = argv[i + 1];
        else if (!strcmp(argv[i], "-s"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-j"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n"))
            max = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-w"))
            warm = atof(argv[i + 1]);
        else
            die("client: unknown argument");
    }
    if (port <= 0 || ca == NULL || threads < 1 || threads > 64)
        die("client: -p PORT -ca CERT needed");
    FILE *f = fopen(ca, "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (cert == NULL)
        die("read -ca certificate");
    SSL_CTX *ctx = client_ctx(cert);
    struct client first = {.ctx = ctx, .port = port, .check = 1};
    if (!one_connection(&first))
        die("first connection failed");
    struct client cl[64];
    /* Warm-up, not counted: every worker has served connections (the
     * library's per-worker slabs are committed) before timing starts. */
    for (int i = 0; i < threads && warm > 0; i++) {
        cl[i] = (struct client){.ctx = ctx, .port = port, .deadline = now() + warm, .max = max};
        pthread_create(&cl[i].tid, NULL, client_main, &cl[i]);
    }
    for (int i = 0; i < threads && warm > 0; i++) {
        pthread_join(cl[i].tid, NULL);
        if (cl[i].failed > 20)
            die("warm-up failed");
    }
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        cl[i] = (struct client){.ctx = ctx, .port = port, .deadline = t0 + secs, .max = (max + threads - 1) / threads};
        pthread_create(&cl[i].tid, NULL, client_main, &cl[i]);
    }
    long done = 0, failed = 0, slow = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(cl[i].tid, NULL);
        done += cl[i].done;
        failed += cl[i].failed;
        slow += cl[i].slow;
    }
    double t = now() - t0;
    printf("{\"kind\":\"tls\",\"mode\":\"tcp\",\"handshakes\":%ld,\"failed\":%ld,\"slow\":%ld,"
           "\"secs\":%.4f,\"rate\":%.2f,\"threads\":%d}\n",
           done, failed, slow, t, (double)done / t, threads);
    SSL_CTX_free(ctx);
    X509_free(cert);
    if (failed > 20)
        exit(4);
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: tlsbench inproc|gencert|client ...");
    if (!strcmp(argv[1], "inproc"))
        cmd_inproc(argc - 2, argv + 2);
    else if (!strcmp(argv[1], "gencert") && argc == 3)
        cmd_gencert(argv[2]);
    else if (!strcmp(argv[1], "client"))
        cmd_client(argc - 2, argv + 2);
    else
        die("usage: tlsbench inproc|gencert|client ...");
    return 0;
}
