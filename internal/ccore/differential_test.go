package ccore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/conformance"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// The differential test feeds one operation sequence to the Go heap and to
// the C core and compares what a caller can observe: the same successes and
// failures, fresh blocks zero on both, contents preserved (and equal to a
// model kept in ordinary Go memory), freed blocks wiped, live-block counts
// equal to the model's, and both invariant checkers clean after every step.
//
// Realloc exists only in C. The Go side performs what realloc promises —
// allocate, copy min(old, new) bytes, free (wiping) the old block — so the
// comparison checks the C realloc against its specification.

// opKind is one operation of a sequence.
type opKind uint8

const (
	opAlloc   opKind = iota // allocate size bytes
	opFree                  // free live block idx
	opWrite                 // fill [off, off+len) of block idx from seed
	opRealloc               // resize block idx to size bytes
	opSwap                  // free block idx and allocate size bytes in its place
	numOps
)

func (k opKind) String() string {
	return [...]string{"alloc", "free", "write", "realloc", "swap"}[k]
}

// op is a decoded operation. idx is taken modulo the live blocks when run.
type op struct {
	kind opKind
	size int
	idx  int
	seed uint64
	off  int // write: start as a fraction (/256) of the block
	span int // write: length as a fraction (/256) of the block
}

func (o op) String() string {
	switch o.kind {
	case opAlloc:
		return fmt.Sprintf("alloc(%d)", o.size)
	case opFree:
		return fmt.Sprintf("free(#%d)", o.idx)
	case opWrite:
		return fmt.Sprintf("write(#%d, off %d/256, len %d/256, seed %#x)", o.idx, o.off, o.span, o.seed)
	case opRealloc:
		return fmt.Sprintf("realloc(#%d, %d)", o.idx, o.size)
	case opSwap:
		return fmt.Sprintf("swap(#%d, %d)", o.idx, o.size)
	}
	return "?"
}

const (
	opBytes     = 5       // bytes of fuzz input per operation
	maxOps      = 64      // operations per fuzz input, so one input stays fast
	maxLive     = 48      // live blocks at most; further allocs free first
	maxLiveSize = 6 << 20 // live bytes at most (huge blocks cost 20 µs per OS page)
)

// decodeSize maps two bytes to a size: mostly small (where the classes are),
// sometimes a page run, rarely a region of its own, and 0 (an invalid size,
// which both sides must refuse) when both bytes are zero.
func decodeSize(sel, lo, hi byte) int {
	v := int(lo) | int(hi)<<8
	switch {
	case sel == 0 && v == 0:
		return 0
	case sel < 160:
		return 1 + v%1100 // the 16-byte classes and beyond 1 KiB
	case sel < 224:
		return 1 + v%32768 // every class
	case sel < 250:
		return 32769 + v*15 // page runs up to ~1 MiB
	default:
		return 1<<20 + 1 + v*7 // regions of their own, up to ~1.5 MiB
	}
}

// decodeOps turns fuzz input into at most limit operations, opBytes per
// operation.
func decodeOps(data []byte, limit int) []op {
	var ops []op
	for len(data) >= opBytes && len(ops) < limit {
		b := data[:opBytes]
		data = data[opBytes:]
		o := op{kind: opKind(b[0] % byte(numOps)), idx: int(b[1])}
		switch o.kind {
		case opAlloc, opRealloc, opSwap:
			o.size = decodeSize(b[4], b[2], b[3])
		case opWrite:
			o.off, o.span = int(b[2]), int(b[3])+1
			o.seed = uint64(binary.LittleEndian.Uint16(b[3:5]))<<8 | uint64(b[1])
		}
		ops = append(ops, o)
	}
	return ops
}

// randomOps draws n operations from r with the distribution decodeOps gives
// to random bytes.
func randomOps(r *rand.Rand, n int) []op {
	buf := make([]byte, n*opBytes)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	return decodeOps(buf, n)
}

