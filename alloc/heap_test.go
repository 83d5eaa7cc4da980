package alloc_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// newHeap builds a heap for one test and closes it at the end.
func newHeap(t testing.TB, cfg alloc.Config) *alloc.Heap {
	t.Helper()
	testutil.RequireSecretMem(t)
	if cfg.Policy == secretmem.PolicyAuto {
		cfg.Policy = secretmem.PolicySecret
	}
	h, err := alloc.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// block is a live allocation of the model: the slice and the pattern seed
// its bytes must still hold.
type block struct {
	b    []byte
	seed byte
}

// patternWord is the 8 bytes at word i of a block filled with seed.
func patternWord(seed byte, i int) uint64 {
	return (uint64(seed)*0x0101010101010101 ^ uint64(i)*0x9E3779B97F4A7C15) | 1
}

// fill writes the block's pattern, a word at a time (blocks are 16-byte
// aligned); the tail bytes get the low bytes of the next word.
func fill(b []byte, seed byte) {
	w := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	for i := range w {
		w[i] = patternWord(seed, i)
	}
	last := patternWord(seed, len(w))
	for j := len(w) * 8; j < len(b); j++ {
		b[j] = byte(last >> (8 * (j % 8)))
	}
}

// intact reports whether b still holds fill's pattern.
func intact(b []byte, seed byte) bool {
	w := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	for i := range w {
		if w[i] != patternWord(seed, i) {
			return false
		}
	}
	last := patternWord(seed, len(w))
	for j := len(w) * 8; j < len(b); j++ {
		if b[j] != byte(last>>(8*(j%8))) {
			return false
		}
	}
	return true
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// model drives a heap and checks it after every step: the heap's invariant
// checker (used + free == capacity per slab, free blocks inside their slab
// and wiped, page table and counters consistent, committed ≥ used), every
// live block unchanged, blocks disjoint, and the stats totals.
type model struct {
	t     testing.TB
	h     *alloc.Heap
	live  []block
	bytes int
	seed  byte
}

func (m *model) alloc(n int) {
	m.t.Helper()
	b, err := m.h.Alloc(n)
	require.NoError(m.t, err, "Alloc(%d)", n)
	require.Len(m.t, b, n)
	require.Equal(m.t, n, cap(b))
	require.Zero(m.t, uintptr(unsafe.Pointer(unsafe.SliceData(b)))%16, "Alloc(%d) not 16-byte aligned", n)
	require.True(m.t, isZero(b), "Alloc(%d) returned memory that is not zero", n)
	be, ok := m.h.Backend(b)
	require.True(m.t, ok, "Backend of a fresh block")
	require.NotEqual(m.t, secretmem.BackendNone, be)
	m.seed++
	fill(b, m.seed)
	m.live = append(m.live, block{b, m.seed})
	m.bytes += n
}

func (m *model) free(i int) {
	m.t.Helper()
	blk := m.live[i]
	m.live[i] = m.live[len(m.live)-1]
	m.live = m.live[:len(m.live)-1]
	require.True(m.t, intact(blk.b, blk.seed), "block %p changed while live", unsafe.SliceData(blk.b))
	// Free through a shorter slice now and then: only the start counts.
	b := blk.b
	if len(b) > 1 && blk.seed%3 == 0 {
		b = b[:len(b)/2]
	}
	require.NoError(m.t, m.h.Free(b))
	m.bytes -= len(blk.b)
}

func (m *model) check() {
	m.t.Helper()
	require.NoError(m.t, m.h.Check())
	for _, blk := range m.live {
		require.True(m.t, intact(blk.b, blk.seed), "live block %p (%d B) changed", unsafe.SliceData(blk.b), len(blk.b))
	}
	st := m.h.Stats()
	require.EqualValues(m.t, len(m.live), st.LiveBlocks)
	require.EqualValues(m.t, m.bytes, st.RequestedBytes)
	require.GreaterOrEqual(m.t, st.ReservedBytes, st.RequestedBytes)
	require.GreaterOrEqual(m.t, st.CommittedBytes, st.ReservedBytes-st.LargeReservedBytes)
}

// randomSize draws from a mix that reaches every path: small classes,
// the biggest classes, page runs and (rarely) regions of their own.
func randomSize(r *rand.Rand) int {
	switch p := r.IntN(100); {
	case p < 60:
		return 1 + r.IntN(256)
	case p < 85:
		return 1 + r.IntN(4096)
	case p < 95:
		return 1 + r.IntN(alloc.MaxSmallSize)
	case p < 99:
		return alloc.MaxSmallSize + 1 + r.IntN(200_000)
	default:
		return alloc.LargeMin + 1 + r.IntN(1<<20)
	}
}

// TestModel runs random operation sequences against the model.
func TestModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			h := newHeap(t, alloc.Config{MaxIdleChunks: 1})
			r := rand.New(rand.NewPCG(seed, 99))
			m := &model{t: t, h: h}
			steps := 1500
			if testing.Short() {
				steps = 300
			}
			for step := 0; step < steps; step++ {
				if len(m.live) == 0 || (len(m.live) < 300 && r.IntN(100) < 55) {
					m.alloc(randomSize(r))
				} else {
					m.free(r.IntN(len(m.live)))
				}
				if step%5 == 0 {
					m.check()
				}
			}
			for len(m.live) > 0 {
				m.free(len(m.live) - 1)
			}
			m.check()
			st := h.Stats()
			assert.Zero(t, st.LiveBlocks)
			assert.Zero(t, st.RequestedBytes)
		})
	}
}

