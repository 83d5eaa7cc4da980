// Command probe measures, in a fresh process, what a Go benchmark loop
// cannot: the first allocation (package state cold), and the memory locked
// per 32-byte secret. cmd/benchreport runs it once per measurement.
//
//	probe first  make|memguard|alloc      → {"kind":"first","backend":...,"first_ns":N}
//	probe locked make|memguard|alloc N    → {"kind":"locked",...,"bytes_per_secret":B}
//
// alloc uses the default heap (alloc.Default, configured from SECRETHEAP_*),
// as a program would; its first allocation builds the heap. Exit status 3:
// the allocator did not give what it claims (alloc: not memfd_secret).
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/awnumar/memguard"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/secretmem"
)

func die(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "probe: "+format+"\n", args...)
	os.Exit(code)
}

// vmlckKB reads VmLck from /proc/self/status.
func vmlckKB() int64 {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		die(2, "%v", err)
	}
	n, err := procfs.StatusKB(st, "VmLck")
	if err != nil {
		die(2, "%v in /proc/self/status", err)
	}
	return int64(n >> 10)
}

// allocator returns allocate and free functions for a backend.
func allocator(name string) (func(n int) any, func(any)) {
	switch name {
	case "make":
		// Boxed in an interface, the slice escapes: a real heap allocation.
		return func(n int) any { return make([]byte, n) }, func(any) {}
	case "memguard":
		return func(n int) any { return memguard.NewBuffer(n) },
			func(x any) { x.(*memguard.LockedBuffer).Destroy() }
	case "alloc":
		return func(n int) any {
				h, err := alloc.Default()
				if err != nil {
					die(2, "alloc.Default: %v", err)
				}
				b, err := h.Alloc(n)
				if err != nil {
					die(2, "Alloc: %v", err)
				}
				return b
			}, func(x any) {
				h, _ := alloc.Default()
				if err := h.Free(x.([]byte)); err != nil {
					die(2, "Free: %v", err)
				}
			}
	}
	die(2, "unknown backend %q", name)
	return nil, nil
}

// check is the self-check: alloc's blocks must be memfd_secret memory.
func check(name string, x any) {
	if name != "alloc" {
		return
	}
	h, _ := alloc.Default()
	be, ok := h.Backend(x.([]byte))
	if !ok || be != secretmem.BackendSecret {
		die(3, "alloc block is not memfd_secret memory (backend %v, live %v)", be, ok)
	}
}

func main() {
	if len(os.Args) < 3 {
		die(2, "usage: probe first|locked BACKEND [N]")
	}
	name := os.Args[2]
	get, put := allocator(name)
	switch os.Args[1] {
	case "first":
		t0 := time.Now()
		x := get(32)
		d := time.Since(t0)
		check(name, x)
		put(x)
		fmt.Printf("{\"kind\":\"first\",\"backend\":%q,\"first_ns\":%d}\n", name, d.Nanoseconds())
	case "locked":
		n := 10000
		if len(os.Args) > 3 {
			n, _ = strconv.Atoi(os.Args[3])
		}
		base := vmlckKB()
		xs := make([]any, n)
		for i := range xs {
			xs[i] = get(32)
		}
		check(name, xs[0])
		after := vmlckKB()
		for _, x := range xs {
			put(x)
		}
		fmt.Printf("{\"kind\":\"locked\",\"backend\":%q,\"n\":%d,\"vmlck_base_kb\":%d,\"vmlck_after_kb\":%d,\"bytes_per_secret\":%.1f}\n",
			name, n, base, after, float64(after-base)*1024/float64(n))
	default:
		die(2, "unknown command %q", os.Args[1])
	}
}
