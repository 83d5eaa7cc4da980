/* openssl.c — the OpenSSL skin of libsecretheap.so.
 *
 * Forwarding only, like mimalloc's alloc-override.c: this file decides which
 * OpenSSL allocations go to the core (secretheap_malloc and friends) and knows
 * nothing of chunks or slabs; the core knows nothing of OpenSSL.
 *
 * How OpenSSL is reached (see ../shared/DESIGN.md, "OpenSSL facts"):
 *  - The library does not link libcrypto. A constructor looks for
 *    CRYPTO_set_mem_functions with dlsym(RTLD_NEXT) (RTLD_DEFAULT would find
 *    our own interposed definition first) and installs hooks with the ABI of
 *    OpenSSL 1.1.0 through 3.x: malloc(num, file, line), realloc(p, num, file,
 *    line), free(p, file, line). OpenSSL refuses them once it has allocated
 *    through its default allocator; we then say so once and in the stats.
 *  - A libcrypto loaded later by dlopen (Python's ssl module, plugins) is hooked
 *    by our dlopen wrapper right after the real dlopen returns.
 *  - CRYPTO_set_mem_functions is interposed so that a later caller cannot
 *    replace our hooks: once ours are installed, the call is accepted (returns
 *    1, as OpenSSL itself does while customisation is allowed) and ignored, so
 *    a program that aborts on 0 keeps working and no block of ours is ever
 *    freed by another allocator. Ignored calls are counted.
 *  - The secure-heap API (CRYPTO_secure_*) is interposed. On Debian's libcrypto
 *    every internal call to it goes through the PLT, so an LD_PRELOAD library
 *    sees them; a libcrypto linked with -Bsymbolic binds them internally. A
 *    probe at hook time (BN_secure_new + BN_set_word, which allocate with
 *    OPENSSL_secure_zalloc inside libcrypto) tells which case we are in.
 *
 * Modes (SECRETHEAP_OPENSSL):
 *  all     every OpenSSL allocation (hooks). Secure-heap allocations are served
 *          from the core's reserve (SECRETHEAP_SECURE_RESERVE) so that private
 *          keys, DRBG state and shared secrets never fall back to libc memory.
 *  secure  only CRYPTO_secure_* (interposition). Hooks are still installed as a
 *          safety net that route a free of one of our blocks back to the core
 *          (OpenSSL, with its secure heap off, does not distinguish the two);
 *          everything else goes to libc malloc.
 *  off     nothing; every interposed function forwards to libcrypto.
 *
 * While our secure service is active, CRYPTO_secure_malloc_init does not build
 * OpenSSL's own mlock'd arena (our blocks are already secret memory) and
 * CRYPTO_secure_malloc_initialized reports 1, so code that asks first (the
 * DRBG, applications) takes its secure path into secret memory.
 *
 * CRYPTO_secure_allocated keeps libcrypto's answer (see there); used and
 * actual_size report our blocks; malloc_done succeeds once no secure block of
 * ours is live.
 *
 * Limits: when OpenSSL refused the hooks but secure interposition works, a
 * secure block freed with plain CRYPTO_free would reach libc free; OpenSSL
 * pairs the two APIs (its own arena needs that too), so this is only a
 * caller's bug made louder. One libcrypto per process gets the interposed
 * secure calls (the first one found); a second, different libcrypto loaded
 * later is hooked (all mode) but its secure calls forward to the first. The dlopen wrapper makes our
 * library the "caller" of dlopen; os_caller_path restores the caller's
 * DT_RPATH/DT_RUNPATH search for bare names (not ld.so.cache's place in that
 * order, nor $ORIGIN inside a file name that has a slash, nor dlmopen
 * namespaces).
 */
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SH_EXPORT __attribute__((visibility("default")))

/* The OpenSSL 1.1.0–3.x allocator ABI. */
typedef void *(*ossl_malloc_fn)(size_t num, const char *file, int line);
typedef void *(*ossl_realloc_fn)(void *p, size_t num, const char *file, int line);
typedef void (*ossl_free_fn)(void *p, const char *file, int line);
typedef int (*ossl_set_mem_fn)(ossl_malloc_fn, ossl_realloc_fn, ossl_free_fn);

