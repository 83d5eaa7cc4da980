# secretheap — build, test and measure the Go allocator, the C core and the
# LD_PRELOAD library.
#
# Targets
#   make              build the Go packages, the secretheap CLI and build/libsecretheap.so
#   make lint         clang-format (.clang-format) on every C file, gofmt, go vet, staticcheck
#   make format       rewrite the C files in the .clang-format style
#   make test         every test: make lint, go test -race (and again with
#                     GOEXPERIMENT=runtimesecret for alloc/... and the Go keys scan), C unit tests,
#                     the C tests again under ASan/UBSan and TSan, short fuzz runs, the soak
#   make bench        benchmark suites, written to docs/benchmarks/ (cmd/benchreport, a Go
#                     module of its own: its plotting dependencies are not the main module's)
#   make demo         TLS server with and without the library, and an outside read of its key
#                     (builds only build/secretheap and the library)
#   make verify       the attack suite: every attack against protected and unprotected targets
#   make install      library, header, pkg-config file and the secretheap command under $(PREFIX)
#   make vmtest       the kernel matrix: Debian kernels under QEMU, the project run inside each
#   make fuzz-short   libFuzzer on the C core + go test -fuzz targets, briefly (fuzz-c for 10 min)
#   make soak         threads and forks allocating and verifying for 20 s
#   make openssl-suite  OpenSSL's own test suite with and without the library (opensslsuite/)
#   make generate     regenerate the size-class tables (alloc/sizeclasses.go, cshim/sizeclasses.h),
#                     the C options table and struct (cshim/options_table.h, cshim/options.h, from
#                     internal/options), the C stats member lists (cshim/stats_table.h, from
#                     internal/stats) and the digest of cshim/ that makes cmd/go rebuild
#                     internal/ccore (internal/ccore/coresum.go)
#   make clean
#
# Knobs
#   CC=gcc            C compiler for the core and the library
#   GO=go             Go toolchain
#   PREFIX=/usr/local install prefix (DESTDIR is honoured too)
#   DEBUG=1           build C with -O0 -g and assertions
#   SECRETHEAP_REQUIRE=1  tests fail (instead of skipping) where memfd_secret is missing
#   BENCH_ARGS=-quick     arguments of cmd/benchreport for make bench (-quick, -only a,b, …)
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

# `make` alone builds everything (the fragments' rules come first otherwise).
.DEFAULT_GOAL := all

# Fragments append their targets to these lists.
BUILD_TARGETS   :=
TEST_TARGETS    :=
BENCH_TARGETS   :=
INSTALL_TARGETS :=

include cshim/cshim.mk
include preload/preload.mk
include examples/openssl/openssl.mk
include fuzz/fuzz.mk
include verify/verify.mk
include opensslsuite/opensslsuite.mk
include vmtest/vmtest.mk

# make test also runs the short fuzz runs (C libFuzzer 30 s, each Go fuzz
# target 20 s) and the 20 s soak of threads and forks: about 2 minutes.
TEST_TARGETS += fuzz-short soak

# Prerequisites are checked before anything is built (scripts/prereq.sh,
# under a second): a missing tool stops make at once, naming the package to
# install, instead of failing minutes into `make test`. PREREQ=0 skips it.
PREREQ_FOR := $(sort $(foreach g,$(or $(MAKECMDGOALS),all),\
  $(if $(filter all go-build cli install,$(g)),build)\
  $(if $(filter test go-test c-test% fuzz% soak%,$(g)),test)\
  $(if $(filter test lint c-lint go-lint format,$(g)),lint)\
  $(if $(filter bench,$(g)),bench)\
  $(if $(filter demo,$(g)),build run)\
  $(if $(filter verify,$(g)),build verify)))
ifneq ($(PREREQ),0)
ifneq ($(PREREQ_FOR),)
PREREQ_STATUS := $(shell CC='$(CC)' FUZZ_CC='$(FUZZ_CC)' GO='$(GO)' scripts/prereq.sh $(PREREQ_FOR) >&2; echo $$?)
ifneq ($(PREREQ_STATUS),0)
$(error missing prerequisites (listed above); PREREQ=0 skips this check)
endif
endif
endif

.PHONY: all go-build cli test go-test lint c-lint go-lint format bench demo verify install generate clean

all: go-build $(BUILD_TARGETS)

go-build: cli
	$(GO) build ./...

# The secretheap command alone (what make demo needs of the Go side).
cli:
	@mkdir -p $(BUILD)
	$(GO) build -o $(BUILD)/secretheap ./cmd/secretheap

test: all lint go-test $(TEST_TARGETS)

# Go modules of the tree: the main one, and the benchmark report's (its
# plotting dependencies stay out of the main module: `make demo` and `go get`
# never fetch them). Lint and tests cover each.
GO_MODULES := . cmd/benchreport

lint: c-lint go-lint

# Every C file of the project (tracked, or new and not ignored) but the
# generated ones, whose first line says so.
C_LINT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null | \
  while read -r f; do [ -f "$$f" ] && ! head -1 "$$f" | grep -q 'Code generated' && echo "$$f"; done)
CLANG_FORMAT ?= clang-format

c-lint:
	@bad=$$(for f in $(C_LINT_FILES); do $(CLANG_FORMAT) --dry-run -Werror "$$f" >/dev/null 2>&1 || echo "$$f"; done); \
	  if [ -n "$$bad" ]; then echo "clang-format needed (make format):"; echo "$$bad"; exit 1; fi; \
	  echo "clang-format: $(words $(C_LINT_FILES)) C files clean"

format:
	$(CLANG_FORMAT) -i $(C_LINT_FILES)

go-lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@sc=$$(command -v staticcheck || echo "$$($(GO) env GOPATH)/bin/staticcheck"); \
	for m in $(GO_MODULES); do \
	  echo "go vet ($$m)"; (cd $$m && $(GO) vet ./...) || exit 1; \
	  echo "staticcheck ($$m)"; (cd $$m && "$$sc" ./...) || exit 1; \
	done
	GOEXPERIMENT=runtimesecret $(GO) vet ./alloc/... ./verify/...

# The Go packages again built with GOEXPERIMENT=runtimesecret (Go 1.26+, no
# other toolchain): Secret.Do then runs f under runtime/secret.Do, and
# TestGoKeysOutsideScan asserts that no copy of the keys or of what the
# crypto derives from them is left.
go-test:
	@for m in $(GO_MODULES); do (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; done
	GOEXPERIMENT=runtimesecret $(GO) test -race -count=1 ./alloc/...
	GOEXPERIMENT=runtimesecret $(GO) test -race -count=1 -run GoKeys ./verify

bench: all $(BENCH_TARGETS)
	cd cmd/benchreport && $(GO) build -o $(CURDIR)/$(BUILD)/benchreport .
	$(BUILD)/benchreport $(BENCH_ARGS)

# The demo needs the command and the library only: it builds just those, so
# that a first `make demo` is quick.
demo: cli $(BUILD)/libsecretheap.so
	scripts/demo.sh

verify: all
	scripts/verify.sh

install: all $(INSTALL_TARGETS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/secretheap $(DESTDIR)$(PREFIX)/bin/secretheap

generate:
	cd alloc && $(GO) run mksizeclasses.go
	cd internal/options && $(GO) run mkoptions.go
	cd internal/stats && $(GO) run mkstats.go
	$(GO) test -count=1 -run '^TestBindingSources$$' ./internal/ccore -update

clean:
	rm -rf $(BUILD)
