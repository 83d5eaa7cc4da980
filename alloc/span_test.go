package alloc

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSizeToClass: every size maps to the smallest class that holds it.
func TestSizeToClass(t *testing.T) {
	for n := 1; n <= maxSmallSize; n++ {
		c := sizeToClass(n)
		require.GreaterOrEqual(t, int(classSize[c]), n, "size %d", n)
		if c > 0 {
			require.Less(t, int(classSize[c-1]), n, "size %d: class %d is not the smallest", n, c)
		}
		require.Zero(t, classSize[c]%16, "class %d not 16-byte aligned", c)
	}
}

// TestBlockIndex: the reciprocal division is exact at every offset of every
// slab, and flags offsets that are not a block start.
func TestBlockIndex(t *testing.T) {
	for c := 0; c < numClasses; c++ {
		var s span
		s.initSlab(c)
		slab := uintptr(classSlabPages[c]) << osPageShift
		for off := uintptr(0); off < slab; off++ {
			i, exact := s.blockIndex(off)
			if uint32(off/uintptr(s.size)) != i || exact != (off%uintptr(s.size) == 0) {
				t.Fatalf("class %d offset %d: got (%d, %v)", c, off, i, exact)
			}
		}
	}
}

func TestTakeBlock(t *testing.T) {
	var s span
	s.initSlab(2) // 48 B, 85 blocks: the last bitmap word is partial
	seen := map[int]bool{}
	for k := 0; k < int(s.nblocks); k++ {
		i := s.takeBlock()
		require.GreaterOrEqual(t, i, 0)
		require.Less(t, i, int(s.nblocks))
		require.False(t, seen[i])
		seen[i] = true
	}
	assert.Equal(t, -1, s.takeBlock(), "a full slab hands out nothing")
	assert.Equal(t, s.nblocks, s.used)
}

// TestFindRun compares findRun with a naive scan on random bitmaps.
func TestFindRun(t *testing.T) {
	naive := func(b []uint64, n, k int) int {
		for i := 0; i+k <= n; i++ {
			ok := true
			for j := i; j < i+k; j++ {
				if b[j>>6]&(1<<(j&63)) == 0 {
					ok = false
					break
				}
			}
			if ok {
				return i
			}
		}
		return -1
	}
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 20000; iter++ {
		n, b := randomBitmap(r)
		k := 1 + r.IntN(40)
		if got, want := findRun(b, n, k), naive(b, n, k); got != want {
			t.Fatalf("n=%d k=%d bits=%x: got %d want %d", n, k, b, got, want)
		}
	}
	b := make([]uint64, 8)
	setBits(b, 0, 512)
	assert.Equal(t, 0, findRun(b, 512, 512))
	clearBits(b, 100, 3)
	assert.Equal(t, 103, findRun(b, 512, 200))
	assert.Equal(t, -1, findRun(b, 512, 410))
	assert.Equal(t, 0, findRun(b, 512, 100))
}

// TestBestRun compares bestRun with a naive scan on random bitmaps.
func TestBestRun(t *testing.T) {
	naive := func(b []uint64, n, k int) int {
		best, bestLen := -1, 0
		for i := 0; i < n; {
			if b[i>>6]&(1<<(i&63)) == 0 {
				i++
				continue
			}
			j := i
			for j < n && b[j>>6]&(1<<(j&63)) != 0 {
				j++
			}
			if j-i >= k && (best < 0 || j-i < bestLen) {
				best, bestLen = i, j-i
			}
			i = j
		}
		return best
	}
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 20000; iter++ {
		n, b := randomBitmap(r)
		k := 1 + r.IntN(8)
		if got, want := bestRun(b, n, k), naive(b, n, k); got != want {
			t.Fatalf("n=%d k=%d bits=%x: got %d want %d", n, k, b, got, want)
		}
	}
}

// randomBitmap returns n (1 to 512) and a free-page bitmap of random density
// with a spare word: bits past n stand for uncommitted OS pages and may be
// set, as they may be in a chunk.
func randomBitmap(r *rand.Rand) (int, []uint64) {
	n := 1 + r.IntN(512)
	b := make([]uint64, (n+63)/64+1)
	density := r.Float64()
	for i := 0; i < len(b)*64; i++ {
		if r.Float64() < density {
			b[i>>6] |= 1 << (i & 63)
		}
	}
	return n, b
}
