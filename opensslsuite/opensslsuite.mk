# opensslsuite.mk — OpenSSL's own test suite with libsecretheap.so preloaded.
# Included by the root Makefile.
#
#   make openssl-suite      the whole suite (every recipe), both link styles
#                           (upstream -Bsymbolic and Debian's), without the
#                           library and in modes all and secure: 6 runs
#   make openssl-suite-ci   a subset covering engines, providers, the secure
#                           heap, EVP and SSL (CI: ~15 min with the build)
#
# The first run fetches OpenSSL through Debian's source packages and builds
# it into $(SECRETHEAP_OPENSSL_CACHE) (default /var/cache/secretheap-openssl;
# root, or a writable cache directory, is needed). Results: build/opensslsuite/.

OPENSSL_SUITE_CI_TESTS ?= test_internal_provider test_provider test_provider_fallback test_provider_pkey \
  test_provider_status test_exdata test_params_api test_param_build test_rand test_engine test_evp \
  test_evp_extra test_evp_fetch_prov test_evp_libctx test_evp_pkey_dparam test_evp_pkey_provided \
  test_secmem test_ssl_new test_sslapi

.PHONY: openssl-suite openssl-suite-ci

openssl-suite: $(BUILD)/libsecretheap.so
	opensslsuite/build.sh
	opensslsuite/run.sh

openssl-suite-ci: $(BUILD)/libsecretheap.so
	opensslsuite/build.sh
	opensslsuite/run.sh $(OPENSSL_SUITE_CI_TESTS)
