package alloc

import (
	"errors"
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/secretheap/secretheap/pmdcache"
)

// The allocation paths of Heap: small blocks from slabs of a shard (Alloc,
// refill, carveLocked), page runs and large regions (allocRun, allocLarge).
// See doc.go for the design.

// Alloc returns n bytes of secret memory: len n, cap n, all zero, 16-byte
// aligned. n ≤ 0 or too large gives ErrTooLarge; running out of secret memory
// gives an error wrapping ErrExhausted (or a panic with OnExhausted abort).
func (h *Heap) Alloc(n int) ([]byte, error) {
	if n <= 0 || n > maxSmallSize {
		return h.allocRun(n)
	}
	c := sizeToClass(n)
	// Fast path: the first shard, from the goroutine's start (shardHint),
	// that has a slab of the class with a free block and is not locked.
	// Slabs of a class are thus shared by all shards while there is no
	// contention (few partial slabs per class: the churn benchmark's
	// committed/live), and a contended shard is skipped, which ends in a
	// slab of the contender's own (below).
	r := shardHint()
	for j := uint32(0); j <= h.mask; j++ {
		sh := &h.shards[(r+j)&h.mask]
		if sh.mask[c].Load() == 0 || !sh.mu.TryLock() {
			continue
		}
		if m := sh.mask[c].Load(); m != 0 && !h.closed.Load() {
			return h.allocFrom(sh, sh.partial[c][bits.Len32(m)-1], n)
		}
		sh.mu.Unlock()
	}
	sh := h.lockShard(r)
	sp, err := h.refill(sh, c)
	if err != nil {
		if err == errNoFit {
			return h.allocRun(n)
		}
		return nil, h.onExhausted(n, err)
	}
	return h.allocFrom(sh, sp, n)
}

// allocFrom takes a block of slab sp of shard sh (locked, unlocked on return).
func (h *Heap) allocFrom(sh *shard, sp *span, n int) ([]byte, error) {
	i := sp.takeBlock()
	if sp.used == sp.nblocks {
		sh.remove(sp)
	} else if b := sp.bucketOf(); b != sp.bucket {
		sh.remove(sp)
		sh.insert(sp)
	}
	sp.req[i] = uint32(n)
	st := &sh.stats[sp.class]
	st.requested += uint64(n)
	st.live++
	sh.mu.Unlock()
	p := sp.blockPtr(uint32(i))
	if h.checkZero {
		h.verifyZero(p, uintptr(sp.size), int(sp.size))
	}
	return unsafe.Slice((*byte)(p), n), nil
}

// refill returns a slab of class c with a free block for shard sh (locked):
// one that appeared since Alloc looked, or a new one carved from a chunk
// under the slow-path lock. On error sh is unlocked.
func (h *Heap) refill(sh *shard, c int) (*span, error) {
	if h.closed.Load() {
		sh.mu.Unlock()
		return nil, ErrClosed
	}
	if m := sh.mask[c].Load(); m != 0 {
		return sh.partial[c][bits.Len32(m)-1], nil
	}
	h.mu.Lock()
	sp, err := h.carveLocked(int(classSlabPages[c]))
	if err != nil {
		h.mu.Unlock()
		sh.mu.Unlock()
		return nil, err
	}
	sp.shard = sh
	sp.initSlab(c)
	h.publishLocked(sp)
	h.mu.Unlock()
	sh.insert(sp)
	sh.stats[c].slabs++
	return sp, nil
}

// insert puts s first in the bucket of its occupancy.
func (sh *shard) insert(s *span) {
	b := s.bucketOf()
	s.bucket = b
	head := sh.partial[s.class][b]
	s.prev, s.next = nil, head
	if head != nil {
		head.prev = s
	}
	sh.partial[s.class][b] = s
	if m := sh.mask[s.class].Load(); m&(1<<b) == 0 {
		sh.mask[s.class].Store(m | 1<<b)
	}
	s.inPartial = true
}

// remove takes s out of its bucket.
func (sh *shard) remove(s *span) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		sh.partial[s.class][s.bucket] = s.next
		if s.next == nil {
			sh.mask[s.class].Store(sh.mask[s.class].Load() &^ (1 << s.bucket))
		}
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.next, s.prev = nil, nil
	s.inPartial = false
}

// carveLocked takes npages consecutive OS pages from a chunk, committed, and
// returns an unpublished span over them. First choice: the smallest hole of
// committed free OS pages that fits, over all chunks (best fit keeps longer
// holes for longer slabs, so the committed frontier moves only when it must).
// Then the lowest free OS pages of the first chunk that has them (committing
// them), then a new chunk from the cache. h.mu is held.
func (h *Heap) carveLocked(npages int) (*span, error) {
	var best *chunkMeta
	bestAt, bestLen := -1, 0
	for _, cm := range h.chunks {
		if cm.nfree < npages {
			continue
		}
		committed := min(cm.committedPages(), cm.npages)
		if i := bestRun(cm.freeBits, committed, npages); i >= 0 {
			l := runLen(cm.freeBits, committed, i)
			if best == nil || l < bestLen {
				best, bestAt, bestLen = cm, i, l
				if l == npages {
					break
				}
			}
		}
	}
	if best != nil {
		return h.takeLocked(best, bestAt, npages)
	}
	for _, cm := range h.chunks {
		if cm.nfree >= npages {
			if i := findRun(cm.freeBits, cm.npages, npages); i >= 0 {
				return h.takeLocked(cm, i, npages)
			}
		}
	}
	ch, err := h.cache.Get()
	if err != nil {
		return nil, err
	}
	if uintptr(npages)<<osPageShift > ch.Size() {
		// A small chunk (memlock pressure): the span must go elsewhere.
		h.cache.Put(ch)
		return nil, errNoFit
	}
	cm := newChunkMeta(ch)
	ch.Owner = cm
	h.chunks = append(h.chunks, cm)
	return h.takeLocked(cm, 0, npages)
}