var (
	fuzzOnce sync.Once
	fuzzHeap *alloc.Heap
	fuzzErr  error
)

// FuzzHeapOps interprets the input as operations (two bytes each): alloc of
// a size drawn from the bytes, or free of a live block; the model checks the
// heap after every step. The seed corpus is in testdata/fuzz/FuzzHeapOps.
func FuzzHeapOps(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 1, 0, 0, 255, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 256 {
			data = data[:256]
		}
		// One heap per process, emptied by every input: a fresh heap per
		// input would fault its OS pages in again (~20 µs each), which
		// made fuzzing ~2 inputs/s.
		fuzzOnce.Do(func() {
			testutil.RequireSecretMem(t)
			fuzzHeap, fuzzErr = alloc.New(alloc.Config{Policy: secretmem.PolicySecret, MaxIdleChunks: 1})
		})
		require.NoError(t, fuzzErr)
		h := fuzzHeap
		m := &model{t: t, h: h}
		for i := 0; i+1 < len(data); i += 2 {
			op, arg := data[i], int(data[i+1])
			switch {
			case op&1 == 1 && len(m.live) > 0:
				m.free(arg % len(m.live))
			case op&6 == 0: // small classes
				m.alloc(1 + arg)
			case op&6 == 2: // any class
				m.alloc(1 + (arg*131+int(op))%alloc.MaxSmallSize)
			case op&6 == 4: // page runs
				m.alloc(alloc.MaxSmallSize + 1 + arg*997)
			default:
				if op&0xf0 == 0xf0 { // a region of its own, rarely
					m.alloc(alloc.LargeMin + 1 + arg)
				} else {
					m.alloc(16 * (1 + arg%64))
				}
			}
			m.check()
		}
		for len(m.live) > 0 {
			m.free(0)
			m.check()
		}
		require.Zero(t, h.Stats().LiveBlocks, "every input leaves the heap empty")
	})
}