// diffHeap is one side of the comparison.
type diffHeap interface {
	Alloc(n int) ([]byte, error)
	Free(b []byte) error
	Realloc(b []byte, n int) ([]byte, error)
	Backend(b []byte) (secretmem.Backend, bool)
	Check() error
	LiveBlocks() uint64
}

// cSide is the C core through the binding.
type cSide struct{ h *CHeap }

func (c cSide) Alloc(n int) ([]byte, error)             { return c.h.Alloc(n) }
func (c cSide) Free(b []byte) error                     { return c.h.Free(b) }
func (c cSide) Realloc(b []byte, n int) ([]byte, error) { return c.h.Realloc(b, n) }
func (c cSide) Backend(b []byte) (secretmem.Backend, bool) {
	return c.h.Backend(b)
}
func (c cSide) Check() error { return c.h.Check() }
func (c cSide) LiveBlocks() uint64 {
	s, err := c.h.Stats()
	if err != nil {
		panic(err)
	}
	return s.LiveBlocks
}

// goSide is the Go heap; Realloc follows realloc's specification with
// Alloc, copy and Free.
type goSide struct{ h *alloc.Heap }

func (g goSide) Alloc(n int) ([]byte, error) { return g.h.Alloc(n) }
func (g goSide) Free(b []byte) error         { return g.h.Free(b) }
func (g goSide) Realloc(b []byte, n int) ([]byte, error) {
	nb, err := g.h.Alloc(n)
	if err != nil {
		return nil, err
	}
	copy(nb, b)
	if err := g.h.Free(b); err != nil {
		return nil, err
	}
	return nb, nil
}
func (g goSide) Backend(b []byte) (secretmem.Backend, bool) { return g.h.Backend(b) }
func (g goSide) Check() error                               { return goHeapCheck(g.h) }
func (g goSide) LiveBlocks() uint64                         { return g.h.Stats().LiveBlocks }

// sharedGoHeap is one Go heap for every differential run in the process:
// each run frees what it allocated, so the heap is reused as a long-lived
// program's would be (and a fuzz worker does not map fresh chunks for every
// input).
var sharedGoHeap = sync.OnceValues(func() (*alloc.Heap, error) {
	return alloc.New(alloc.Config{})
})

// block is one live allocation on both sides and in the model.
type block struct {
	g, c  []byte
	model []byte
}

// runner executes a sequence on both sides.
type runner struct {
	g, c         diffHeap
	gBase, cBase uint64 // live blocks before the run
	live         []block
	liveBytes    int
}

// fail formats a difference with the step that showed it.
func stepErr(i int, o op, format string, args ...any) error {
	return fmt.Errorf("step %d %v: %s", i, o, fmt.Sprintf(format, args...))
}

// runDifferential runs ops on the Go heap and the C core, returning the
// first difference or broken invariant. It frees every block it allocated.
func runDifferential(ops []op) (err error) {
	gh, err := sharedGoHeap()
	if err != nil {
		return fmt.Errorf("alloc.New: %w", err)
	}
	r := &runner{g: goSide{gh}, c: cSide{Core()}}
	r.gBase, r.cBase = r.g.LiveBlocks(), r.c.LiveBlocks()
	defer func() {
		for _, b := range r.live {
			if e := r.g.Free(b.g); e != nil && err == nil {
				err = fmt.Errorf("cleanup: Go Free: %w", e)
			}
			if e := r.c.Free(b.c); e != nil && err == nil {
				err = fmt.Errorf("cleanup: C Free: %w", e)
			}
		}
		r.live = nil
		if err == nil {
			err = r.checkBoth(len(ops), op{}, 0)
		}
	}()
	for i, o := range ops {
		if err := r.step(i, o); err != nil {
			return err
		}
		if err := r.checkBoth(i, o, len(r.live)); err != nil {
			return err
		}
	}
	return nil
}

