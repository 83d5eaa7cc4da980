/* engine.so — a dynamic OpenSSL engine, linked against the shared
 * libcrypto. Loaded by a host whose libcrypto is linked in statically
 * (static_host.c), its bind function (IMPLEMENT_DYNAMIC_BIND_FN) calls
 * CRYPTO_set_mem_functions with the host's allocator: the engine ABI's way
 * of making both libcryptos share one allocator, so that either may free
 * what the other allocated. engine_block allocates through the engine's
 * libcrypto; the host frees the block with its own. */
#include <openssl/crypto.h>
#include <openssl/engine.h>

static int bind(ENGINE *e, const char *id) {
    (void)id;
    return ENGINE_set_id(e, "shtest") && ENGINE_set_name(e, "secretheap test engine");
}

IMPLEMENT_DYNAMIC_BIND_FN(bind)
IMPLEMENT_DYNAMIC_CHECK_FN()

__attribute__((visibility("default"))) void *engine_block(size_t n);
void *engine_block(size_t n) { return OPENSSL_malloc(n); }
