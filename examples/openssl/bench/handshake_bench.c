/* handshake_bench — full TLS 1.3 handshakes per second in one process
 * (ECDSA P-256 server key, X25519 key exchange, memory BIO pairs, no session
 * resumption). Run it with and without libsecretheap.so preloaded and compare
 * the rates: the CPU cost is the same, so the difference is the allocator.
 *
 *   handshake_bench [-n N] [-secs S]
 *
 * Prints "handshakes N seconds S rate R/s". With -n it runs exactly N
 * handshakes (used to measure the memory of a fixed workload).
 */
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(const char *m)
{
	fprintf(stderr, "handshake_bench: %s\n", m);
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A throwaway self-signed ECDSA P-256 certificate, made in memory. */
static void make_cert(EVP_PKEY **key, X509 **cert)
{
	*key = EVP_EC_gen("P-256");
	*cert = X509_new();
	if (*key == NULL || *cert == NULL)
		die("key generation");
	X509_set_version(*cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(*cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(*cert), 0);
	X509_gmtime_adj(X509_getm_notAfter(*cert), 3600);
	X509_set_pubkey(*cert, *key);
	X509_NAME *n = X509_get_subject_name(*cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(*cert, n);
	if (X509_sign(*cert, *key, EVP_sha256()) == 0)
		die("X509_sign");
}

static int handshake(SSL_CTX *sctx, SSL_CTX *cctx)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *sb, *cb;
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
	int ok = sdone && cdone && SSL_version(c) == TLS1_3_VERSION;
	SSL_free(s);
	SSL_free(c);
	return ok;
}

int main(int argc, char **argv)
{
	long n = 0;
	double secs = 2.0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "-n"))
			n = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "-secs"))
			secs = atof(argv[i + 1]);
	}
	EVP_PKEY *key;
	X509 *cert;
	make_cert(&key, &cert);
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
	if (sctx == NULL || cctx == NULL)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
	SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
	SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(sctx, 0);
	if (SSL_CTX_use_certificate(sctx, cert) != 1 || SSL_CTX_use_PrivateKey(sctx, key) != 1)
		die("use cert/key");
	for (int i = 0; i < 20 && n == 0; i++) /* warm up */
		if (!handshake(sctx, cctx))
			die("handshake failed");
	long done = 0;
	double t0 = now(), t;
	do {
		if (!handshake(sctx, cctx))
			die("handshake failed");
		done++;
		t = now() - t0;
	} while (n > 0 ? done < n : t < secs);
	printf("handshakes %ld seconds %.3f rate %.1f/s\n", done, t, (double)done / t);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	X509_free(cert);
	EVP_PKEY_free(key);
	return 0;
}