// TestStress: goroutines allocate, write a pattern, hand the blocks to the
// next goroutine over a channel; the receiver verifies and frees. Run it
// under -race.
func TestStress(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	const workers = 4
	ops := 3000
	if testing.Short() {
		ops = 500
	}
	chans := make([]chan block, workers)
	for i := range chans {
		chans[i] = make(chan block, 64)
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers*2)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		out, in := chans[(w+1)%workers], chans[w]
		go func(w int) { // producer
			defer wg.Done()
			defer close(out)
			r := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []block
			for i := 0; i < ops; i++ {
				n := 1 + r.IntN(3000)
				if r.IntN(50) == 0 {
					n = alloc.MaxSmallSize + r.IntN(100_000)
				}
				b, err := h.Alloc(n)
				if err != nil {
					errc <- err
					return
				}
				if !isZero(b) {
					errc <- fmt.Errorf("Alloc(%d) not zero", n)
					return
				}
				seed := byte(r.Uint32())
				fill(b, seed)
				if r.IntN(4) == 0 { // keep some, free them locally later
					mine = append(mine, block{b, seed})
					continue
				}
				out <- block{b, seed}
			}
			for _, blk := range mine {
				if !intact(blk.b, blk.seed) {
					errc <- errors.New("kept block changed")
					return
				}
				if err := h.Free(blk.b); err != nil {
					errc <- err
					return
				}
			}
		}(w)
		go func() { // consumer
			defer wg.Done()
			for blk := range in {
				if !intact(blk.b, blk.seed) {
					errc <- fmt.Errorf("received block %p changed", unsafe.SliceData(blk.b))
					return
				}
				if err := h.Free(blk.b); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}
	require.NoError(t, h.Check())
	st := h.Stats()
	assert.Zero(t, st.LiveBlocks)
	assert.Zero(t, st.RequestedBytes)
}

// mappingOf returns the /proc/self/maps line (procfs.Mapping.String) of the
// mapping holding addr.
func mappingOf(t *testing.T, addr uintptr) string {
	t.Helper()
	maps, err := procfs.Maps(0)
	require.NoError(t, err)
	m, ok := procfs.MappingAt(maps, uint64(addr))
	if !ok {
		return ""
	}
	return m.String()
}

// TestInSecretMemMapping: every kind of block lies in a mapping the kernel
// names /secretmem; control: a Go-heap slice does not.
func TestInSecretMemMapping(t *testing.T) {
	h := newHeap(t, alloc.Config{Policy: secretmem.PolicySecret})
	for _, n := range []int{1, 32, 4096, alloc.MaxSmallSize, alloc.MaxSmallSize + 1, alloc.LargeMin + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b, err := h.Alloc(n)
			require.NoError(t, err)
			defer func() { require.NoError(t, h.Free(b)) }()
			line := mappingOf(t, uintptr(unsafe.Pointer(&b[0])))
			assert.Contains(t, line, "secretmem", "block of %d B", n)
			be, ok := h.Backend(b)
			assert.True(t, ok)
			assert.Equal(t, secretmem.BackendSecret, be)
		})
	}
	t.Run("control: Go heap", func(t *testing.T) {
		g := make([]byte, 64)
		line := mappingOf(t, uintptr(unsafe.Pointer(&g[0])))
		assert.NotContains(t, line, "secretmem")
		_, ok := h.Backend(g)
		assert.False(t, ok)
	})
}

// TestFreeWipes: the bytes of a freed block read as zero (read through the
// stale slice: the slab stays mapped because another block of it is live).
// Control: the pattern is visible through the same slice before Free.
func TestFreeWipes(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	for _, n := range []int{16, 48, 1000, 20000, alloc.MaxSmallSize + 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			keep, err := h.Alloc(n) // keeps the slab (or chunk) mapped
			require.NoError(t, err)
			b, err := h.Alloc(n)
			require.NoError(t, err)
			fill(b, 0x5a)
			stale := unsafe.Slice(unsafe.SliceData(b), n)
			require.True(t, intact(stale, 0x5a), "control: pattern visible before Free")
			require.False(t, isZero(stale), "control")
			require.NoError(t, h.Free(b))
			assert.True(t, isZero(stale), "freed block not wiped")
			require.NoError(t, h.Free(keep))
		})
	}
}

func expectMisuse(t *testing.T, kind, msg string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		require.NotNil(t, r, "expected a %s panic", kind)
		me, ok := r.(*alloc.MisuseError)
		require.True(t, ok, "panic value %T: %v", r, r)
		assert.Equal(t, kind, me.Kind)
		assert.Contains(t, me.Error(), msg)
	}()
	f()
}

