package ccore

import (
	"testing"

	"github.com/secretheap/secretheap/internal/conformance"
	"github.com/secretheap/secretheap/secretmem"
)

// cAllocator adapts the C heap to the conformance suite.
type cAllocator struct {
	t *testing.T
	h *CHeap
}

func (a cAllocator) Alloc(n int) ([]byte, error)                { return a.h.Alloc(n) }
func (a cAllocator) Free(b []byte) error                        { return a.h.Free(b) }
func (a cAllocator) Backend(b []byte) (secretmem.Backend, bool) { return a.h.Backend(b) }
func (a cAllocator) UsableSize(b []byte) int                    { return a.h.UsableSize(b) }
func (a cAllocator) Check() error                               { return a.h.Check() }
func (a cAllocator) Stats() conformance.Stats {
	s, err := a.h.Stats()
	if err != nil {
		a.t.Fatalf("Stats: %v", err)
	}
	return conformance.Stats{LiveBlocks: s.LiveBlocks, RequestedBytes: s.RequestedBytes, ReservedBytes: s.ReservedBytes}
}

// TestConformance runs the shared suite against the C core. The heap is the
// process's one C heap, so every case gets the same allocator.
func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Allocator {
		return cAllocator{t: t, h: Core()}
	})
}
