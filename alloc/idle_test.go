package alloc_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
)

// TestEmptySlabsDoNotPinChunks: after a burst of mixed blocks is allocated
// and all freed, the slabs the heap keeps empty (one per class per shard at
// most) must not hold chunks mapped beyond the idle bound. Chunks that hold
// nothing but kept empty slabs count against MaxIdleChunks, with a floor of
// one chunk (so an Alloc/Free pair never maps and unmaps a chunk).
//
// Control: the chunks mapped at the peak of the burst are far above the
// bound, so the bound is not met trivially.
func TestEmptySlabsDoNotPinChunks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		idle       int // Config.MaxIdleChunks
		goroutines int
		wantMapped uint64 // at most, after all is freed
	}{
		{"default bound, one goroutine", 0, 1, 2},
		{"default bound, four goroutines", 0, 4, 2},
		{"one idle chunk", 1, 4, 1},
		{"no idle chunks", -1, 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeap(t, alloc.Config{MaxIdleChunks: tc.idle})
			const burst = 24 << 20 // bytes per test, split over the goroutines
			blocks := make([][][]byte, tc.goroutines)
			var wg sync.WaitGroup
			for g := range blocks {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 7))
					for total := 0; total < burst/tc.goroutines; {
						// Every class, small ones more often.
						n := 1 + r.IntN(256)
						if r.IntN(4) == 0 {
							n = 1 + r.IntN(alloc.MaxSmallSize)
						}
						b, err := h.Alloc(n)
						if err != nil {
							panic(err)
						}
						blocks[g] = append(blocks[g], b)
						total += n
					}
				}()
			}
			wg.Wait()
			peak := h.Stats().ChunksMapped
			require.Greater(t, peak, tc.wantMapped+4, "control: the burst maps many chunks")
			// Free in an order unrelated to allocation, from other goroutines.
			for g := range blocks {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bs := blocks[(g+1)%len(blocks)]
					r := rand.New(rand.NewPCG(uint64(g), 8))
					r.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
					for _, b := range bs {
						if err := h.Free(b); err != nil {
							panic(err)
						}
					}
				}()
			}
			wg.Wait()
			require.NoError(t, h.Check())
			st := h.Stats()
			require.Zero(t, st.LiveBlocks)
			assert.LessOrEqual(t, st.ChunksMapped, tc.wantMapped,
				fmt.Sprintf("chunks mapped with no live block (peak %d, %d idle, %d slabs kept)", peak, st.IdleChunks, slabs(st)))
			// The heap still works, and reuses what it kept.
			b, err := h.Alloc(100)
			require.NoError(t, err)
			require.NoError(t, h.Free(b))
			require.NoError(t, h.Check())
		})
	}
}

func slabs(st alloc.Stats) (n uint64) {
	for _, c := range st.Classes {
		n += c.Slabs
	}
	return n
}