// TestMisuse: each misuse gets the documented panic or error, and the heap
// stays usable and consistent afterwards.
func TestMisuse(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	t.Run("double free", func(t *testing.T) {
		keep, _ := h.Alloc(40)
		b, err := h.Alloc(40)
		require.NoError(t, err)
		require.NoError(t, h.Free(b))
		expectMisuse(t, "double free", fmt.Sprintf("secretheap: double free of %#x (class 48 B)", uintptr(unsafe.Pointer(unsafe.SliceData(b)))), func() { _ = h.Free(b) })
		require.NoError(t, h.Free(keep))
	})
	t.Run("interior pointer", func(t *testing.T) {
		b, err := h.Alloc(100)
		require.NoError(t, err)
		expectMisuse(t, "interior pointer", "not at its start (class 112 B)", func() { _ = h.Free(b[16:]) })
		require.NoError(t, h.Free(b), "the block itself is still live")
	})
	t.Run("interior pointer of a page run", func(t *testing.T) {
		b, err := h.Alloc(alloc.MaxSmallSize + 1)
		require.NoError(t, err)
		expectMisuse(t, "interior pointer", "page run", func() { _ = h.Free(b[alloc.OSPageSize:]) })
		require.NoError(t, h.Free(b))
	})
	t.Run("double free of a page run", func(t *testing.T) {
		keep, _ := h.Alloc(100)
		b, err := h.Alloc(alloc.MaxSmallSize + 1)
		require.NoError(t, err)
		require.NoError(t, h.Free(b))
		expectMisuse(t, "double free", "a page run freed twice", func() { _ = h.Free(b) })
		require.NoError(t, h.Free(keep))
	})
	t.Run("region", func(t *testing.T) {
		b, err := h.Alloc(alloc.LargeMin + 1)
		require.NoError(t, err)
		expectMisuse(t, "interior pointer", "region", func() { _ = h.Free(b[64:]) })
		require.NoError(t, h.Free(b))
		// The region is unmapped or idle now: either way not a live block.
		err = func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					me, ok := r.(*alloc.MisuseError)
					require.True(t, ok, "panic %v", r)
					err = me
				}
			}()
			return h.Free(b)
		}()
		require.Error(t, err, "second free of a region")
		if !errors.Is(err, alloc.ErrForeign) {
			assert.Contains(t, err.Error(), "secretheap:")
		}
	})
	t.Run("tail slices", func(t *testing.T) {
		// Go gives b[len(b):] (capacity 0) the block's start address:
		// freeing it freed and wiped the whole block, which the next
		// Alloc handed out again while the caller still used it.
		for _, n := range []int{32, 100, alloc.MaxSmallSize + 1, alloc.LargeMin + 1} {
			b, err := h.Alloc(n)
			require.NoError(t, err)
			fill(b, 7)
			expectMisuse(t, "tail slice", "capacity 0", func() { _ = h.Free(b[len(b):]) })
			expectMisuse(t, "tail slice", "capacity 0", func() { _ = h.Free(b[:0:0]) })
			assert.True(t, intact(b, 7), "%d B: the block was written to", n)
			be, ok := h.Backend(b)
			assert.True(t, ok && be == secretmem.BackendSecret, "%d B: the block is still live", n)
			require.NoError(t, h.Free(b))
		}
	})
	t.Run("interior sub-slices write nothing", func(t *testing.T) {
		for _, n := range []int{100, alloc.MaxSmallSize + 1, alloc.LargeMin + 1} {
			b, err := h.Alloc(n)
			require.NoError(t, err)
			fill(b, 9)
			expectMisuse(t, "interior pointer", "not at its start", func() { _ = h.Free(b[1:]) })
			expectMisuse(t, "interior pointer", "not at its start", func() { _ = h.Free(b[len(b)-1:]) })
			assert.True(t, intact(b, 9), "%d B: the block was written to", n)
			require.NoError(t, h.Free(b))
		}
	})
	t.Run("foreign slice", func(t *testing.T) {
		assert.ErrorIs(t, h.Free(make([]byte, 32)), alloc.ErrForeign)
		other := newHeap(t, alloc.Config{})
		b, err := other.Alloc(32)
		require.NoError(t, err)
		assert.ErrorIs(t, h.Free(b), alloc.ErrForeign, "a block of another heap")
		assert.NoError(t, other.Free(b))
		assert.NoError(t, h.Free(nil), "nil is ignored")
	})
	t.Run("sizes", func(t *testing.T) {
		for _, n := range []int{0, -1, alloc.MaxAlloc + 1} {
			_, err := h.Alloc(n)
			assert.ErrorIs(t, err, alloc.ErrTooLarge, "Alloc(%d)", n)
		}
	})
	require.NoError(t, h.Check())
	assert.GreaterOrEqual(t, h.Stats().MisuseCaught, uint64(5))
}

// TestRacingDoubleFree: two goroutines free the same block at once; exactly
// one succeeds and the other panics naming the double free — for a slab
// block, a page run and a region of its own. The region case read
// Chunk.Owner without a lock while the winner cleared it (a data race under
// -race), and the loser got ErrForeign or "not a block" once the region was
// unmapped.
func TestRacingDoubleFree(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	for _, n := range []int{48, alloc.MaxSmallSize + 1, alloc.LargeMin + 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			for round := 0; round < 20; round++ {
				b, err := h.Alloc(n)
				require.NoError(t, err)
				var start, done sync.WaitGroup
				start.Add(1)
				results := make([]any, 2)
				for g := range results {
					done.Add(1)
					go func() {
						defer done.Done()
						defer func() {
							if r := recover(); r != nil {
								results[g] = r
							}
						}()
						start.Wait()
						if err := h.Free(b); err != nil {
							results[g] = err
						}
					}()
				}
				start.Done()
				done.Wait()
				ok, named := 0, 0
				for _, r := range results {
					if r == nil {
						ok++
					} else if me, isMisuse := r.(*alloc.MisuseError); isMisuse && me.Kind == "double free" {
						named++
					} else {
						t.Errorf("round %d: the loser got %v, want a *MisuseError double free", round, r)
					}
				}
				require.Equal(t, 1, ok, "round %d: exactly one Free succeeds (%v)", round, results)
				require.Equal(t, 1, named, "round %d: the other is a named double free", round)
			}
			require.NoError(t, h.Check())
		})
	}
}