// checkBoth runs both invariant checkers, compares live-block counts with
// the model and every live block's bytes with the model.
func (r *runner) checkBoth(i int, o op, live int) error {
	if err := r.g.Check(); err != nil {
		return stepErr(i, o, "Go invariants: %v", err)
	}
	if err := r.c.Check(); err != nil {
		return stepErr(i, o, "C invariants: %v", err)
	}
	if got := r.g.LiveBlocks() - r.gBase; got != uint64(live) {
		return stepErr(i, o, "Go live blocks %d, model %d", got, live)
	}
	if got := r.c.LiveBlocks() - r.cBase; got != uint64(live) {
		return stepErr(i, o, "C live blocks %d, model %d", got, live)
	}
	for k, b := range r.live {
		if err := conformance.Compare(b.g, b.model); err != nil {
			return stepErr(i, o, "Go block #%d (%d bytes) differs from the model: %v", k, len(b.model), err)
		}
		if err := conformance.Compare(b.c, b.model); err != nil {
			return stepErr(i, o, "C block #%d (%d bytes) differs from the model: %v", k, len(b.model), err)
		}
	}
	return nil
}

// bothOK compares success and failure of one call on both sides.
func bothOK(i int, o op, gerr, cerr error) (bool, error) {
	switch {
	case gerr == nil && cerr == nil:
		return true, nil
	case gerr != nil && cerr != nil:
		return false, nil
	}
	return false, stepErr(i, o, "Go error %v, C error %v", gerr, cerr)
}

