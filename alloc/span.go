package alloc

import (
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/secretheap/secretheap/pmdcache"
)

// See doc.go for the overview of the data structures in this file.

const (
	osPageShift = 12
	// osPageSize is the kernel's unit of commit: the allocator never hands
	// out less than a slab of whole OS pages from a chunk.
	osPageSize = 1 << osPageShift
)

// spanKind says what a span carves its OS pages into.
type spanKind uint8

const (
	// kindSlab: blocks of one size class, tracked in the free bitmap.
	kindSlab spanKind = iota
	// kindRun: one block of whole OS pages inside a shared chunk.
	kindRun
	// kindLarge: one block that is a whole chunk of its own (GetLarge).
	kindLarge
)

// span is the out-of-band metadata of a slab or of a page run. It lives in
// Go memory, never in secret memory: an overflow of a block cannot reach
// the allocator's state, and a double free is seen in the bitmap before
// anything is written.
type span struct {
	// Set when the span is created (under Heap.mu), read-only afterwards.
	base      unsafe.Pointer // first byte of the span in its chunk
	cm        *chunkMeta
	shard     *shard // owning shard (slabs only); runs are guarded by Heap.mu
	firstPage uint32 // OS-page index of the span inside its chunk
	npages    uint32
	size      uint32 // block size (slab) or npages*osPageSize (run, large)
	divMul    uint32 // classDivMul[class]: offset*divMul>>32 == offset/size inside a slab
	nblocks   uint32
	class     uint8
	kind      spanKind

	// Guarded by shard.mu (slabs) or Heap.mu (runs and large regions).
	used       uint32
	free       [maxSlabBlocks / 64]uint64 // bit set = block free
	req        []uint32                   // requested length of each live block
	next, prev *span                      // shard's partial bucket list
	inPartial  bool
	// kept: the slab became empty and its shard kept it (Free). Written
	// with both shard.mu and Heap.mu held, so either lock suffices to read
	// it. Cleared when the slab is released, or by trim if it is in use.
	kept      bool
	bucket    uint8  // occupancy bucket while inPartial
	bucketMul uint32 // ⌈2^32/nblocks⌉, for bucketOf
}

// numBuckets is the number of occupancy buckets of a class's partial slabs.
//
// Alloc takes a block from the fullest slab first, so that the emptiest ones
// can drain and give their OS pages back instead of every slab keeping a few
// live blocks after a burst. Measured honestly: in BenchmarkChurn (uniformly
// random frees) it makes no difference — committed/live is 1.29 with 4
// buckets and with 1 (a plain most-recently-freed-first list) — because
// there the free blocks come from each class's live count drifting, not
// from the order of reuse. It costs a multiply and a compare per operation.
const numBuckets = 4

// bucketOf is the occupancy bucket of a slab with a free block:
// ⌊used × numBuckets / nblocks⌋, by multiplication (exact: used×4 ≤ 1024).
func (s *span) bucketOf() uint8 {
	return uint8((uint64(s.used*numBuckets) * uint64(s.bucketMul)) >> 32)
}

// initSlab makes s a slab of class c with every block free.
func (s *span) initSlab(c int) {
	s.kind = kindSlab
	s.class = uint8(c)
	s.size = classSize[c]
	s.divMul = classDivMul[c]
	s.nblocks = classSlabBlocks[c]
	s.bucketMul = ^uint32(0)/s.nblocks + 1
	s.used = 0
	s.free = [len(s.free)]uint64{}
	for i := uint32(0); i < s.nblocks; i++ {
		s.free[i>>6] |= 1 << (i & 63)
	}
	s.req = make([]uint32, s.nblocks)
}

// takeBlock clears the lowest free bit and returns its index, or -1 when
// the slab is full.
func (s *span) takeBlock() int {
	for w := range s.free {
		if x := s.free[w]; x != 0 {
			s.free[w] = x & (x - 1)
			s.used++
			return w<<6 | bits.TrailingZeros64(x)
		}
	}
	return -1
}

// isFree reports whether block i is free.
func (s *span) isFree(i uint32) bool { return s.free[i>>6]&(1<<(i&63)) != 0 }

// blockPtr returns the address of block i.
func (s *span) blockPtr(i uint32) unsafe.Pointer {
	return unsafe.Add(s.base, uintptr(i)*uintptr(s.size))
}

// blockIndex maps an offset from the span base to (block index, exact):
// exact is false for an address inside a block but not at its start.
func (s *span) blockIndex(off uintptr) (uint32, bool) {
	if s.kind != kindSlab {
		return 0, off == 0
	}
	i := uint32((uint64(off) * uint64(s.divMul)) >> 32)
	return i, uintptr(i)*uintptr(s.size) == off
}

