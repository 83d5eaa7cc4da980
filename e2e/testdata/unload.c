/* unload — a program that dlopen()s libsecretheap.so itself (not
 * preloaded), allocates from it in a thread that stays alive and through
 * OpenSSL (the library's constructor hooked the program's libcrypto), then
 * dlclose()s it. The thread then exits (running the library's thread-exit
 * destructor) and OpenSSL allocates again (through the hooks): neither may
 * crash. argv[1]: the library. */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *(*sh_malloc)(size_t);
static void (*sh_free)(void *);
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage;

static void *worker(void *arg) {
    (void)arg;
    void *p = sh_malloc(64);
    sh_free(p);
    pthread_mutex_lock(&mu);
    stage = 1;
    pthread_cond_broadcast(&cv);
    while (stage != 2)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL; /* thread exit after dlclose */
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    *(void **)&sh_malloc = dlsym(h, "secretheap_malloc");
    *(void **)&sh_free = dlsym(h, "secretheap_free");
    int (*backend)(const void *);
    *(void **)&backend = dlsym(h, "secretheap_backend");
    if (sh_malloc == NULL || sh_free == NULL || backend == NULL)
        return 2;
    char *k = OPENSSL_malloc(48);
    printf("openssl_backend %d\n", k ? backend(k) : -1);
    OPENSSL_free(k);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_mutex_lock(&mu);
    while (stage != 1)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    printf("dlclose %d\n", dlclose(h));
    pthread_mutex_lock(&mu);
    stage = 2;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    char *q = OPENSSL_malloc(100);
    memset(q, 1, 100);
    OPENSSL_free(q);
    printf("done 1\n");
    return 0;
}
