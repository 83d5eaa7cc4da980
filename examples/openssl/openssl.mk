# examples/openssl/openssl.mk — included by the root Makefile.
#
# Builds, into $(BUILD):
#   tls_server              the pre-forking TLS 1.3 example server (examples/openssl/README.md)
#   ossl_peak.so            measuring preload: peak live bytes OpenSSL asks for (used by
#                           `make bench`, cmd/benchreport, for the s_server memory figure)
# The e2e tests (package e2e) use tls_server; `go test ./e2e` expects `make` first.

OSSL_DIR    := examples/openssl
OSSL_CFLAGS := $(CFLAGS_COMMON)
OSSL_LIBS   := -lssl -lcrypto

$(BUILD)/tls_server: $(OSSL_DIR)/tls_server.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -o $@ $< $(OSSL_LIBS)

$(BUILD)/ossl_peak.so: $(OSSL_DIR)/bench/ossl_peak.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -shared -fPIC -o $@ $< -ldl

BUILD_TARGETS += $(BUILD)/tls_server $(BUILD)/ossl_peak.so
