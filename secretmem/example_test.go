package secretmem_test

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/secretheap/secretheap/secretmem"
)

// Probe tells whether memfd_secret works here and, if not, why and what to do.
func ExampleProbe() {
	if err := secretmem.Probe(); err != nil {
		var pe *secretmem.ProbeError
		if errors.As(err, &pe) {
			fmt.Println(pe.Reason)
			fmt.Println("fix:", pe.Fix)
		}
		return
	}
	fmt.Println("memfd_secret works")
	// Output: memfd_secret works
}

// Map a region inside a reservation, commit an OS page, use it, close it.
func ExampleMapAt() {
	res, err := secretmem.Reserve(4<<20, 2<<20) // address space only: no memory, no memlock
	if err != nil {
		panic(err)
	}
	defer res.Release()
	r, err := secretmem.MapAt(res.Base(), 64<<10, secretmem.PolicyAuto)
	if err != nil {
		panic(err) // errors.Is(err, secretmem.ErrMemlock): raise RLIMIT_MEMLOCK
	}
	if err := r.Commit(0, 1); err != nil {
		panic(err)
	}
	b := unsafe.Slice((*byte)(r.Base()), 16)
	copy(b, "secret")
	fmt.Println(r.Size(), r.Committed(), string(b[:6]))
	if err := r.Close(); err != nil { // wiped, then PROT_NONE again
		panic(err)
	}
	// Output: 65536 4096 secret
}
