package preload

import (
	_ "unsafe" // go:linkname

	"github.com/secretheap/secretheap/alloc"
)

// goHeapCheck is the Go heap's invariant checker, (*alloc.Heap).checkInvariants.
// alloc exports it to its own tests only (export_test.go), and the
// differential test must run it after every step, so it is reached by
// linkname. If alloc grows an exported checker, call that instead.
//
//go:linkname goHeapCheck github.com/secretheap/secretheap/alloc.(*Heap).checkInvariants
func goHeapCheck(h *alloc.Heap) error