// checkFresh checks a block both sides just handed out.
func checkFresh(i int, o op, side string, h diffHeap, b []byte, n int) error {
	if len(b) != n || cap(b) != n {
		return stepErr(i, o, "%s: len %d cap %d, want %d", side, len(b), cap(b), n)
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%16 != 0 {
		return stepErr(i, o, "%s: block at %p not 16-byte aligned", side, unsafe.SliceData(b))
	}
	if be, ok := h.Backend(b); !ok || (be != secretmem.BackendSecret && be != secretmem.BackendLocked) {
		return stepErr(i, o, "%s: Backend = %v, %v for a live block", side, be, ok)
	}
	return nil
}

// checkWiped reads a freed (or moved-from) block through a pipe: it must be
// zero, or no longer mapped (a region of its own may be unmapped on free).
func checkWiped(i int, o op, side string, b []byte) error {
	got, err := conformance.Peek(b)
	if errors.Is(err, unix.EFAULT) {
		return nil
	}
	if err != nil {
		return stepErr(i, o, "%s: reading the freed block: %v", side, err)
	}
	if k := conformance.FirstNonZero(got); k >= 0 {
		return stepErr(i, o, "%s: freed %d-byte block not wiped: byte %d = %#x", side, len(b), k, got[k])
	}
	return nil
}

func (r *runner) alloc(i int, o op) error {
	if len(r.live) >= maxLive || r.liveBytes+o.size > maxLiveSize {
		if len(r.live) == 0 {
			return nil // a single request above the byte bound: skip it
		}
		if err := r.free(i, op{kind: opFree, idx: o.idx}); err != nil {
			return err
		}
		if r.liveBytes+o.size > maxLiveSize {
			return nil
		}
	}
	gb, gerr := r.g.Alloc(o.size)
	cb, cerr := r.c.Alloc(o.size)
	ok, err := bothOK(i, o, gerr, cerr)
	if err != nil {
		return err
	}
	if !ok {
		if gb != nil || cb != nil {
			return stepErr(i, o, "a failed Alloc returned a slice (Go %v, C %v)", gb != nil, cb != nil)
		}
		return nil
	}
	if err := checkFresh(i, o, "Go", r.g, gb, o.size); err != nil {
		return err
	}
	if err := checkFresh(i, o, "C", r.c, cb, o.size); err != nil {
		return err
	}
	// Zeroing is checked by the comparison with the all-zero model.
	r.live = append(r.live, block{g: gb, c: cb, model: make([]byte, o.size)})
	r.liveBytes += o.size
	return nil
}

func (r *runner) free(i int, o op) error {
	if len(r.live) == 0 {
		return nil
	}
	k := o.idx % len(r.live)
	b := r.live[k]
	gerr, cerr := r.g.Free(b.g), r.c.Free(b.c)
	if gerr != nil || cerr != nil {
		return stepErr(i, o, "Free: Go %v, C %v", gerr, cerr)
	}
	r.live = append(r.live[:k], r.live[k+1:]...)
	r.liveBytes -= len(b.model)
	if _, ok := r.g.Backend(b.g); ok {
		return stepErr(i, o, "Go: freed block still reported live")
	}
	if _, ok := r.c.Backend(b.c); ok {
		return stepErr(i, o, "C: freed block still reported live")
	}
	if err := checkWiped(i, o, "Go", b.g); err != nil {
		return err
	}
	return checkWiped(i, o, "C", b.c)
}

func (r *runner) write(i int, o op) error {
	if len(r.live) == 0 {
		return nil
	}
	b := r.live[o.idx%len(r.live)]
	n := len(b.model)
	off := n * o.off / 256
	end := min(n, off+max(1, n*o.span/256))
	// Any sub-slice of a live block is inside it, on both sides, with the
	// same backend.
	gbe, gok := r.g.Backend(b.g[off:end])
	cbe, cok := r.c.Backend(b.c[off:end])
	if !gok || !cok || gbe != cbe {
		return stepErr(i, o, "Backend of bytes [%d,%d): Go %v %v, C %v %v", off, end, gbe, gok, cbe, cok)
	}
	conformance.Fill(b.model[off:end], o.seed)
	copy(b.g[off:end], b.model[off:end])
	copy(b.c[off:end], b.model[off:end])
	return nil
}

func (r *runner) realloc(i int, o op) error {
	if len(r.live) == 0 {
		return nil
	}
	k := o.idx % len(r.live)
	b := r.live[k]
	if r.liveBytes-len(b.model)+o.size > maxLiveSize {
		return nil
	}
	gb, gerr := r.g.Realloc(b.g, o.size)
	cb, cerr := r.c.Realloc(b.c, o.size)
	ok, err := bothOK(i, o, gerr, cerr)
	if err != nil || !ok {
		return err // both failed: both kept the old block (checked next)
	}
	if err := checkFresh(i, o, "Go", r.g, gb, o.size); err != nil {
		return err
	}
	if err := checkFresh(i, o, "C", r.c, cb, o.size); err != nil {
		return err
	}
	// realloc keeps min(old, new) bytes; the rest of the new block is zero
	// (secretheap hands out zeroed memory, and the old tail was wiped or
	// never written). The model says so; checkBoth compares.
	model := make([]byte, o.size)
	copy(model, b.model)
	// A moved block's old bytes must be wiped: on both sides, if it moved.
	if unsafe.SliceData(gb) != unsafe.SliceData(b.g) {
		if err := checkWiped(i, o, "Go", b.g); err != nil {
			return err
		}
	}
	if unsafe.SliceData(cb) != unsafe.SliceData(b.c) {
		if err := checkWiped(i, o, "C", b.c); err != nil {
			return err
		}
	}
	r.live[k] = block{g: gb, c: cb, model: model}
	r.liveBytes += o.size - len(b.model)
	return nil
}

func (r *runner) step(i int, o op) error {
	switch o.kind {
	case opAlloc:
		return r.alloc(i, o)
	case opFree:
		return r.free(i, o)
	case opWrite:
		return r.write(i, o)
	case opRealloc:
		return r.realloc(i, o)
	case opSwap:
		if err := r.free(i, o); err != nil {
			return err
		}
		return r.alloc(i, o)
	}
	return nil
}

// FuzzDifferential runs fuzz-chosen operation sequences on the Go heap and
// the C core. Its seed corpus (testdata/fuzz/FuzzDifferential) runs in every
// go test; `go test -fuzz FuzzDifferential ./internal/ccore` explores further.
func FuzzDifferential(f *testing.F) {
	testutil.RequireSecretMem(f)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0}) // alloc(0): both must refuse
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		buf := make([]byte, 60*opBytes)
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		f.Add(buf)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		require.NoError(t, runDifferential(decodeOps(data, maxOps)))
	})
}