/* The libcrypto functions we forward to. Filled once, from the first
 * libcrypto found (at start, at dlopen, or lazily), under os_real_lock; read
 * afterwards without a lock once os_reals_ready is set (release/acquire). */
struct ossl_reals {
	ossl_set_mem_fn set_mem_functions;
	void *(*secure_malloc)(size_t, const char *, int);
	void *(*secure_zalloc)(size_t, const char *, int);
	void (*secure_free)(void *, const char *, int);
	void (*secure_clear_free)(void *, size_t, const char *, int);
	int (*secure_allocated)(const void *);
	int (*secure_malloc_initialized)(void);
	size_t (*secure_actual_size)(void *);
	size_t (*secure_used)(void);
	int (*secure_malloc_init)(size_t, size_t);
	int (*secure_malloc_done)(void);
};

static struct ossl_reals os_real;
static atomic_int os_reals_ready;

/* os_lock serialises hooking (constructor, dlopen from several threads). */
static pthread_mutex_t os_lock = PTHREAD_MUTEX_INITIALIZER;

/* Every libcrypto we installed hooks in, by the address of its
 * CRYPTO_set_mem_functions, so a second dlopen of the same library (engines,
 * RTLD_NOLOAD) does not hook it again. Guarded by os_lock. */
#define OS_MAX_LIBS 8
static ossl_set_mem_fn os_hooked_libs[OS_MAX_LIBS];
static int os_nlibs;

static int os_mode = SH_OPENSSL_OFF; /* written once in the constructor */

/* os_secure_active: our CRYPTO_secure_* serve from secret memory (the probe
 * showed that libcrypto's internal calls reach us). Written under os_lock,
 * read without. */
static atomic_int os_secure_active;

/* Counters. Call counts are sharded per thread: an atomic add on one shared
 * cache line costs tens of ns per call with two threads, and even a locked
 * add on a private line (~6 ns) is half a glibc malloc+free pair, so a shard
 * is bumped with a relaxed load and store. Counts are exact while no two
 * running threads share a shard (fewer than OS_SHARDS threads were ever
 * started); beyond that a concurrent bump can be lost, which only makes the
 * statistics approximate. The shard is picked once per thread. TLS is
 * initial-exec: the library is preloaded or linked, never dlopen()ed, and the
 * default model would call __tls_get_addr on every hook. */
enum { OSC_MALLOC, OSC_REALLOC, OSC_FREE, OSC_SECURE_ALLOC, OSC_SECURE_FREE, OSC_N };
#define OS_SHARDS 32
static struct {
	_Alignas(64) atomic_ulong c[OSC_N];
} os_shard[OS_SHARDS];
static atomic_uint os_next_shard;
#define OS_TLS __attribute__((tls_model("initial-exec")))
static _Thread_local int os_my_shard OS_TLS = -1;

static atomic_long os_secure_live;     /* usable bytes of live secure blocks */
static atomic_int os_hooked;           /* 1 when our hooks are in some libcrypto */
static atomic_int os_refused;          /* libcryptos that refused our hooks */
static atomic_ulong os_set_ignored;    /* later CRYPTO_set_mem_functions calls ignored */
static atomic_int os_interpose_state;  /* 0 unknown, 1 reaches us, -1 bound inside libcrypto */
static atomic_ulong os_probe_hits;     /* our secure allocator reached during the probe */
static _Thread_local int os_probing OS_TLS;

/* os_dlopen_depth guards re-entrancy: a constructor run by the real dlopen
 * may dlopen again; only the outermost call scans for libcrypto. */
static _Thread_local int os_dlopen_depth OS_TLS;