// takeLocked commits OS pages [i, i+npages) of cm if needed and marks them used.
func (h *Heap) takeLocked(cm *chunkMeta, i, npages int) (*span, error) {
	end := uintptr(i+npages) << osPageShift
	if end > cm.ch.Committed() {
		if err := cm.ch.Commit(end); err != nil {
			if cm.nfree == cm.npages {
				h.dropChunkLocked(cm)
			}
			return nil, err
		}
	}
	clearBits(cm.freeBits, i, npages)
	cm.nfree -= npages
	cm.nspans++
	h.noteChunkLocked(cm)
	return &span{
		base:      unsafe.Add(cm.base, uintptr(i)<<osPageShift),
		cm:        cm,
		firstPage: uint32(i),
		npages:    uint32(npages),
	}, nil
}

// publishLocked makes sp findable from its OS pages (for Free and Backend).
// sp must be fully initialised first: readers load it without a lock.
func (h *Heap) publishLocked(sp *span) {
	for p := sp.firstPage; p < sp.firstPage+sp.npages; p++ {
		sp.cm.pages[p].Store(sp)
	}
}

// allocRun serves n > maxSmallSize (and classes whose slab does not fit the
// chunks the cache hands out) with whole OS pages: a run inside a chunk, or
// a region of its own for more than half a chunk.
func (h *Heap) allocRun(n int) ([]byte, error) {
	if n <= 0 || n > maxAlloc || (h.cfg.Limit > 0 && uint64(n) > h.cfg.Limit) {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	npages := (n + osPageSize - 1) >> osPageShift
	if n > largeMin {
		return h.allocLarge(n)
	}
	h.mu.Lock()
	if h.closed.Load() {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	sp, err := h.carveLocked(npages)
	if err != nil {
		h.mu.Unlock()
		if err == errNoFit {
			return h.allocLarge(n)
		}
		return nil, h.onExhausted(n, err)
	}
	sp.kind = kindRun
	sp.size = uint32(npages) << osPageShift
	sp.nblocks = 1
	sp.used = 1
	sp.req = []uint32{uint32(n)}
	h.publishLocked(sp)
	h.runs.runs++
	h.runs.runRequested += uint64(n)
	h.runs.runReserved += uint64(sp.size)
	h.mu.Unlock()
	if h.checkZero {
		h.verifyZero(sp.base, uintptr(sp.size), 0)
	}
	return unsafe.Slice((*byte)(sp.base), n), nil
}

// allocLarge gives n bytes a region of their own.
func (h *Heap) allocLarge(n int) ([]byte, error) {
	if h.closed.Load() {
		return nil, ErrClosed
	}
	size := (uintptr(n) + osPageSize - 1) &^ (osPageSize - 1)
	ch, err := h.cache.GetLarge(size)
	if err != nil {
		return nil, h.onExhausted(n, err)
	}
	if ch.Committed() < size {
		if err := ch.Commit(size); err != nil {
			h.cache.Put(ch)
			return nil, h.onExhausted(n, err)
		}
	}
	cm := &chunkMeta{ch: ch, base: ch.Base(), large: true}
	sp := &span{
		base:    cm.base,
		cm:      cm,
		npages:  uint32(size >> osPageShift),
		nblocks: 1,
		used:    1,
		kind:    kindLarge,
		req:     []uint32{0},
	}
	cm.largeSpan = sp
	cm.largeReq = uint64(n)
	ch.Owner = cm
	h.mu.Lock()
	h.larges[uintptr(cm.base)] = cm
	delete(h.freedLarges, uintptr(cm.base))
	h.runs.larges++
	h.runs.largeRequested += uint64(n)
	h.runs.largeReserved += uint64(size)
	h.mu.Unlock()
	if h.checkZero {
		h.verifyZero(sp.base, size, 0)
	}
	return unsafe.Slice((*byte)(sp.base), n), nil
}

// onExhausted wraps a refusal from the layer below and applies
// Config.OnExhausted. No lock is held.
func (h *Heap) onExhausted(n int, err error) error {
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrTooLarge) {
		return err
	}
	if errors.Is(err, pmdcache.ErrClosed) { // Close raced with this Alloc
		return ErrClosed
	}
	e := fmt.Errorf("%w: allocating %d bytes: %w", ErrExhausted, n, err)
	if h.cfg.OnExhausted == ExhaustedAbort {
		panic(e)
	}
	h.exhausted.Add(1)
	return e
}

// verifyZero panics if a block handed out again is not all zero: someone
// wrote to it while it was free.
func (h *Heap) verifyZero(p unsafe.Pointer, n uintptr, class int) {
	if !isZero(p, n) {
		h.fail("write after free", uintptr(p), class,
			fmt.Sprintf("secretheap: write after free: block %#x (%s) was modified while free", uintptr(p), className(class)))
	}
}
