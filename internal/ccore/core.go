package ccore

/*
#cgo CFLAGS: -std=c11 -D_GNU_SOURCE -O2 -g -I${SRCDIR}/../../cshim
#cgo LDFLAGS: -lpthread
#include <errno.h>
#include <stdint.h>
#include "internal.h"

// sh_go_in_arena reports whether p lies in the core's arena: the binding's
// test for "ours" before it lets secretheap_free or secretheap_realloc see a
// pointer. Outside the arena they would hand it to libc free, which for a
// Go-heap slice corrupts the process; inside, the core judges it (and aborts
// on a double free even of a released region, as C callers see).
static int sh_go_in_arena(const void *p) { return sh_in_arena((uintptr_t)p); }
*/
import "C"

import (
	"fmt"
	"reflect"
	"syscall"
	"unsafe"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/stats"
	"github.com/secretheap/secretheap/secretmem"
)

// The C core is compiled into this package from cshim's own sources: one
// core_<file>.c per file of CSHIM_CORE in cshim/cshim.mk, each a single
// #include of ../../cshim/<file>.c, so every file stays its own translation
// unit (their static names may collide) and `go test ./...` needs no `make`.
// preload/openssl.c is left out: the OpenSSL hooks and the library
// constructor belong to libsecretheap.so only, so the binding initialises
// lazily, on the first call, and never touches OpenSSL.
//
// cmd/go hashes only the files in a package's own directory, so an edit in
// cshim/ alone would not rebuild this package (the #include is invisible to
// it) and tests would run a stale core. coresum.go therefore holds a digest
// of cshim's sources and headers: when cshim/ changes, TestBindingSources
// fails until the digest is regenerated (`make generate`, which runs that
// test with -update), and the new coresum.go changes this package's hash, so
// cmd/go rebuilds it. (The symlinks that did this before are gone: no file
// in the tree is a symlink.)

// The binding's errors are alloc's sentinels, so errors.Is reads the same on
// an error from either heap (the conformance suite relies on it).
var (
	// ErrTooLarge (alloc.ErrTooLarge) is returned by Alloc and Realloc for
	// n <= 0 or an n the core cannot serve at all.
	ErrTooLarge = alloc.ErrTooLarge
	// ErrExhausted (alloc.ErrExhausted) is returned when the C core has no
	// secret memory left: it returned NULL (SECRETHEAP_ON_EXHAUSTED=null) or
	// fell back to libc memory (=fallback, the default), which the binding
	// never hands out.
	ErrExhausted = alloc.ErrExhausted
	// ErrForeign (alloc.ErrForeign) is returned by Free and Realloc for a
	// slice outside the C core's arena (e.g. on the Go heap). The C API would
	// hand such a pointer to libc free; the binding refuses instead.
	ErrForeign = alloc.ErrForeign
)

// CHeap is the C core's heap. There is one per process (the C core keeps its
// state in globals), shared with any C code in the process that calls
// secretheap_*; Core returns it. Its methods are safe for concurrent use.
//
// Misuse inside a chunk — freeing a block twice, or a slice that starts
// inside a block — makes the C core print a message naming it
// ("secretheap: double free of 0x… (class 48 B)") and abort the process,
// where the Go heap panics with an *alloc.MisuseError.
type CHeap struct{}

// core is the process's only CHeap.
var core = &CHeap{}

// Core returns the process-wide C heap.
func Core() *CHeap { return core }

// maxAlloc bounds one request: past it the core could never map the block
// (its arena is 64 GiB of address space), and the conversion to size_t is
// safe on every platform Go supports.
const maxAlloc = 1 << 40

