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

# The subset is listed once, in opensslsuite/ci-tests.txt (make bench reads it too).
OPENSSL_SUITE_CI_TESTS ?= $(shell grep -v '^\#' opensslsuite/ci-tests.txt)

.PHONY: openssl-suite openssl-suite-ci

openssl-suite: $(BUILD)/libsecretheap.so
	opensslsuite/build.sh
	opensslsuite/run.sh

openssl-suite-ci: $(BUILD)/libsecretheap.so
	opensslsuite/build.sh
	opensslsuite/run.sh $(OPENSSL_SUITE_CI_TESTS)
