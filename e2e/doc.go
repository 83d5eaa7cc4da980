// Package e2e drives real programs with libsecretheap.so preloaded: the
// openssl command (genpkey, pkey -check, s_server and s_client TLS 1.3
// handshakes), the pre-forking example server (examples/openssl), a program
// that dlopen()s libcrypto after start the way Python's ssl module does, and
// unprivileged children under small RLIMIT_MEMLOCK limits, and the edges of
// interposition (interpose_test.go): a static host loading a dynamic engine
// (two libcryptos), OSSL_PARAM_BLD copies of private keys, CRYPTO_set_mem_functions
// through dlsym, dlclose of the library, a libcrypto loaded again, dlopen by
// $ORIGIN, libc free of a block of ours, and a process that never loads
// OpenSSL (no arena reserved). TestMemlockKeyCopies reads an unprivileged
// s_server's memory from outside under a 64 KiB memlock limit and counts
// the copies of its key and TLS secrets, with the library and without. Each
// other test reads
// the library's statistics (SECRETHEAP_STATS=json:<file>, read with
// internal/stats) to check that OpenSSL's
// allocations were served from secret memory, and each has a control run
// (without the library, or with SECRETHEAP_OPENSSL=off) showing that the
// check can fail.
//
// The package has no non-test code. It needs `make` first (build/
// libsecretheap.so and build/tls_server); without them the tests skip, or
// fail under SECRETHEAP_REQUIRE=1. SECRETHEAP_E2E_LIBRARY=<path> runs them
// against another build of the library (e.g. an older commit's).
package e2e