// Alloc returns a zeroed block of len and cap n from secret memory, at least
// 16-byte aligned. n <= 0 gives ErrTooLarge; an exhausted heap gives an error
// wrapping ErrExhausted and the errno.
func (*CHeap) Alloc(n int) ([]byte, error) {
	if n <= 0 || n > maxAlloc {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	p, err := C.secretheap_malloc(C.size_t(n))
	return checkNew(p, err, n, 0)
}

// checkNew turns a pointer from secretheap_malloc or _realloc into a slice,
// refusing NULL and blocks that are not secret memory (fallback-pool blocks). A
// refused fallback block is freed after wiping its first wipe bytes: those
// a realloc copied there; a fresh block holds nothing of the caller's.
func checkNew(p unsafe.Pointer, err error, n, wipe int) ([]byte, error) {
	if p == nil {
		if err == nil {
			err = syscall.ENOMEM
		}
		return nil, fmt.Errorf("%w: %d bytes: %w", ErrExhausted, n, err)
	}
	if be := C.secretheap_backend(p); be != C.SECRETHEAP_BACKEND_SECRET && be != C.SECRETHEAP_BACKEND_LOCKED {
		// SECRETHEAP_ON_EXHAUSTED=fallback gave us a block of the
		// fallback pool, ordinary memory. Go callers must never hold
		// unprotected memory: wipe and free it.
		C.explicit_bzero(p, C.size_t(min(n, wipe)))
		C.secretheap_free(p)
		return nil, fmt.Errorf("%w: %d bytes: the C core fell back to ordinary memory", ErrExhausted, n)
	}
	return unsafe.Slice((*byte)(p), n), nil
}

// Free wipes the block b starts at and returns it to the C heap. A nil slice
// is ignored, as free(NULL) is. A slice outside the
// core's arena gives ErrForeign and is not touched. A double free or a slice
// starting inside a block aborts the process (see CHeap).
func (*CHeap) Free(b []byte) error {
	p := unsafe.Pointer(unsafe.SliceData(b))
	if p == nil {
		return nil
	}
	if C.sh_go_in_arena(p) == 0 {
		return ErrForeign
	}
	C.secretheap_free(p)
	return nil
}

// Realloc resizes the block b starts at to n bytes, as secretheap_realloc
// does: the first min(len(b), n) bytes are kept, the rest is zero, and a
// moved block's old bytes are wiped. A nil b allocates. n <= 0 gives
// ErrTooLarge (the C call would free b); a foreign b gives ErrForeign. Both
// leave b untouched.
//
// When the heap is exhausted the result depends on SECRETHEAP_ON_EXHAUSTED:
// with null, b is untouched and the error wraps ErrExhausted, as C's realloc
// promises; with fallback (the default) the core has already moved the bytes
// into the fallback pool and freed b, so the binding wipes that copy, frees it,
// and returns ErrExhausted — b's contents are lost, but never left in
// unprotected memory.
func (h *CHeap) Realloc(b []byte, n int) ([]byte, error) {
	p := unsafe.Pointer(unsafe.SliceData(b))
	if p == nil {
		return h.Alloc(n)
	}
	if n <= 0 || n > maxAlloc {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	if C.sh_go_in_arena(p) == 0 {
		return nil, ErrForeign
	}
	// realloc copies up to the old block's usable size.
	old := int(C.secretheap_usable_size(p))
	q, err := C.secretheap_realloc(p, C.size_t(n))
	return checkNew(q, err, n, old)
}

// Backend reports whether b lies inside a live block of the C heap (its first
// and its last byte are in live blocks), and which backend holds it. An empty
// slice is in no block.
func (*CHeap) Backend(b []byte) (secretmem.Backend, bool) {
	if len(b) == 0 {
		return secretmem.BackendNone, false
	}
	first := unsafe.Pointer(unsafe.SliceData(b))
	last := unsafe.Add(first, len(b)-1)
	be := C.secretheap_backend(first)
	if (be != C.SECRETHEAP_BACKEND_SECRET && be != C.SECRETHEAP_BACKEND_LOCKED) || C.secretheap_backend(last) != be {
		return secretmem.BackendNone, false
	}
	return secretmem.Backend(be), true
}

// UsableSize returns the usable bytes of the live block b starts at (its
// size class, or its OS pages for larger blocks), 0 if b does not start a
// live block. The bytes past len(b) up to the usable size are the caller's
// to use, as with malloc_usable_size.
func (*CHeap) UsableSize(b []byte) int {
	p := unsafe.Pointer(unsafe.SliceData(b))
	if p == nil {
		return 0
	}
	return int(C.secretheap_usable_size(p))
}

// Check runs the C core's invariant checker (secretheap_check): nil if every
// slab and chunk invariant holds, else an error (the core has also printed
// the details on stderr). Exact only while no other thread allocates.
func (*CHeap) Check() error {
	if rc, err := C.secretheap_check(); rc != 0 {
		if err == nil {
			err = syscall.Errno(rc)
		}
		return fmt.Errorf("secretheap_check: C core invariants broken (details on stderr): %w", err)
	}
	return nil
}

// Version returns the C core's version string.
func (*CHeap) Version() string { return C.GoString(C.secretheap_version()) }

// OpenSSLHook says whether OpenSSL's allocator is the C core (only ever set
// inside libsecretheap.so; the binding never hooks OpenSSL).
type OpenSSLHook uint64

// The states of the OpenSSL hook, as struct secretheap_stats reports them.
const (
	OpenSSLNotHooked OpenSSLHook = 0 // no hook installed (always so for the binding)
	OpenSSLHooked    OpenSSLHook = 1 // CRYPTO_set_mem_functions accepted ours
	OpenSSLRefused   OpenSSLHook = 2 // OpenSSL had already allocated and refused
)

// Stats is a snapshot of struct secretheap_stats: alloc.Stats, whose fields
// have the same meanings (those the C core has no counterpart for, ShardCount
// and HeapClosed, stay zero), and what only the C core reports.
type Stats struct {
	alloc.Stats

	// Backend of the last chunk mapped; BackendNone before the first.
	Backend       secretmem.Backend
	OpenSSL       OpenSSLHook // state of the OpenSSL hook
	FallbackBytes uint64      // bytes of live fallback-pool blocks
}

// Stats returns a snapshot of the C heap's statistics. struct
// secretheap_stats is the stats table's C rows in order, every member a
// uint64 and classes[] after stats.ClassesAfter (cshim/stats_table.h
// asserts it at compile time), so the values are copied by the table into
// the alloc.Stats fields of the same rows: no field list of its own here.
func (*CHeap) Stats() (Stats, error) {
	var cs C.struct_secretheap_stats
	if rc := C.secretheap_stats(&cs, C.size_t(unsafe.Sizeof(cs))); rc != 0 {
		return Stats{}, fmt.Errorf("secretheap_stats: %w", syscall.Errno(rc))
	}
	raw := unsafe.Slice((*uint64)(unsafe.Pointer(&cs)), unsafe.Sizeof(cs)/8)
	s := Stats{Stats: alloc.Stats{Classes: make([]alloc.ClassStats, stats.NumClasses)}}
	dst := reflect.ValueOf(&s.Stats).Elem()
	byKey := make(map[string]uint64)
	i := 0
	for _, f := range stats.Fields {
		if !f.C {
			continue
		}
		byKey[f.Key] = raw[i]
		setStat(dst, f.Go, raw[i])
		i++
		if f.Key == stats.ClassesAfter {
			for c := range s.Classes {
				cls := reflect.ValueOf(&s.Classes[c]).Elem()
				for _, cf := range stats.ClassFields {
					setStat(cls, cf.Go, raw[i])
					i++
				}
			}
		}
	}
	s.Backend = secretmem.Backend(byKey["backend"])
	s.OpenSSL = OpenSSLHook(byKey["openssl_hooked"])
	s.FallbackBytes = byKey["fallback_bytes"]
	return s, nil
}

// setStat sets the field named name ("" for none) of the struct v to n
// (a bool field to n != 0).
func setStat(v reflect.Value, name string, n uint64) {
	if name == "" {
		return
	}
	f := v.FieldByName(name)
	if f.Kind() == reflect.Bool {
		f.SetBool(n != 0)
		return
	}
	f.SetUint(n)
}
