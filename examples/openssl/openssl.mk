# examples/openssl/openssl.mk — included by the root Makefile.
#
# Builds, into $(BUILD):
#   tls_server              the pre-forking TLS 1.3 example server (examples/openssl/README.md)
#   ossl_handshake_bench    in-process TLS 1.3 handshakes per second (memory BIOs)
#   ossl_malloc_bench       OPENSSL_malloc+free vs glibc malloc+free, 1 and 2 threads, churn
#   ossl_peak.so            measuring preload: peak live bytes OpenSSL asks for
# `make bench` runs examples/openssl/bench.sh (needs build/libsecretheap.so), which
# prints the OpenSSL table and writes it to $(BUILD)/bench-openssl.txt.
# The e2e tests (package e2e) use tls_server; `go test ./e2e` expects `make` first.

OSSL_DIR    := examples/openssl
OSSL_CFLAGS := $(CFLAGS_COMMON)
OSSL_LIBS   := -lssl -lcrypto

$(BUILD)/tls_server: $(OSSL_DIR)/tls_server.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -o $@ $< $(OSSL_LIBS)

$(BUILD)/ossl_handshake_bench: $(OSSL_DIR)/bench/handshake_bench.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -o $@ $< $(OSSL_LIBS)

$(BUILD)/ossl_malloc_bench: $(OSSL_DIR)/bench/malloc_bench.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -pthread -o $@ $< -lcrypto

$(BUILD)/ossl_peak.so: $(OSSL_DIR)/bench/ossl_peak.c
	@mkdir -p $(BUILD)
	$(CC) $(OSSL_CFLAGS) -shared -fPIC -o $@ $< -ldl

.PHONY: bench-openssl
bench-openssl: $(BUILD)/tls_server $(BUILD)/ossl_handshake_bench $(BUILD)/ossl_malloc_bench $(BUILD)/ossl_peak.so
	$(OSSL_DIR)/bench.sh | tee $(BUILD)/bench-openssl.txt

BUILD_TARGETS += $(BUILD)/tls_server $(BUILD)/ossl_handshake_bench $(BUILD)/ossl_malloc_bench $(BUILD)/ossl_peak.so
BENCH_TARGETS += bench-openssl
