# preload.mk — the LD_PRELOAD library, build/libsecretheap.so: the C core
# (cshim/) plus the OpenSSL hooks and the library's constructor
# (preload/openssl.c). It exports only the secretheap_* API and the
# interposed OpenSSL symbols (preload/libsecretheap.map, -fvisibility=hidden).
# Included by the root Makefile after cshim/cshim.mk (CSHIM_CORE, CSHIM_HDRS,
# CSHIM_CFLAGS).

PRELOAD_SRC := preload/openssl.c
PRELOAD_MAP := preload/libsecretheap.map

BUILD_TARGETS += $(BUILD)/libsecretheap.so

$(BUILD)/libsecretheap.so: $(CSHIM_CORE) $(PRELOAD_SRC) $(CSHIM_HDRS) $(PRELOAD_MAP) preload/preload.mk cshim/cshim.mk
	@mkdir -p $(BUILD)
	$(CC) $(CSHIM_CFLAGS) -Icshim -shared -Wl,--version-script=$(PRELOAD_MAP) \
	  -Wl,-soname,libsecretheap.so -Wl,-z,now -Wl,-z,relro -Wl,-z,nodelete -o $@ $(CSHIM_CORE) $(PRELOAD_SRC) -pthread -ldl
