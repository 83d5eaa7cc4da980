# fuzz/fuzz.mk — fuzzing and soak of the allocator. Included by the root Makefile.
#
#   fuzz-c-short   libFuzzer + ASan + UBSan on the C core's public API (fuzz/heap_fuzz.c),
#                  FUZZ_C_TIME seconds (default 30), seeded from the committed corpus
#                  fuzz/corpus/heap; new inputs go to build/fuzz/corpus (not the repo)
#   fuzz-c         the same for FUZZ_C_TIME=600
#   fuzz-c-merge   minimise build/fuzz/corpus into the committed corpus
#   fuzz-go-short  each Go fuzz target (FuzzHeapOps in alloc, FuzzDifferential in
#                  internal/ccore) through fuzz/go-fuzz.sh: its seed corpus as a test, then
#                  FUZZ_GO_TIME (default 20s) of fuzzing, retried only on the coordinator's
#                  "context deadline exceeded" (never on a crash)
#   fuzz-short     fuzz-c-short + fuzz-go-short
#   soak           soak/soak.c: threads and forked processes allocate, verify, free for
#                  SECRETHEAP_SOAK_SECONDS (default 20), invariant checker on; the core is
#                  built with ASan+UBSan (SOAK_SAN=0 for a plain -O2 build)
#   soak-tsan      the same under TSan, 10 s
#
# Knobs: FUZZ_CC (default clang), FUZZ_C_TIME, FUZZ_GO_TIME, SECRETHEAP_SOAK_SECONDS,
# SOAK_ARGS (e.g. "-threads 8 -procs 4").

FUZZ_CC      ?= clang
FUZZ_C_TIME  ?= 30
FUZZ_GO_TIME ?= 20s
SOAK_SAN     ?= 1
SOAK_ARGS    ?=
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread

.PHONY: fuzz-c-short fuzz-c fuzz-c-merge fuzz-go-short fuzz-short soak soak-tsan

$(BUILD)/fuzz/heap_fuzz: fuzz/heap_fuzz.c fuzz/coverage-ignore.txt $(CSHIM_CORE) $(CSHIM_HDRS) fuzz/fuzz.mk
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize-coverage-ignorelist=fuzz/coverage-ignore.txt -Icshim \
	  -o $@ fuzz/heap_fuzz.c $(CSHIM_CORE) -pthread

# The committed corpus is read only here: libFuzzer writes what it finds to the
# first directory, which lives under build/.
fuzz-c-short: $(BUILD)/fuzz/heap_fuzz
	@mkdir -p $(BUILD)/fuzz/corpus
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(BUILD)/fuzz/heap_fuzz -max_total_time=$(FUZZ_C_TIME) -max_len=4096 -timeout=20 \
	  -rss_limit_mb=4096 -print_final_stats=1 $(BUILD)/fuzz/corpus fuzz/corpus/heap

fuzz-c:
	$(MAKE) fuzz-c-short FUZZ_C_TIME=600

fuzz-c-merge: $(BUILD)/fuzz/heap_fuzz
	$(BUILD)/fuzz/heap_fuzz -merge=1 -max_len=4096 fuzz/corpus/heap $(BUILD)/fuzz/corpus

fuzz-go-short:
	GO=$(GO) fuzz/go-fuzz.sh ./alloc FuzzHeapOps $(FUZZ_GO_TIME)
	GO=$(GO) fuzz/go-fuzz.sh ./internal/ccore FuzzDifferential $(FUZZ_GO_TIME)

fuzz-short: fuzz-c-short fuzz-go-short

ifeq ($(SOAK_SAN),1)
SOAK_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else
SOAK_CFLAGS :=
endif

$(BUILD)/soak/soak: soak/soak.c $(CSHIM_CORE) $(CSHIM_HDRS) fuzz/fuzz.mk
	@mkdir -p $(BUILD)/soak
	$(CC) $(CFLAGS_COMMON) $(SOAK_CFLAGS) -pthread -Icshim -o $@ soak/soak.c $(CSHIM_CORE) -pthread

$(BUILD)/soak/soak-tsan: soak/soak.c $(CSHIM_CORE) $(CSHIM_HDRS) fuzz/fuzz.mk
	@mkdir -p $(BUILD)/soak
	$(CC) $(CFLAGS_COMMON) -O1 -g -fsanitize=thread -DSH_ARENA_SIZE='((size_t)4<<30)' -pthread -Icshim \
	  -o $@ soak/soak.c $(CSHIM_CORE) -pthread

soak: $(BUILD)/soak/soak
	ASAN_OPTIONS=detect_leaks=0 $(BUILD)/soak/soak $(SOAK_ARGS)

soak-tsan: $(BUILD)/soak/soak-tsan
	TSAN_OPTIONS=halt_on_error=1 SECRETHEAP_SOAK_SECONDS=$${SECRETHEAP_SOAK_SECONDS:-10} \
	  $(BUILD)/soak/soak-tsan -threads 3 -procs 1 $(SOAK_ARGS)
