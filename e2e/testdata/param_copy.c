/* param_copy — where libcrypto puts its copy of a private key when it
 * exports one: EVP_PKEY_todata builds the OSSL_PARAM array with
 * OSSL_PARAM_BLD, which keeps a copy in the secure heap only when
 * CRYPTO_secure_allocated says the key is in the secure heap. For Ed25519
 * and X25519 prints the backend (secretheap_backend, -1 without the
 * library) of the key itself and of the "priv" copy, and whether
 * CRYPTO_secure_allocated holds for the copy ("ed_" and "x_" lines). */
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>

int main(void) {
    int (*backend)(const void *) = NULL;
    *(void **)&backend = dlsym(RTLD_DEFAULT, "secretheap_backend");
    const char *algs[] = {"ED25519", "X25519"}, *names[] = {"ed", "x"};
    for (int i = 0; i < 2; i++) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, algs[i]);
        OSSL_PARAM *params = NULL;
        if (k == NULL || !EVP_PKEY_todata(k, EVP_PKEY_KEYPAIR, &params))
            return 1;
        const OSSL_PARAM *priv = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY);
        if (priv == NULL || priv->data == NULL || priv->data_size != 32)
            return 1;
        printf("%s_copy_backend %d\n", names[i], backend ? backend(priv->data) : -1);
        printf("%s_copy_secure %d\n", names[i], CRYPTO_secure_allocated(priv->data));
        OSSL_PARAM_free(params);
        EVP_PKEY_free(k);
    }
    return 0;
}