// TestClosed: after Close every call reports ErrClosed.
func TestClosed(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	b, err := h.Alloc(32)
	require.NoError(t, err)
	require.NoError(t, h.Close())
	_, err = h.Alloc(32)
	assert.ErrorIs(t, err, alloc.ErrClosed)
	_, err = h.Alloc(alloc.MaxSmallSize + 1)
	assert.ErrorIs(t, err, alloc.ErrClosed)
	assert.ErrorIs(t, h.Free(b), alloc.ErrClosed)
	assert.ErrorIs(t, h.Close(), alloc.ErrClosed)
	_, ok := h.Backend(b)
	assert.False(t, ok)
	assert.True(t, h.Stats().HeapClosed)
}

// TestCheckZero: with CheckZero, a write into a freed block is caught when
// the block is handed out again. Control: without the write, no panic.
func TestCheckZero(t *testing.T) {
	for _, write := range []bool{false, true} {
		t.Run(fmt.Sprint("write=", write), func(t *testing.T) {
			h := newHeap(t, alloc.Config{CheckZero: true})
			keep, err := h.Alloc(64)
			require.NoError(t, err)
			b, err := h.Alloc(64)
			require.NoError(t, err)
			stale := unsafe.Slice(unsafe.SliceData(b), 64)
			require.NoError(t, h.Free(b))
			if write {
				stale[7] = 1
			}
			var got *alloc.MisuseError
			func() {
				defer func() {
					if r := recover(); r != nil {
						got, _ = r.(*alloc.MisuseError)
						require.NotNil(t, got, "panic %v", r)
					}
				}()
				// Allocate until the written block comes back (its slab
				// belongs to one shard; others may be picked first).
				var held [][]byte
				defer func() {
					for _, x := range held {
						_ = h.Free(x)
					}
				}()
				for i := 0; i < 2000; i++ {
					x, err := h.Alloc(64)
					require.NoError(t, err)
					held = append(held, x)
					if unsafe.SliceData(x) == unsafe.SliceData(stale) {
						return
					}
				}
				t.Fatal("freed block never handed out again")
			}()
			if write {
				require.NotNil(t, got, "write after free not caught")
				assert.Equal(t, "write after free", got.Kind)
				assert.Contains(t, got.Error(), "secretheap: write after free")
				stale[7] = 0 // let Close's and the checker's view be clean
			} else {
				assert.Nil(t, got)
			}
			require.NoError(t, h.Free(keep))
		})
	}
}

// TestExhausted: past the Limit an allocation gets ErrExhausted (never a
// crash), and a request larger than the Limit gets ErrTooLarge.
func TestExhausted(t *testing.T) {
	h := newHeap(t, alloc.Config{Limit: 4 << 20})
	_, err := h.Alloc(5 << 20)
	assert.ErrorIs(t, err, alloc.ErrTooLarge)
	var held [][]byte
	for i := 0; ; i++ {
		b, err := h.Alloc(64 << 10)
		if err != nil {
			assert.ErrorIs(t, err, alloc.ErrExhausted)
			break
		}
		held = append(held, b)
		require.Less(t, i, 1000, "a 4 MiB limit never refused")
	}
	assert.NotEmpty(t, held, "some allocations fit")
	assert.Equal(t, uint64(1), h.Stats().ExhaustedReturns, "the refusal is counted (ErrTooLarge is not)")
	for _, b := range held {
		require.NoError(t, h.Free(b))
	}
	b, err := h.Alloc(64 << 10)
	require.NoError(t, err, "memory is usable again after the frees")
	require.NoError(t, h.Free(b))
	require.NoError(t, h.Check())

	t.Run("abort", func(t *testing.T) {
		h := newHeap(t, alloc.Config{Limit: 2 << 20, OnExhausted: alloc.ExhaustedAbort})
		assert.Panics(t, func() {
			for i := 0; i < 100; i++ {
				_, _ = h.Alloc(512 << 10)
			}
		})
	})
}

