package alloc_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/conformance"
	"github.com/secretheap/secretheap/secretmem"
)

// goAllocator adapts a Heap to the shared conformance suite
// (internal/conformance), which internal/ccore/conformance_test.go runs against
// the C core too.
type goAllocator struct{ h *alloc.Heap }

func (a goAllocator) Alloc(n int) ([]byte, error)                { return a.h.Alloc(n) }
func (a goAllocator) Free(b []byte) error                        { return a.h.Free(b) }
func (a goAllocator) Backend(b []byte) (secretmem.Backend, bool) { return a.h.Backend(b) }
func (a goAllocator) Check() error                               { return a.h.Check() }
func (a goAllocator) Stats() conformance.Stats {
	s := a.h.Stats()
	return conformance.Stats{LiveBlocks: s.LiveBlocks, RequestedBytes: s.RequestedBytes, ReservedBytes: s.ReservedBytes}
}

// TestConformance runs the shared suite against the Go heap, a fresh heap
// for every case.
func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Allocator {
		h, err := alloc.New(alloc.Config{})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, h.Close()) })
		return goAllocator{h}
	})
}