// chunkMeta is the allocator's per-chunk metadata (pmdcache.Chunk.Owner).
type chunkMeta struct {
	ch     *pmdcache.Chunk
	base   unsafe.Pointer
	npages int

	// pages maps each OS page of the chunk to the span covering it, nil
	// when the page is free. Written under Heap.mu, read without it by Free
	// and Backend (a live block's span was stored before the block was
	// handed out, so a correct caller always sees it).
	pages []atomic.Pointer[span]

	// Guarded by Heap.mu.
	freeBits []uint64 // bit set = OS page free
	nfree    int
	nspans   int  // spans (slabs and runs) carved from the chunk
	nkept    int  // of which slabs marked kept (span.kept)
	husk     bool // nspans > 0 && nspans == nkept: no live block unless a kept slab was reused since
	large    bool // a region of its own holding one kindLarge span

	// Set for a region of its own (large), read-only afterwards.
	largeSpan *span
	largeReq  uint64 // requested length
}

func newChunkMeta(ch *pmdcache.Chunk) *chunkMeta {
	n := int(ch.Size() >> osPageShift)
	cm := &chunkMeta{
		ch:       ch,
		base:     ch.Base(),
		npages:   n,
		pages:    make([]atomic.Pointer[span], n),
		freeBits: make([]uint64, (n+63)/64),
		nfree:    n,
	}
	setBits(cm.freeBits, 0, n)
	return cm
}

// committedPages is how many OS pages at the start of the chunk are committed.
func (cm *chunkMeta) committedPages() int {
	return int(cm.ch.Committed() >> osPageShift)
}

// findRun returns the lowest index of k consecutive set bits among the
// first n bits of b, or -1. Lowest first keeps the used part of a chunk at
// its start, so its committed frontier (which never shrinks: secret OS pages
// can only be released with the whole chunk) stays compact.
func findRun(b []uint64, n, k int) int {
	run, start := 0, 0
	for i := 0; i < n; {
		w := b[i>>6] >> (i & 63)
		if w == 0 {
			run = 0
			i = (i | 63) + 1
			continue
		}
		if w&1 == 0 {
			run = 0
			i += bits.TrailingZeros64(w)
			continue
		}
		if run == 0 {
			start = i
		}
		// Bits above the shifted word are zero in w, so the run of ones
		// cannot spill past the word.
		o := bits.TrailingZeros64(^w)
		run += o
		i += o
		if run >= k {
			if start+k > n {
				return -1
			}
			return start
		}
	}
	return -1
}

// bestRun returns the start of the shortest run of at least k set bits
// among the first n bits of b (the lowest one among equals), or -1. Used
// among committed OS pages: filling the smallest hole that fits keeps the
// longer ones for slabs of more OS pages, so a chunk's committed part is
// used up before its frontier moves (BenchmarkChurn: committed/live).
func bestRun(b []uint64, n, k int) int {
	best, bestLen := -1, 0
	run, start := 0, 0
	for i := 0; i <= n; {
		var w uint64
		if i < n {
			w = b[i>>6] >> (i & 63)
		}
		if w&1 == 0 {
			if run >= k && (best < 0 || run < bestLen) {
				best, bestLen = start, run
				if run == k {
					return best
				}
			}
			run = 0
			if i == n {
				break
			}
			if w == 0 {
				i = (i | 63) + 1
			} else {
				i += bits.TrailingZeros64(w)
			}
			if i > n {
				i = n
			}
			continue
		}
		if run == 0 {
			start = i
		}
		o := bits.TrailingZeros64(^w)
		if i+o > n {
			o = n - i
		}
		run += o
		i += o
	}
	return best
}

// runLen is the length of the run of set bits at start, up to bit n.
func runLen(b []uint64, n, start int) int {
	i := start
	for i < n && b[i>>6]&(1<<(i&63)) != 0 {
		i++
	}
	return i - start
}

// setBits sets bits [start, start+k).
func setBits(b []uint64, start, k int) {
	for i := start; i < start+k; i++ {
		b[i>>6] |= 1 << (i & 63)
	}
}

// clearBits clears bits [start, start+k).
func clearBits(b []uint64, start, k int) {
	for i := start; i < start+k; i++ {
		b[i>>6] &^= 1 << (i & 63)
	}
}

// wipe zeroes n bytes at p. The compiler cannot drop these stores: p points
// into a chunk that stays mapped and reachable after the call (through the
// heap's chunk table, and the block is handed out again by a later Alloc),
// so the writes are observable and not dead stores to a dying object. A Go
// compiler may only elide stores it can prove are never read, which is
// impossible for memory reached through an unsafe.Pointer into a mapping.
func wipe(p unsafe.Pointer, n uintptr) {
	if n <= 128 {
		// Small blocks (n is a multiple of 16): inline 16-byte stores,
		// cheaper than a call to the runtime's memclr.
		for off := uintptr(0); off < n; off += 16 {
			*(*[2]uint64)(unsafe.Add(p, off)) = [2]uint64{}
		}
		return
	}
	clear(unsafe.Slice((*byte)(p), n))
}

// isZero reports whether n bytes at p are all zero.
func isZero(p unsafe.Pointer, n uintptr) bool {
	b := unsafe.Slice((*byte)(p), n)
	// Word at a time: blocks are 16-byte aligned and sized.
	w := unsafe.Slice((*uint64)(p), n/8)
	for _, x := range w {
		if x != 0 {
			return false
		}
	}
	for _, x := range b[n/8*8:] {
		if x != 0 {
			return false
		}
	}
	return true
}
