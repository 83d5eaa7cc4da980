// Package ccore is the C core (cshim/) bound for Go tests: a cgo binding
// that lets the conformance suite and the differential fuzzer run the C heap
// next to the Go one. Nothing but tests imports it; Go programs use package
// alloc, C programs libsecretheap (cshim/include/secretheap.h, preload/).
//
// Core returns the process's one C heap (*CHeap): Alloc, Free, Realloc,
// Backend, UsableSize, Stats and Check call secretheap_malloc, _free,
// _realloc, _backend, _usable_size, _stats and _check. The core is compiled
// into this package from cshim's own sources (see core.go), so `go test
// ./...` works on a fresh clone without `make`, and the binding never loads
// OpenSSL: preload/openssl.c belongs to libsecretheap.so only.
//
// The binding gives the C heap the Go heap's contract where the two differ
// (listed in internal/conformance): Alloc(n <= 0) is an error, a slice
// outside the core's arena is ErrForeign instead of going to libc free, and
// libc memory the core falls back to on exhaustion is never handed to Go
// (ErrExhausted). Misuse inside the arena — a double free, a slice starting
// inside a block — still aborts the process with the core's message, as it
// would in C.
//
// # Tests
//
// This package runs the shared conformance suite (internal/conformance) on
// the C core; alloc runs it on the Go heap. FuzzDifferential and
// TestDifferentialRandom feed one operation sequence to both heaps and
// compare what a caller sees, with both invariant checkers after every step:
//
//	go test -run '^$' -fuzz FuzzDifferential -fuzztime 60s ./internal/ccore
//
// SECRETHEAP_DIFF_OPS sets the length of the random sequences. The
// differences it has found so far: C's realloc showed a block's old bytes
// after an in-place shrink and grow (fixed; the seed realloc-shrink-grow
// keeps it fixed).
package ccore
