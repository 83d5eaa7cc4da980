# cshim.mk — the C core: libsecretheap.a, its unit tests, the installed header.
# Included by the root Makefile, which defines CC, CFLAGS_COMMON, BUILD, PREFIX.
# The LD_PRELOAD library (build/libsecretheap.so) is preload/preload.mk's.
#
#   build/libsecretheap.a    core only, for C programs linking it statically
#   c-test                   C unit tests (cshim/tests/*.c)
#   c-test-asan              the same under ASan + UBSan
#   c-test-tsan              the same under TSan
#   c-install                library, header, pkg-config file under $(DESTDIR)$(PREFIX)

CSHIM_CORE   := cshim/init.c cshim/secretmem.c cshim/pmdcache.c cshim/heap.c cshim/check.c cshim/fallback.c cshim/options.c cshim/stats.c cshim/fork.c
# The installed (public) header; internal.h includes it by this path.
CSHIM_PUBLIC := cshim/include/secretheap.h
CSHIM_HDRS   := $(wildcard cshim/*.h) $(CSHIM_PUBLIC)
CSHIM_CFLAGS := $(CFLAGS_COMMON) -fPIC -fvisibility=hidden -pthread
CSHIM_OBJDIR := $(BUILD)/cshim
CSHIM_OBJS   := $(patsubst cshim/%.c,$(CSHIM_OBJDIR)/%.o,$(CSHIM_CORE))
CSHIM_TESTS  := $(notdir $(basename $(wildcard cshim/tests/test_*.c)))
CSHIM_VERSION := $(shell sed -n 's/^\#define SECRETHEAP_VERSION "\(.*\)"/\1/p' $(CSHIM_PUBLIC))

BUILD_TARGETS   += $(BUILD)/libsecretheap.a
TEST_TARGETS    += c-test c-test-asan c-test-tsan
INSTALL_TARGETS += c-install

.PHONY: c-test c-test-asan c-test-tsan c-install

$(CSHIM_OBJDIR)/%.o: cshim/%.c $(CSHIM_HDRS)
	@mkdir -p $(CSHIM_OBJDIR)
	$(CC) $(CSHIM_CFLAGS) -c -o $@ $<

$(BUILD)/libsecretheap.a: $(CSHIM_OBJS)
	@rm -f $@
	ar rcs $@ $^

# Tests compile the core with the test's own flags, so sanitizer builds
# instrument the allocator too; they may call internal (hidden) functions.
CSHIM_TEST_SRC := $(CSHIM_CORE) cshim/tests/harness.c
, := ,

define cshim_test_build
$(BUILD)/$(1)/%: cshim/tests/%.c $(CSHIM_TEST_SRC) $(CSHIM_HDRS) cshim/tests/harness.h
	@mkdir -p $(BUILD)/$(1)
	$$(CC) $(CFLAGS_COMMON) $(2) -pthread -Icshim -o $$@ $$< $(CSHIM_TEST_SRC) -pthread
endef
$(eval $(call cshim_test_build,cshim-test,))
$(eval $(call cshim_test_build,cshim-test-asan,-O1 -g -fsanitize=address$(,)undefined -fno-sanitize-recover=all -fno-omit-frame-pointer))
$(eval $(call cshim_test_build,cshim-test-tsan,-O1 -g -fsanitize=thread -fno-omit-frame-pointer -DSTRESS_OPS=5000))

# Runs every test binary in $(1); each prints "N passed, N failed" last.
define cshim_test_run
	@pass=0; fail=0; bad=0; \
	for t in $(CSHIM_TESTS); do \
	  echo "== $(1)/$$t"; \
	  $(2) $(BUILD)/$(1)/$$t > $(BUILD)/$(1)/$$t.log 2>&1; rc=$$?; \
	  cat $(BUILD)/$(1)/$$t.log; \
	  line=$$(grep -E '^[0-9]+ passed, [0-9]+ failed$$' $(BUILD)/$(1)/$$t.log | tail -1); \
	  if [ -z "$$line" ]; then echo "$$t: no result line (exit $$rc)"; bad=1; fail=$$((fail+1)); continue; fi; \
	  pass=$$((pass + $$(echo $$line | cut -d' ' -f1))); fail=$$((fail + $$(echo $$line | cut -d' ' -f3))); \
	  if [ $$rc -ne 0 ]; then bad=1; fi; \
	done; \
	echo "$(1): $$pass passed, $$fail failed"; \
	[ $$bad -eq 0 ] && [ $$fail -eq 0 ]
endef


c-test: $(addprefix $(BUILD)/cshim-test/,$(CSHIM_TESTS))
	$(call cshim_test_run,cshim-test,)

c-test-asan: $(addprefix $(BUILD)/cshim-test-asan/,$(CSHIM_TESTS))
	$(call cshim_test_run,cshim-test-asan,ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1)

c-test-tsan: $(addprefix $(BUILD)/cshim-test-tsan/,$(CSHIM_TESTS))
	$(call cshim_test_run,cshim-test-tsan,TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1)

# The pkg-config file holds PREFIX: a stamp holding the PREFIX it was made
# for is rewritten (while make reads this file) whenever PREFIX changes, so
# `make install PREFIX=…` never installs a file naming an old prefix.
CSHIM_PREFIX_STAMP := $(BUILD)/secretheap.pc.prefix
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(CSHIM_PREFIX_STAMP) 2>/dev/null)" = '$(PREFIX)' ] || printf '%s\n' '$(PREFIX)' > $(CSHIM_PREFIX_STAMP); })

$(BUILD)/secretheap.pc: cshim/secretheap.pc.in $(CSHIM_PUBLIC) $(CSHIM_PREFIX_STAMP)
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(CSHIM_VERSION)|' $< > $@

c-install: $(BUILD)/libsecretheap.so $(BUILD)/libsecretheap.a $(BUILD)/secretheap.pc
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(BUILD)/libsecretheap.so $(DESTDIR)$(PREFIX)/lib/libsecretheap.so
	install -m 0644 $(BUILD)/libsecretheap.a $(DESTDIR)$(PREFIX)/lib/libsecretheap.a
	install -m 0644 $(CSHIM_PUBLIC) $(DESTDIR)$(PREFIX)/include/secretheap.h
	install -m 0644 $(BUILD)/secretheap.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/secretheap.pc

# test_openssl.c includes the preload library's OpenSSL hooks (preload/openssl.c).
$(BUILD)/cshim-test/test_openssl $(BUILD)/cshim-test-asan/test_openssl $(BUILD)/cshim-test-tsan/test_openssl: preload/openssl.c