// TestDifferentialRandom runs long random sequences with fixed seeds, so
// every go test compares the two allocators over thousands of operations.
func TestDifferentialRandom(t *testing.T) {
	testutil.RequireSecretMem(t)
	// Three seeds of 500 operations: the C checker walks every committed
	// OS page (~0.4 ms per MiB here) after each step, which bounds the
	// length a test in every go test -race can afford; go test -fuzz and
	// SECRETHEAP_DIFF_OPS explore further.
	nops := 500
	if s := os.Getenv("SECRETHEAP_DIFF_OPS"); s != "" {
		var err error
		nops, err = strconv.Atoi(s)
		require.NoError(t, err, "SECRETHEAP_DIFF_OPS")
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x5ec2e7))
			ops := randomOps(r, nops)
			require.NoError(t, runDifferential(ops))
		})
	}
}

// TestDifferentialCatchesDifferences is the control: a C side whose Alloc
// leaves a byte behind, and one whose Free does not wipe, must be reported.
func TestDifferentialCatchesDifferences(t *testing.T) {
	testutil.RequireSecretMem(t)
	gh, err := sharedGoHeap()
	require.NoError(t, err)
	cases := []struct {
		name string
		c    diffHeap
		ops  []op
		want string
	}{
		{"dirty alloc", dirtyAlloc{cSide{Core()}}, []op{{kind: opAlloc, size: 64}}, "differs from the model"},
		{"no wipe", &noWipe{cSide: cSide{Core()}}, []op{{kind: opAlloc, size: 64}, {kind: opWrite, span: 256, seed: 9}, {kind: opFree}}, "not wiped"},
		{"refuses", refuses{cSide{Core()}}, []op{{kind: opAlloc, size: 64}}, "Go error <nil>, C error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{g: goSide{gh}, c: tc.c}
			r.gBase, r.cBase = r.g.LiveBlocks(), r.c.LiveBlocks()
			var got error
			for i, o := range tc.ops {
				if got = r.step(i, o); got != nil {
					break
				}
				if got = r.checkBoth(i, o, len(r.live)); got != nil {
					break
				}
			}
			if nw, ok := tc.c.(*noWipe); ok {
				clear(nw.dirty) // undo the fake leak before the heap reuses the block
			}
			for _, b := range r.live {
				require.NoError(t, r.g.Free(b.g))
				require.NoError(t, Core().Free(b.c))
			}
			require.NoError(t, Core().Check())
			require.Error(t, got)
			require.Contains(t, got.Error(), tc.want)
		})
	}
}

// dirtyAlloc hands out blocks with a non-zero byte.
type dirtyAlloc struct{ cSide }

func (d dirtyAlloc) Alloc(n int) ([]byte, error) {
	b, err := d.cSide.Alloc(n)
	if err == nil {
		b[n-1] = 0x42
	}
	return b, err
}

// noWipe rewrites the pattern after Free, as an allocator that forgot the
// wipe would leave it; the test clears dirty again at once.
type noWipe struct {
	cSide
	dirty []byte
}

func (d *noWipe) Free(b []byte) error {
	saved := append([]byte(nil), b...)
	if err := d.cSide.Free(b); err != nil {
		return err
	}
	copy(b, saved) // a small block's slab stays mapped and committed
	d.dirty = b
	return nil
}

// refuses fails every allocation.
type refuses struct{ cSide }

func (refuses) Alloc(n int) ([]byte, error) { return nil, ErrExhausted }
