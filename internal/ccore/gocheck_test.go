package ccore

import "github.com/secretheap/secretheap/alloc"

// goHeapCheck is the Go heap's invariant checker, run by the differential
// test after every step (differential_test.go calls it by this name).
func goHeapCheck(h *alloc.Heap) error { return h.Check() }