func TestBackend(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	b, err := h.Alloc(100)
	require.NoError(t, err)
	_, ok := h.Backend(b)
	assert.True(t, ok)
	_, ok = h.Backend(b[10:20])
	assert.True(t, ok, "a sub-slice lies in the block")
	_, ok = h.Backend(unsafe.Slice(unsafe.SliceData(b), 112))
	assert.False(t, ok, "past the requested length")
	_, ok = h.Backend(b[:0])
	assert.False(t, ok, "empty slice")
	require.NoError(t, h.Free(b))
	_, ok = h.Backend(b)
	assert.False(t, ok, "freed block")
}

func TestStats(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	b1, _ := h.Alloc(33)
	b2, _ := h.Alloc(40)
	b3, _ := h.Alloc(alloc.MaxSmallSize + 1)
	c, size := alloc.ClassOf(33)
	st := h.Stats()
	cs := st.Classes[c]
	assert.EqualValues(t, size, cs.Size)
	assert.EqualValues(t, 73, cs.RequestedBytes)
	assert.EqualValues(t, 2*size, cs.ReservedBytes)
	assert.EqualValues(t, 2, cs.LiveBlocks)
	assert.GreaterOrEqual(t, cs.Slabs, uint64(1))
	assert.EqualValues(t, 1, st.RunBlocks)
	assert.EqualValues(t, 3, st.LiveBlocks)
	assert.EqualValues(t, 73+alloc.MaxSmallSize+1, st.RequestedBytes)
	assert.GreaterOrEqual(t, st.ChunksMapped, uint64(1))
	assert.GreaterOrEqual(t, st.CommittedBytes, st.ReservedBytes)
	for _, b := range [][]byte{b1, b2, b3} {
		require.NoError(t, h.Free(b))
	}
	assert.Zero(t, h.Stats().LiveBlocks)
}

// TestIdleChunkBound checks that MaxIdleChunks reaches the chunk cache: a
// negative bound unmaps a chunk as soon as it empties, the default keeps it.
func TestIdleChunkBound(t *testing.T) {
	for _, tc := range []struct {
		name       string
		idle       int
		wantIdle   uint64
		wantMapped uint64
	}{
		{"none kept", -1, 0, 0},
		{"default keeps it", 0, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeap(t, alloc.Config{MaxIdleChunks: tc.idle})
			b, err := h.Alloc(64 << 10)
			require.NoError(t, err)
			require.NoError(t, h.Free(b))
			st := h.Stats()
			assert.Equal(t, tc.wantIdle, st.IdleChunks, "idle chunks")
			assert.Equal(t, tc.wantMapped, st.ChunksMapped, "chunks mapped")
		})
	}
}

// TestCheckCatches: Check reports each kind of corruption it is meant to
// see, and is clean again once the corruption is undone. Each case is its
// own control: Check passes before the write.
func TestCheckCatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int                   // block size to allocate
		free bool                  // free the block before the stray write
		at   func(b []byte) []byte // where the stray write goes (through unsafe, as a buggy caller would)
		want string
	}{
		{"write after free (slab block)", 48, true, func(b []byte) []byte { return b[:1] }, "free but not wiped"},
		{"write past the requested length", 40, false, func(b []byte) []byte { return unsafe.Slice(unsafe.SliceData(b), 48)[44:] }, "past its requested 40 B"},
		{"write after free (page run)", 40000, true, func(b []byte) []byte { return b[5000:] }, "free but not zero"},
		{"write past a run's requested length", 40000, false, func(b []byte) []byte { return unsafe.Slice(unsafe.SliceData(b), 40960)[40000:] }, "past its requested 40000 B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeap(t, alloc.Config{})
			keep, err := h.Alloc(tc.n) // keeps the slab or chunk mapped after the Free
			require.NoError(t, err)
			b, err := h.Alloc(tc.n)
			require.NoError(t, err)
			if tc.free {
				require.NoError(t, h.Free(b))
			}
			require.NoError(t, h.Check(), "control: clean before the stray write")
			stray := tc.at(b)
			stray[0] = 0x5a
			err = h.Check()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			stray[0] = 0
			require.NoError(t, h.Check(), "clean once undone")
			if !tc.free {
				require.NoError(t, h.Free(b))
			}
			require.NoError(t, h.Free(keep))
		})
	}
}