static inline void os_count(int which)
{
	int s = os_my_shard;
	if (__builtin_expect(s < 0, 0)) {
		s = (int)(atomic_fetch_add_explicit(&os_next_shard, 1, memory_order_relaxed) % OS_SHARDS);
		os_my_shard = s;
	}
	atomic_ulong *c = &os_shard[s].c[which];
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static unsigned long os_sum(int which)
{
	unsigned long n = 0;
	for (int i = 0; i < OS_SHARDS; i++)
		n += atomic_load_explicit(&os_shard[i].c[which], memory_order_relaxed);
	return n;
}

SH_EXPORT int CRYPTO_set_mem_functions(ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f);
/* Our own definition's address. Plain CRYPTO_set_mem_functions goes through
 * the GOT and means libcrypto's when libcrypto comes first in the global
 * scope; a hidden alias always means ours. */
extern __typeof__(CRYPTO_set_mem_functions) os_self_set_fn
	__attribute__((alias("CRYPTO_set_mem_functions"), visibility("hidden")));
#define os_self_set ((ossl_set_mem_fn)os_self_set_fn)

/* ---- the hooks installed with CRYPTO_set_mem_functions ---------------- */

/* OpenSSL's default allocator returns NULL for 0 bytes; so do we, so that
 * behaviour does not change under the library. */
static void *os_hook_malloc(size_t num, const char *file, int line)
{
	(void)file, (void)line;
	os_count(OSC_MALLOC);
	if (num == 0)
		return NULL;
	return secretheap_malloc(num);
}

/* realloc: NULL → malloc, 0 → free + NULL, and the old block is wiped (the
 * core's realloc does all three). */
static void *os_hook_realloc(void *p, size_t num, const char *file, int line)
{
	(void)file, (void)line;
	os_count(OSC_REALLOC);
	return secretheap_realloc(p, num);
}

/* free always wipes (the core does): OpenSSL frees many secrets with plain
 * CRYPTO_free. A pointer outside every chunk (a fallback block) goes to libc. */
static void os_hook_free(void *p, const char *file, int line)
{
	(void)file, (void)line;
	os_count(OSC_FREE);
	secretheap_free(p);
}

/* Safety net of mode secure: ordinary allocations stay in libc memory, but a
 * block of ours that reaches CRYPTO_free or CRYPTO_realloc goes back to us. */
static void *os_net_malloc(size_t num, const char *file, int line)
{
	(void)file, (void)line;
	if (num == 0)
		return NULL;
	return malloc(num);
}

static void *os_net_realloc(void *p, size_t num, const char *file, int line)
{
	(void)file, (void)line;
	if (p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE)
		return secretheap_realloc(p, num);
	if (num == 0) {
		free(p);
		return NULL;
	}
	return realloc(p, num);
}

static void os_net_free(void *p, const char *file, int line)
{
	(void)file, (void)line;
	if (p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE) {
		os_count(OSC_SECURE_FREE);
		secretheap_free(p);
		return;
	}
	free(p);
}

/* ---- finding and hooking libcrypto ------------------------------------ */

static void *os_sym(void *handle, const char *name)
{
	return dlsym(handle, name);
}

/* os_real_lock guards filling os_real; it is never held while calling into
 * OpenSSL, so an interposed function may take it from anywhere. */
static pthread_mutex_t os_real_lock = PTHREAD_MUTEX_INITIALIZER;

/* os_load_reals fills os_real from handle (RTLD_NEXT or a dlopen handle)
 * the first time a libcrypto is seen; later ones are ignored. */
static void os_load_reals(void *handle, ossl_set_mem_fn set)
{
	pthread_mutex_lock(&os_real_lock);
	if (!atomic_load_explicit(&os_reals_ready, memory_order_relaxed)) {
		os_real.set_mem_functions = set;
		*(void **)&os_real.secure_malloc = os_sym(handle, "CRYPTO_secure_malloc");
		*(void **)&os_real.secure_zalloc = os_sym(handle, "CRYPTO_secure_zalloc");
		*(void **)&os_real.secure_free = os_sym(handle, "CRYPTO_secure_free");
		*(void **)&os_real.secure_clear_free = os_sym(handle, "CRYPTO_secure_clear_free");
		*(void **)&os_real.secure_allocated = os_sym(handle, "CRYPTO_secure_allocated");
		*(void **)&os_real.secure_malloc_initialized =
			os_sym(handle, "CRYPTO_secure_malloc_initialized");
		*(void **)&os_real.secure_actual_size = os_sym(handle, "CRYPTO_secure_actual_size");
		*(void **)&os_real.secure_used = os_sym(handle, "CRYPTO_secure_used");
		*(void **)&os_real.secure_malloc_init = os_sym(handle, "CRYPTO_secure_malloc_init");
		*(void **)&os_real.secure_malloc_done = os_sym(handle, "CRYPTO_secure_malloc_done");
		atomic_store_explicit(&os_reals_ready, 1, memory_order_release);
	}
	pthread_mutex_unlock(&os_real_lock);
}

/* os_reals returns libcrypto's own functions, looking for a libcrypto in the
 * global scope first if none was seen yet (a call that arrives before our
 * constructor or dlopen wrapper saw the library). NULL if there is none: the
 * callers then behave as OpenSSL's default path would (libc memory). */
static const struct ossl_reals *os_reals(void)
{
	if (sh_likely(atomic_load_explicit(&os_reals_ready, memory_order_acquire)))
		return &os_real;
	ossl_set_mem_fn set = NULL;
	*(void **)&set = dlsym(RTLD_NEXT, "CRYPTO_set_mem_functions");
	if (set != NULL)
		os_load_reals(RTLD_NEXT, set);
	return atomic_load_explicit(&os_reals_ready, memory_order_acquire) ? &os_real : NULL;
}

/* os_probe_interposition allocates through libcrypto's own exported path:
 * BN_set_word on a BN_secure_new() bignum expands it with
 * OPENSSL_secure_zalloc from inside libcrypto (bn_lib.c). If our
 * CRYPTO_secure_zalloc counted the call, internal calls reach us. Returns 1
 * (reached), -1 (bound inside libcrypto) or 0 (cannot tell: symbols missing). */
static int os_probe_interposition(void *handle)
{
	void *(*bn_secure_new)(void) = NULL;
	int (*bn_set_word)(void *, unsigned long) = NULL;
	void (*bn_clear_free)(void *) = NULL;
	*(void **)&bn_secure_new = os_sym(handle, "BN_secure_new");
	*(void **)&bn_set_word = os_sym(handle, "BN_set_word");
	*(void **)&bn_clear_free = os_sym(handle, "BN_clear_free");
	if (bn_secure_new == NULL || bn_set_word == NULL || bn_clear_free == NULL)
		return 0;
	unsigned long before = atomic_load(&os_probe_hits);
	os_probing = 1;
	void *bn = bn_secure_new();
	int ok = bn != NULL && bn_set_word(bn, 0x5ec2e7UL);
	if (bn != NULL)
		bn_clear_free(bn);
	os_probing = 0;
	if (!ok)
		return 0;
	return atomic_load(&os_probe_hits) != before ? 1 : -1;
}

/* os_already_hooked reports whether set is a libcrypto we hooked. os_lock. */
static int os_already_hooked(ossl_set_mem_fn set)
{
	for (int i = 0; i < os_nlibs; i++)
		if (os_hooked_libs[i] == set)
			return 1;
	return 0;
}

/* os_hook installs our hooks in the libcrypto whose CRYPTO_set_mem_functions
 * is set (found in handle) and checks interposition. os_lock held. */
static void os_hook(void *handle, ossl_set_mem_fn set, const char *where)
{
	if (os_already_hooked(set) || os_nlibs == OS_MAX_LIBS)
		return;
	os_hooked_libs[os_nlibs++] = set;
	os_load_reals(handle, set);

	/* The reserve is switched on before the first allocation through our
	 * hooks, so that ordinary blocks never take its share; the probe below
	 * switches it off again if secure allocations cannot reach us. */
	bool first = os_real.set_mem_functions == set;
	if (first && os_mode == SH_OPENSSL_ALL)
		sh_secure_reserve_enable(true);
	int ok;
	if (os_mode == SH_OPENSSL_ALL)
		ok = set(os_hook_malloc, os_hook_realloc, os_hook_free);
	else
		ok = set(os_net_malloc, os_net_realloc, os_net_free);
	if (ok) {
		atomic_store(&os_hooked, 1);
		atomic_store(&sh_stat_openssl_hooked, os_mode == SH_OPENSSL_ALL ? 1 : 0);
		sh_log(1, "openssl: hooks installed in libcrypto (%s, mode %s)", where,
		       os_mode == SH_OPENSSL_ALL ? "all" : "secure");
	} else {
		atomic_fetch_add(&os_refused, 1);
		if (!atomic_load(&os_hooked))
			atomic_store(&sh_stat_openssl_hooked, 2);
		sh_log(0, "OpenSSL refused CRYPTO_set_mem_functions (%s): it allocated before "
			"the library was loaded; %s", where,
			os_mode == SH_OPENSSL_ALL
				? "its ordinary allocations stay in libc memory"
				: "a secure block freed with CRYPTO_free would reach libc free");
	}

	/* Only the libcrypto that os_real points to gets our secure calls. */
	if (!first)
		return;
	int st = os_probe_interposition(handle);
	atomic_store(&os_interpose_state, st);
	if (st == 1) {
		atomic_store(&os_secure_active, 1);
		sh_log(1, "openssl: CRYPTO_secure_* interposed (libcrypto calls them through the PLT)");
		return;
	}
	if (os_mode == SH_OPENSSL_ALL)
		sh_secure_reserve_enable(false);
	if (os_mode == SH_OPENSSL_SECURE) {
		sh_log(0, "OpenSSL mode secure: libcrypto does not call CRYPTO_secure_* through "
			"the PLT (%s, linked with -Bsymbolic?); secure-heap allocations are not "
			"served from secret memory",
			st == 0 ? "probe could not run" : "probe bypassed the library");
	} else {
		sh_log(1, "openssl: CRYPTO_secure_* not interposable (%s); secure-heap "
			  "allocations use the hooks without the reserve",
			  st == 0 ? "probe could not run" : "bound inside libcrypto");
	}
}

/* os_scan hooks the libcrypto reachable from handle, if any. */
static void os_scan(void *handle, const char *where)
{
	ossl_set_mem_fn set = NULL;
	*(void **)&set = dlsym(handle, "CRYPTO_set_mem_functions");
	/* dlsym on a handle that searches the global scope (dlopen(NULL),
	 * RTLD_DEFAULT) finds our own interposed definition: skip it. */
	if (set == NULL || set == os_self_set)
		return;
	if (os_mode == SH_OPENSSL_OFF) {
		/* Nothing to hook, but our interposed functions forward here. */
		os_load_reals(handle, set);
		return;
	}
	pthread_mutex_lock(&os_lock);
	os_hook(handle, set, where);
	pthread_mutex_unlock(&os_lock);
}

__attribute__((constructor)) static void os_init(void)
{
	sh_init();
	os_mode = sh_opt.openssl;
	/* RTLD_NEXT finds a libcrypto after us in the global scope (we are
	 * preloaded, or linked before it); RTLD_DEFAULT one before us (a program
	 * linked -lcrypto -lsecretheap). os_scan skips our own definition. */
	os_scan(RTLD_NEXT, "linked at start");
	if (!atomic_load(&os_reals_ready))
		os_scan(RTLD_DEFAULT, "linked at start");
}

/* ---- interposed: dlopen -------------------------------------------------- */

/* os_caller_path keeps dlopen's search the caller's. glibc resolves a bare
 * file name with the *calling* object's DT_RPATH/DT_RUNPATH, and with our
 * wrapper in between the caller is this library, which has neither. When the
 * real caller has one, we look the name up in its search path (dlinfo
 * RTLD_DI_SERINFO on its link map: RPATH, LD_LIBRARY_PATH, RUNPATH, system
 * directories, with $ORIGIN expanded) and hand the real dlopen a path.
 * Returns a malloc'ed path, or NULL to let the real dlopen search (no caller
 * path to honour, already loaded, or not found there). */
static char *os_caller_path(const char *file, int mode, const void *ret,
			    void *(*rd)(const char *, int))
{
	if (file == NULL || strchr(file, '/') != NULL)
		return NULL;
	Dl_info info;
	struct link_map *lm = NULL;
	if (!dladdr1(ret, &info, (void **)&lm, RTLD_DL_LINKMAP) || lm == NULL || lm->l_ld == NULL)
		return NULL;
	bool has_path = false;
	for (const ElfW(Dyn) *d = lm->l_ld; d->d_tag != DT_NULL; d++)
		if (d->d_tag == DT_RPATH || d->d_tag == DT_RUNPATH)
			has_path = true;
	if (!has_path)
		return NULL;
	/* A resident object is found by name without any search. */
	void *h = rd(file, (mode & ~(RTLD_LAZY | RTLD_NOW)) | RTLD_LAZY | RTLD_NOLOAD);
	if (h != NULL) {
		dlclose(h);
		return NULL;
	}
	Dl_serinfo size;
	if (dlinfo(lm, RTLD_DI_SERINFOSIZE, &size) != 0)
		return NULL;
	Dl_serinfo *si = malloc(size.dls_size);
	if (si == NULL)
		return NULL;
	si->dls_size = size.dls_size;
	si->dls_cnt = size.dls_cnt;
	char *found = NULL;
	if (dlinfo(lm, RTLD_DI_SERINFO, si) == 0) {
		for (unsigned i = 0; i < si->dls_cnt && found == NULL; i++) {
			char *p;
			if (asprintf(&p, "%s/%s", si->dls_serpath[i].dls_name, file) < 0)
				break;
			if (access(p, F_OK) == 0)
				found = p;
			else
				free(p);
		}
	}
	free(si);
	return found;
}

SH_EXPORT void *dlopen(const char *file, int mode)
{
	static void *(*real_dlopen)(const char *, int);
	void *(*rd)(const char *, int) = __atomic_load_n(&real_dlopen, __ATOMIC_ACQUIRE);
	if (rd == NULL) {
		*(void **)&rd = dlsym(RTLD_NEXT, "dlopen");
		if (rd == NULL) {
			errno = ENOSYS;
			return NULL;
		}
		__atomic_store_n(&real_dlopen, rd, __ATOMIC_RELEASE);
	}
	char *path = os_caller_path(file, mode, __builtin_return_address(0), rd);
	os_dlopen_depth++;
	void *h = rd(path != NULL ? path : file, mode);
	os_dlopen_depth--;
	free(path);
	if (h != NULL && file != NULL && os_dlopen_depth == 0)
		os_scan(h, "dlopen");
	return h;
}

/* ---- interposed: CRYPTO_set_mem_functions -------------------------------- */

SH_EXPORT int CRYPTO_set_mem_functions(ossl_malloc_fn m, ossl_realloc_fn r, ossl_free_fn f)
{
	if (atomic_load(&os_hooked)) {
		unsigned long n = atomic_fetch_add(&os_set_ignored, 1);
		if (n == 0)
			sh_log(1, "openssl: a later CRYPTO_set_mem_functions was ignored "
				  "(secretheap's hooks stay installed)");
		return 1;
	}
	const struct ossl_reals *real = os_reals();
	ossl_set_mem_fn set = real != NULL ? real->set_mem_functions : NULL;
	if (set == NULL)
		*(void **)&set = dlsym(RTLD_NEXT, "CRYPTO_set_mem_functions");
	if (set == NULL)
		return 0;
	return set(m, r, f);
}

/* ---- interposed: the secure-heap API ------------------------------------- */

static inline int os_secure_on(void)
{
	return atomic_load_explicit(&os_secure_active, memory_order_relaxed) || os_probing;
}

static inline int os_ours(const void *p)
{
	return p != NULL && secretheap_backend(p) != SECRETHEAP_BACKEND_NONE;
}

static void *os_secure_alloc(size_t num)
{
	if (os_probing) /* the start-up probe is not the program's call */
		atomic_fetch_add(&os_probe_hits, 1);
	else
		os_count(OSC_SECURE_ALLOC);
	if (num == 0)
		return NULL;
	/* In mode all the secure reserve keeps these out of the fallback. */
	void *p = os_mode == SH_OPENSSL_ALL ? sh_malloc_secure(num) : secretheap_malloc(num);
	if (p == NULL)
		return NULL;
	if (os_ours(p))
		atomic_fetch_add_explicit(&os_secure_live, (long)secretheap_usable_size(p),
					  memory_order_relaxed);
	else
		memset(p, 0, num); /* libc fallback memory is not pre-zeroed */
	return p;
}

static void os_secure_release(void *p)
{
	if (!os_probing)
		os_count(OSC_SECURE_FREE);
	atomic_fetch_sub_explicit(&os_secure_live, (long)secretheap_usable_size(p),
				  memory_order_relaxed);
	secretheap_free(p);
}

SH_EXPORT void *CRYPTO_secure_malloc(size_t num, const char *file, int line)
{
	if (os_secure_on())
		return os_secure_alloc(num);
	const struct ossl_reals *real = os_reals();
	if (real != NULL && real->secure_malloc != NULL)
		return real->secure_malloc(num, file, line);
	return num != 0 ? malloc(num) : NULL; /* what OpenSSL does with its arena off */
}

SH_EXPORT void *CRYPTO_secure_zalloc(size_t num, const char *file, int line)
{
	if (os_secure_on())
		return os_secure_alloc(num); /* our blocks are zero when handed out */
	const struct ossl_reals *real = os_reals();
	if (real != NULL && real->secure_zalloc != NULL)
		return real->secure_zalloc(num, file, line);
	return num != 0 ? calloc(1, num) : NULL;
}

SH_EXPORT void CRYPTO_secure_free(void *p, const char *file, int line)
{
	if (p == NULL)
		return;
	if (os_ours(p)) {
		os_secure_release(p);
		return;
	}
	const struct ossl_reals *real = os_reals();
	if (real != NULL && real->secure_free != NULL)
		real->secure_free(p, file, line);
	else
		free(p);
}

SH_EXPORT void CRYPTO_secure_clear_free(void *p, size_t num, const char *file, int line)
{
	if (p == NULL)
		return;
	if (os_ours(p)) {
		os_secure_release(p); /* the core wipes the whole block */
		return;
	}
	const struct ossl_reals *real = os_reals();
	if (real != NULL && real->secure_clear_free != NULL)
		real->secure_clear_free(p, num, file, line);
	else
		free(p);
}

/* Always libcrypto's answer, so 0 for our blocks while OpenSSL's own arena is
 * off: libcrypto's CRYPTO_secure_free and CRYPTO_secure_clear_free ask this
 * (through the PLT) before touching their arena, and a caller that reaches
 * them directly (dlsym on a libcrypto handle) with one of our blocks must be
 * sent on to CRYPTO_free, which our hooks route back to the core, not into an
 * arena that was never built. */
SH_EXPORT int CRYPTO_secure_allocated(const void *p)
{
	const struct ossl_reals *real = os_reals();
	return real != NULL && real->secure_allocated != NULL ? real->secure_allocated(p) : 0;
}

SH_EXPORT int CRYPTO_secure_malloc_initialized(void)
{
	if (os_secure_on())
		return 1;
	const struct ossl_reals *real = os_reals();
	return real != NULL && real->secure_malloc_initialized != NULL
		       ? real->secure_malloc_initialized()
		       : 0;
}

/* os_real_arena_on: OpenSSL's own arena exists. Its CRYPTO_secure_used and
 * CRYPTO_secure_actual_size take the arena's lock without checking, and
 * crash when it was never built (which is always the case once our
 * CRYPTO_secure_malloc_init answered instead). */
static bool os_real_arena_on(const struct ossl_reals *real)
{
	return real != NULL && real->secure_malloc_initialized != NULL &&
	       real->secure_malloc_initialized();
}

SH_EXPORT size_t CRYPTO_secure_actual_size(void *p)
{
	if (os_ours(p))
		return secretheap_usable_size(p);
	const struct ossl_reals *real = os_reals();
	return os_real_arena_on(real) && real->secure_actual_size != NULL ? real->secure_actual_size(p)
									  : 0;
}

SH_EXPORT size_t CRYPTO_secure_used(void)
{
	long ours = atomic_load_explicit(&os_secure_live, memory_order_relaxed);
	size_t n = ours > 0 ? (size_t)ours : 0;
	const struct ossl_reals *real = os_reals();
	if (os_real_arena_on(real) && real->secure_used != NULL)
		n += real->secure_used();
	return n;
}

/* While our service is active OpenSSL's own arena is not built: our blocks
 * are already secret memory, and the arena would hold RLIMIT_MEMLOCK for
 * nothing. 1 is OpenSSL's "initialised" answer. */
SH_EXPORT int CRYPTO_secure_malloc_init(size_t size, size_t minsize)
{
	if (os_secure_on())
		return 1;
	const struct ossl_reals *real = os_reals();
	return real != NULL && real->secure_malloc_init != NULL ? real->secure_malloc_init(size, minsize)
								: 0;
}

/* Done succeeds (1) when no secure block is live, as OpenSSL's does. */
SH_EXPORT int CRYPTO_secure_malloc_done(void)
{
	if (os_secure_on())
		return atomic_load(&os_secure_live) == 0;
	const struct ossl_reals *real = os_reals();
	return real != NULL && real->secure_malloc_done != NULL ? real->secure_malloc_done() : 0;
}

/* ---- stats ------------------------------------------------------------- */

/* sh_openssl_stats_print writes the skin's block of the stats report to fd,
 * once per process. The core's sh_stats_print calls it right after its own
 * block (see stats.c for the format): a summary for people, then one
 * "  openssl_<key> value" line per value. */
static atomic_int os_stats_printed;

void sh_openssl_stats_print(int fd)
{
	static const char *const modes[] = {"all", "secure", "off"};
	static const char *const interp[] = {"bound-inside-libcrypto", "unknown", "yes"};
	if (atomic_exchange(&os_stats_printed, 1))
		return;
	long live = atomic_load(&os_secure_live);
	const char *mode = modes[os_mode];
	const char *hooks = atomic_load(&os_hooked) ? "yes" : "no";
	const char *ip = interp[atomic_load(&os_interpose_state) + 1];
	unsigned long c[OSC_N];
	for (int i = 0; i < OSC_N; i++)
		c[i] = os_sum(i);
	char buf[1536];
	int n = snprintf(buf, sizeof buf,
			 "secretheap openssl (pid %d): mode %s; hooks %s; refused %d; secure interposed %s\n"
			 "  calls: malloc %lu, realloc %lu, free %lu, secure alloc %lu, secure free %lu; "
			 "secure live %ld B; set_mem_functions ignored %lu\n"
			 "  openssl_mode %s\n  openssl_hooks %s\n  openssl_refused %d\n"
			 "  openssl_secure_interposed %s\n  openssl_malloc_calls %lu\n"
			 "  openssl_realloc_calls %lu\n  openssl_free_calls %lu\n"
			 "  openssl_secure_alloc_calls %lu\n  openssl_secure_free_calls %lu\n"
			 "  openssl_secure_live_bytes %ld\n  openssl_set_mem_functions_ignored %lu\n",
			 (int)getpid(), mode, hooks, atomic_load(&os_refused), ip, c[OSC_MALLOC],
			 c[OSC_REALLOC], c[OSC_FREE], c[OSC_SECURE_ALLOC], c[OSC_SECURE_FREE],
			 live > 0 ? live : 0, atomic_load(&os_set_ignored), mode, hooks,
			 atomic_load(&os_refused), ip, c[OSC_MALLOC], c[OSC_REALLOC], c[OSC_FREE],
			 c[OSC_SECURE_ALLOC], c[OSC_SECURE_FREE], live > 0 ? live : 0,
			 atomic_load(&os_set_ignored));
	if (n <= 0)
		return;
	size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}
