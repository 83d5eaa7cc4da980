# secretheap — build, test and measure the Go allocator, the C core and the
# LD_PRELOAD library.
#
# Targets
#   make              build the Go packages, the secretheap CLI and build/libsecretheap.so
#   make test         every test: gofmt, go vet, staticcheck, go test -race, C unit tests,
#                     the C tests again under ASan/UBSan and TSan, short fuzz runs, the soak
#   make bench        benchmark suites, written to docs/benchmarks/
#   make demo         TLS server with and without the library, and an outside read of its key
#   make verify       the attack suite: every attack against protected and unprotected targets
#   make install      library, header, pkg-config file and the secretheap command under $(PREFIX)
#   make fuzz-short   libFuzzer on the C core + go test -fuzz targets, briefly (fuzz-c for 10 min)
#   make soak         threads and forks allocating and verifying for 20 s
#   make openssl-suite  OpenSSL's own test suite with and without the library (opensslsuite/)
#   make generate     regenerate the size-class tables (alloc/sizeclasses.go, cshim/sizeclasses.h)
#   make clean
#
# Knobs
#   CC=gcc            C compiler for the core and the library
#   GO=go             Go toolchain
#   PREFIX=/usr/local install prefix (DESTDIR is honoured too)
#   DEBUG=1           build C with -O0 -g and assertions
#   SECRETHEAP_REQUIRE=1  tests fail (instead of skipping) where memfd_secret is missing
#   FUZZ_C_TIME=30 FUZZ_GO_TIME=20s  fuzz run lengths; SECRETHEAP_SOAK_SECONDS=20 (fuzz/fuzz.mk)

# make's built-in CC is `cc`, so `?=` would never apply: override only the default.
ifeq ($(origin CC),default)
CC      := gcc
endif
GO      ?= go
PREFIX  ?= /usr/local
BUILD   := build

ifeq ($(DEBUG),1)
C_OPT := -O0 -g
else
C_OPT := -O2 -g -DNDEBUG
endif
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(C_OPT)

# The fragments below define rules before `all`: keep `all` the default.
.DEFAULT_GOAL := all

# Fragments append their targets to these lists.
BUILD_TARGETS   :=
TEST_TARGETS    :=
BENCH_TARGETS   :=
INSTALL_TARGETS :=

-include cshim/cshim.mk
-include examples/openssl/openssl.mk
-include fuzz/fuzz.mk
-include verify/verify.mk
-include opensslsuite/opensslsuite.mk

# make test also runs the short fuzz runs (C libFuzzer 30 s, each Go fuzz
# target 20 s) and the 20 s soak of threads and forks: about 2 minutes.
ifneq ($(wildcard fuzz/fuzz.mk),)
TEST_TARGETS += fuzz-short soak
endif

.PHONY: all go-build test go-test go-lint bench demo verify install generate clean

all: go-build $(BUILD_TARGETS)

go-build:
	$(GO) build ./...
	@mkdir -p $(BUILD)
	@if [ -d cmd/secretheap ]; then $(GO) build -o $(BUILD)/secretheap ./cmd/secretheap; fi

test: all go-lint go-test $(TEST_TARGETS)

go-lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; \
	  elif [ -x "$$($(GO) env GOPATH)/bin/staticcheck" ]; then "$$($(GO) env GOPATH)/bin/staticcheck" ./...; \
	  else echo "staticcheck not installed: skipped (CI installs it)"; fi

go-test:
	$(GO) test -race -count=1 ./...

bench: all $(BENCH_TARGETS)
	@if [ -d cmd/benchreport ]; then $(GO) run ./cmd/benchreport; \
	  else $(GO) test -run '^$$' -bench . -benchmem -count 5 ./alloc/... ; fi

demo: all
	@if [ -x scripts/demo.sh ]; then scripts/demo.sh; else echo "demo not built yet"; exit 1; fi

verify: all
	@if [ -x scripts/verify.sh ]; then scripts/verify.sh; else echo "verify not built yet"; exit 1; fi

install: all $(INSTALL_TARGETS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/secretheap $(DESTDIR)$(PREFIX)/bin/secretheap

generate:
	cd alloc && $(GO) run mksizeclasses.go

clean:
	rm -rf $(BUILD)
