# verify/verify.mk — the attack suite and the hardening tests. Included by the root Makefile.
#
#   verify-attacks   go run ./verify/cmd/verify: every attack (/proc/PID/mem, process_vm_readv,
#                    ptrace PEEKDATA, gdb gcore, kernel core dump) against openssl s_server
#                    (EC P-256, RSA 2048), examples/openssl tls_server (parent + workers), a
#                    Go program and the Go keys program (HMAC + Ed25519 used 1000 times; built
#                    also with GOEXPERIMENT=runtimesecret), each with and without the library;
#                    prints the table, the coverage table and the Go keys copies table; fails
#                    on a claimed leak or a broken attack.
#   verify-hardening go test ./verify -run Hardening: SECRETHEAP_NODUMP, chunk guard pages,
#                    SECRETHEAP_CHECK_ZERO (C and Go), secure-mode interposition report
#   (`make verify` runs scripts/verify.sh, which runs both.)
#
# Knobs: VERIFY_ARGS (e.g. "-v -targets s_server -attacks mem,core").

VERIFY_ARGS ?=

.PHONY: verify-attacks verify-hardening

$(BUILD)/verify-gotarget: $(wildcard verify/cmd/gotarget/*.go) $(wildcard alloc/*.go pmdcache/*.go secretmem/*.go)
	@mkdir -p $(BUILD)
	$(GO) build -o $@ ./verify/cmd/gotarget

# The Go keys target, without and with runtime/secret (Secret.Do erases).
$(BUILD)/verify-gokeys: $(wildcard verify/*.go verify/cmd/gokeys/*.go alloc/*.go alloc/signer/*.go pmdcache/*.go secretmem/*.go)
	@mkdir -p $(BUILD)
	$(GO) build -o $@ ./verify/cmd/gokeys
$(BUILD)/verify-gokeys-erasing: $(wildcard verify/*.go verify/cmd/gokeys/*.go alloc/*.go alloc/signer/*.go pmdcache/*.go secretmem/*.go)
	@mkdir -p $(BUILD)
	GOEXPERIMENT=runtimesecret $(GO) build -o $@ ./verify/cmd/gokeys

$(BUILD)/verify: $(wildcard verify/*.go verify/cmd/verify/*.go internal/attack/*.go)
	@mkdir -p $(BUILD)
	$(GO) build -o $@ ./verify/cmd/verify

$(BUILD)/verify-c/%: verify/c/%.c cshim/include/secretheap.h $(BUILD)/libsecretheap.so
	@mkdir -p $(BUILD)/verify-c
	$(CC) $(CFLAGS_COMMON) -Icshim/include -o $@ $< -L$(BUILD) -lsecretheap -Wl,-rpath,$(abspath $(BUILD)) -pthread

VERIFY_C := $(patsubst verify/c/%.c,$(BUILD)/verify-c/%,$(wildcard verify/c/*.c))

# The secure-mode report test: a fake libcrypto whose internal calls go
# through the PLT, and the same built -Bsymbolic-functions (bound inside).
FAKECRYPTO := verify/c/fakecrypto
$(BUILD)/verify-c/plt/libfakecrypto.so: $(FAKECRYPTO)/fakecrypto.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) -fPIC -shared -Wl,-soname,libfakecrypto.so -o $@ $<
$(BUILD)/verify-c/symbolic/libfakecrypto.so: $(FAKECRYPTO)/fakecrypto.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) -fPIC -shared -Wl,-Bsymbolic-functions -Wl,-soname,libfakecrypto.so -o $@ $<
$(BUILD)/verify-c/%/report: $(FAKECRYPTO)/report.c $(BUILD)/verify-c/%/libfakecrypto.so
	$(CC) $(CFLAGS_COMMON) -o $@ $< -L$(@D) -Wl,--no-as-needed -lfakecrypto -Wl,--as-needed -Wl,-rpath,$(abspath $(@D))
VERIFY_C += $(BUILD)/verify-c/plt/report $(BUILD)/verify-c/symbolic/report

BUILD_TARGETS += $(BUILD)/verify-gotarget $(BUILD)/verify-gokeys $(BUILD)/verify-gokeys-erasing $(VERIFY_C)

verify-attacks: $(BUILD)/verify $(BUILD)/verify-gotarget $(BUILD)/verify-gokeys $(BUILD)/verify-gokeys-erasing $(BUILD)/libsecretheap.so $(BUILD)/tls_server
	$(BUILD)/verify $(VERIFY_ARGS)

verify-hardening: $(VERIFY_C) $(BUILD)/libsecretheap.so
	$(GO) test -count=1 -v -run 'Hardening' ./verify
