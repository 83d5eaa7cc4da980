package conformance_test

import (
	"fmt"
	"regexp"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/conformance"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// goHeap adapts an alloc.Heap; the mutations below wrap it.
type goHeap struct{ h *alloc.Heap }

func (a goHeap) Alloc(n int) ([]byte, error)                { return a.h.Alloc(n) }
func (a goHeap) Free(b []byte) error                        { return a.h.Free(b) }
func (a goHeap) Backend(b []byte) (secretmem.Backend, bool) { return a.h.Backend(b) }
func (a goHeap) Check() error                               { return nil } // the mutations break it on purpose
func (a goHeap) Stats() conformance.Stats {
	s := a.h.Stats()
	return conformance.Stats{LiveBlocks: s.LiveBlocks, RequestedBytes: s.RequestedBytes, ReservedBytes: s.ReservedBytes}
}

// dirtyAlloc hands out blocks whose last byte is not zero.
type dirtyAlloc struct{ goHeap }

func (d dirtyAlloc) Alloc(n int) ([]byte, error) {
	b, err := d.goHeap.Alloc(n)
	if err == nil {
		b[n-1] = 0x5a
	}
	return b, err
}

// noWipe puts a freed block's bytes back, as an allocator without the wipe
// would leave them.
type noWipe struct{ goHeap }

func (d noWipe) Free(b []byte) error {
	saved := append([]byte(nil), b...)
	err := d.goHeap.Free(b)
	if err == nil && len(b) <= 32768 {
		copy(b, saved) // small blocks' slabs stay mapped
	}
	return err
}

// misaligned hands out blocks 8 bytes into a larger block.
type misaligned struct {
	goHeap
	mu   *sync.Mutex
	orig map[uintptr][]byte
}

func (d misaligned) Alloc(n int) ([]byte, error) {
	b, err := d.goHeap.Alloc(n + 8)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.orig[uintptr(unsafe.Pointer(&b[8]))] = b
	d.mu.Unlock()
	return b[8 : 8+n : 8+n], nil
}

func (d misaligned) Free(b []byte) error {
	if len(b) == 0 {
		return d.goHeap.Free(b)
	}
	d.mu.Lock()
	o, ok := d.orig[uintptr(unsafe.Pointer(&b[0]))]
	delete(d.orig, uintptr(unsafe.Pointer(&b[0])))
	d.mu.Unlock()
	if !ok {
		return d.goHeap.Free(b)
	}
	return d.goHeap.Free(o)
}

// acceptsForeign claims to free slices it does not own.
type acceptsForeign struct{ goHeap }

func (d acceptsForeign) Free(b []byte) error {
	if _, ok := d.goHeap.Backend(b); !ok {
		return nil
	}
	return d.goHeap.Free(b)
}

// mutations are broken allocators and the case that must catch each.
var mutations = []struct {
	name string
	wrap func(goHeap) conformance.Allocator
	want string
}{
	{"dirty-alloc", func(g goHeap) conformance.Allocator { return dirtyAlloc{g} }, "zero-on-alloc"},
	{"no-wipe", func(g goHeap) conformance.Allocator { return noWipe{g} }, "wipe-on-free"},
	{"misaligned", func(g goHeap) conformance.Allocator {
		return misaligned{g, &sync.Mutex{}, map[uintptr][]byte{}}
	}, "alignment"},
	{"accepts-foreign", func(g goHeap) conformance.Allocator { return acceptsForeign{g} }, "foreign-slice"},
}

// TestSuiteCatchesMutations is the suite's control: each broken allocator
// runs the case meant to catch it, in a child process (a failing case would
// fail this test otherwise), and that case must fail there — while the same
// case passes on the unbroken Go heap, the control of the control.
func TestSuiteCatchesMutations(t *testing.T) {
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			testutil.RequireSecretMem(t)
			if testutil.InChild(t) {
				h, err := alloc.New(alloc.Config{})
				require.NoError(t, err)
				conformance.Run(t, func(*testing.T) conformance.Allocator { return m.wrap(goHeap{h}) })
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{Env: []string{conformance.OnlyEnv + "=" + m.want}})
			assert.False(t, res.Clean(), "the broken allocator passed:\n%s", res.Output)
			assert.Regexp(t, regexp.MustCompile(fmt.Sprintf(`--- FAIL: %s/%s`, regexp.QuoteMeta(t.Name()), m.want)), res.Output)
		})
	}
	t.Run("unbroken", func(t *testing.T) {
		t.Setenv(conformance.OnlyEnv, "zero-on-alloc,wipe-on-free,alignment,foreign-slice")
		h, err := alloc.New(alloc.Config{})
		require.NoError(t, err)
		defer h.Close()
		conformance.Run(t, func(*testing.T) conformance.Allocator { return goHeap{h} })
	})
}

func TestSizes(t *testing.T) {
	classes := conformance.ClassSizes()
	require.Len(t, classes, 40)
	assert.Equal(t, 16, classes[0])
	assert.Equal(t, 32768, classes[39])
	sizes := conformance.Sizes()
	for _, c := range classes {
		assert.Contains(t, sizes, c-1)
		assert.Contains(t, sizes, c)
		assert.Contains(t, sizes, c+1)
	}
	assert.Contains(t, sizes, 1<<20+1, "the page-run/region limit")
}
