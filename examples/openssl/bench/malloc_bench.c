/* malloc_bench — alloc/free pairs through OPENSSL_malloc and through glibc
 * malloc, side by side in one run, with 1..T threads each doing their own
 * pairs. Preload libsecretheap.so and OPENSSL_malloc goes to secret memory
 * while malloc stays glibc's, so the ratio is read off one run.
 *
 *   malloc_bench [-threads T] [-iters N] [-reps R]
 *
 * Each case runs R times, glibc and OPENSSL_malloc interleaved, and the
 * fastest run is reported: on a shared machine the minimum is the estimate
 * least disturbed by other load.
 * Output, one line per case: "<api> size <B> threads <T> ns/pair <x>", and a
 * churn case: 4,096 live blocks of 16–2,048 B, each step frees one at random
 * and allocates a new one of random size ("ns/op" per free+alloc).
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long iters = 2000000;
static int reps = 5;

struct job {
	int api; /* 0 glibc, 1 OPENSSL_malloc */
	size_t size;
	int churn;
	double ns;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline void *xalloc(int api, size_t n)
{
	void *p = api ? OPENSSL_malloc(n) : malloc(n);
	if (p == NULL) {
		fprintf(stderr, "malloc_bench: allocation failed\n");
		exit(1);
	}
	return p;
}

static inline void xfree(int api, void *p)
{
	if (api)
		OPENSSL_free(p);
	else
		free(p);
}

static void *run(void *arg)
{
	struct job *j = arg;
	if (j->churn) {
		enum { LIVE = 4096 };
		void **live = calloc(LIVE, sizeof *live);
		unsigned x = 12345u;
		for (int i = 0; i < LIVE; i++) {
			x = x * 1103515245u + 12345u;
			live[i] = xalloc(j->api, 16 + (x >> 8) % 2033);
		}
		long n = iters / 2;
		double t0 = now();
		for (long i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			unsigned k = (x >> 4) % LIVE;
			xfree(j->api, live[k]);
			live[k] = xalloc(j->api, 16 + (x >> 12) % 2033);
			*(volatile char *)live[k] = 1;
		}
		j->ns = (now() - t0) / (double)n;
		for (int i = 0; i < LIVE; i++)
			xfree(j->api, live[i]);
		free(live);
		return NULL;
	}
	long n = j->size >= 4096 ? iters / 4 : iters;
	for (long i = 0; i < n / 10; i++) /* warm up: magazines, slabs */
		xfree(j->api, xalloc(j->api, j->size));
	double t0 = now();
	for (long i = 0; i < n; i++) {
		char *p = xalloc(j->api, j->size);
		p[0] = (char)i; /* touch it, as a real user would */
		xfree(j->api, p);
	}
	j->ns = (now() - t0) / (double)n;
	return NULL;
}

static double bench1(int api, size_t size, int churn, int threads)
{
	pthread_t t[16];
	struct job j[16];
	for (int i = 0; i < threads; i++) {
		j[i] = (struct job){.api = api, .size = size, .churn = churn};
		pthread_create(&t[i], NULL, run, &j[i]);
	}
	double worst = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		if (j[i].ns > worst)
			worst = j[i].ns;
	}
	return worst;
}

/* bench runs both APIs reps times, interleaved, and keeps each one's best. */
static void bench(size_t size, int churn, int threads, double best[2])
{
	best[0] = best[1] = 1e30;
	for (int r = 0; r < reps; r++)
		for (int api = 0; api < 2; api++) {
			double ns = bench1(api, size, churn, threads);
			if (ns < best[api])
				best[api] = ns;
		}
}

int main(int argc, char **argv)
{
	int maxthreads = 2;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "-threads"))
			maxthreads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "-iters"))
			iters = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "-reps"))
			reps = atoi(argv[i + 1]);
	}
	if (maxthreads < 1 || maxthreads > 16)
		maxthreads = 2;
	static const size_t sizes[] = {32, 256, 4096};
	static const char *const names[] = {"glibc", "OPENSSL_malloc"};
	if (reps < 1)
		reps = 1;
	for (int th = 1; th <= maxthreads; th++) {
		double best[2];
		for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
			bench(sizes[s], 0, th, best);
			for (int api = 0; api < 2; api++)
				printf("%s size %zu threads %d ns/pair %.1f\n", names[api], sizes[s], th, best[api]);
		}
		bench(0, 1, th, best);
		for (int api = 0; api < 2; api++)
			printf("%s churn threads %d ns/op %.1f\n", names[api], th, best[api]);
	}
	return 0;
}
