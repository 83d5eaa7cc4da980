package alloc

import (
	"errors"
	"fmt"
	"math/bits"
	"unsafe"
)

// Check verifies the heap's invariants and returns every violation found
// (at most 20, joined), or nil. It is for tests and debugging, as mimalloc's
// _mi_page_is_valid is for a page: a violation means a bug in the heap or
// memory corruption by its caller (a write after free, or past a block's
// requested length through unsafe).
//
// It verifies, for every slab, that used + free == capacity, that every free
// block is wiped and its requested length zero, and that at most one empty
// slab per class and shard is kept; that the bytes of every live block past
// its requested length, every slab's tail after its last block and every
// committed OS page outside all spans are zero (so nothing the heap is not
// handing out holds old bytes); that the OS-page table agrees with each
// chunk's free-page bitmap and span counts; that every used OS page is
// committed; that the partial lists hold exactly the slabs with a free block;
// and that the counters behind Stats agree with the slabs, runs and regions.
//
// Cost: it takes every lock of the heap for the whole walk (Alloc and Free
// wait), allocates a few maps, and reads every committed byte of every chunk
// and region: O(committed memory), ~0.2 ms per committed MiB here (~0.7 ms
// under -race).
// It is exact only when no other goroutine is using the heap: it cannot tell
// a block another goroutine is writing past its length from corruption, and
// a concurrent caller's operations are seen before or after, not during. On
// a closed heap it returns nil.
func (h *Heap) Check() error {
	for i := range h.shards {
		h.shards[i].mu.Lock()
	}
	h.mu.Lock()
	defer func() {
		h.mu.Unlock()
		for i := range h.shards {
			h.shards[i].mu.Unlock()
		}
	}()
	if h.closed.Load() {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	shardIndex := make(map[*shard]int, len(h.shards))
	for i := range h.shards {
		shardIndex[&h.shards[i]] = i
	}
	type key struct{ shard, class int }
	live := map[key]uint64{}
	req := map[key]uint64{}
	slabs := map[key]uint64{}
	inPartial := map[*span]bool{}
	var runs, runReq, runRes uint64
	type shardClass struct {
		sh *shard
		c  uint8
	}
	emptySlabs := map[shardClass]int{}
	husks := 0

	for _, cm := range h.chunks {
		nspans, nkept := 0, 0
		if cm.ch.Owner != cm {
			bad("chunk %p: Owner is not its metadata", cm.base)
		}
		committed := cm.committedPages()
		free := 0
		for w, x := range cm.freeBits {
			free += bits.OnesCount64(x)
			if hi := (w + 1) * 64; hi > cm.npages && x>>(cm.npages-w*64) != 0 {
				bad("chunk %p: free bits beyond its %d OS pages", cm.base, cm.npages)
			}
		}
		if free != cm.nfree {
			bad("chunk %p: nfree %d, bitmap says %d", cm.base, cm.nfree, free)
		}
		if free == cm.npages {
			bad("chunk %p: wholly free but not returned to the cache", cm.base)
		}
		for p := 0; p < cm.npages; {
			sp := cm.pages[p].Load()
			isFree := cm.freeBits[p>>6]&(1<<(p&63)) != 0
			if sp == nil {
				if !isFree {
					bad("chunk %p OS page %d: used in the bitmap but no span", cm.base, p)
				}
				if p < committed && !isZero(unsafe.Add(cm.base, p<<osPageShift), osPageSize) {
					bad("chunk %p OS page %d: free but not zero", cm.base, p)
				}
				p++
				continue
			}
			if int(sp.firstPage) != p || sp.cm != cm {
				bad("chunk %p OS page %d: span starts at page %d", cm.base, p, sp.firstPage)
				p++
				continue
			}
			for q := p; q < p+int(sp.npages); q++ {
				if q >= cm.npages || cm.pages[q].Load() != sp || cm.freeBits[q>>6]&(1<<(q&63)) != 0 {
					bad("chunk %p OS page %d: not covered by the span at page %d", cm.base, q, p)
				}
			}
			nspans++
			if sp.kept {
				nkept++
				if sp.kind != kindSlab {
					bad("span %p: a page run marked kept", sp.base)
				}
			}
			if p+int(sp.npages) > committed {
				bad("chunk %p: span at OS pages [%d,%d) beyond the committed %d", cm.base, p, p+int(sp.npages), committed)
			}
			switch sp.kind {
			case kindSlab:
				h.checkSlab(sp, bad)
				si, ok := shardIndex[sp.shard]
				if !ok {
					bad("slab %p: shard not of this heap", sp.base)
				}
				k := key{si, int(sp.class)}
				live[k] += uint64(sp.used)
				slabs[k]++
				for i := uint32(0); i < sp.nblocks; i++ {
					if !sp.isFree(i) {
						req[k] += uint64(sp.req[i])
					}
				}
				inPartial[sp] = sp.inPartial
				if sp.used == 0 {
					// Free releases an empty slab unless its shard has
					// no other slab of the class with a free block.
					if !sp.kept {
						bad("slab %p class %d B: empty but not marked kept", sp.base, sp.size)
					}
					emptySlabs[shardClass{sp.shard, sp.class}]++
				}
			case kindRun:
				if sp.used != 1 || sp.nblocks != 1 || sp.size != sp.npages<<osPageShift {
					bad("run %p: used %d nblocks %d size %d", sp.base, sp.used, sp.nblocks, sp.size)
				}
				if !zeroRange(sp.base, uintptr(sp.req[0]), uintptr(sp.size)) {
					bad("run %p: bytes past its requested %d B are not zero", sp.base, sp.req[0])
				}
				runs++
				runReq += uint64(sp.req[0])
				runRes += uint64(sp.size)
			default:
				bad("span %p: kind %d inside a shared chunk", sp.base, sp.kind)
			}
			p += int(sp.npages)
		}
		if cm.nspans != nspans || cm.nkept != nkept {
			bad("chunk %p: counts %d spans %d kept, the OS-page table says %d %d", cm.base, cm.nspans, cm.nkept, nspans, nkept)
		}
		if husk := nspans > 0 && nspans == nkept; cm.husk != husk {
			bad("chunk %p: husk %v, its spans say %v", cm.base, cm.husk, husk)
		}
		if cm.husk {
			husks++
		}
	}
	if husks != h.husks {
		bad("heap counts %d chunks holding only kept slabs, the chunks say %d", h.husks, husks)
	}
	for k, n := range emptySlabs {
		if n > 1 {
			bad("shard %d class %d B: %d empty slabs kept, at most one", shardIndex[k.sh], classSize[k.c], n)
		}
	}

	for si := range h.shards {
		sh := &h.shards[si]
		for c := range sh.partial {
			for b := range sh.partial[c] {
				var prev *span
				if (sh.partial[c][b] != nil) != (sh.mask[c].Load()&(1<<b) != 0) {
					bad("shard %d class %d: bucket %d mask bit disagrees with the list", si, c, b)
				}
				for sp := sh.partial[c][b]; sp != nil; sp = sp.next {
					if sp.prev != prev {
						bad("shard %d class %d: broken back link at %p", si, c, sp.base)
					}
					if int(sp.class) != c || sp.shard != sh {
						bad("shard %d class %d: slab %p of class %d shard %d in the list", si, c, sp.base, sp.class, shardIndex[sp.shard])
					}
					if sp.used >= sp.nblocks {
						bad("shard %d class %d: full slab %p in the partial list", si, c, sp.base)
					}
					if int(sp.bucket) != b || sp.bucketOf() != sp.bucket {
						bad("shard %d class %d: slab %p (%d/%d used) in bucket %d, marked %d", si, c, sp.base, sp.used, sp.nblocks, b, sp.bucket)
					}
					v, ok := inPartial[sp]
					if !ok {
						bad("shard %d class %d: slab %p in the list is not in any chunk", si, c, sp.base)
					} else if !v {
						bad("shard %d class %d: slab %p in the list not marked", si, c, sp.base)
					}
					delete(inPartial, sp)
					prev = sp
				}
			}
			st := sh.stats[c]
			k := key{si, c}
			if st.live != live[k] || st.requested != req[k] || st.slabs != slabs[k] {
				bad("shard %d class %d: counters live %d requested %d slabs %d, slabs say %d %d %d",
					si, c, st.live, st.requested, st.slabs, live[k], req[k], slabs[k])
			}
		}
	}
	for sp, v := range inPartial {
		if v {
			bad("slab %p marked partial but not in its list", sp.base)
		}
		if sp.used < sp.nblocks {
			bad("slab %p has a free block but is not in its partial list", sp.base)
		}
	}
	if h.runs.runs != runs || h.runs.runRequested != runReq || h.runs.runReserved != runRes {
		bad("run counters %d %d %d, runs say %d %d %d", h.runs.runs, h.runs.runRequested, h.runs.runReserved, runs, runReq, runRes)
	}
	var larges, largeReq, largeRes uint64
	for _, cm := range h.larges {
		sp := cm.largeSpan
		if !cm.large || sp == nil || sp.used != 1 || cm.ch.Owner != cm {
			bad("large region %p: inconsistent", cm.base)
			continue
		}
		size := uint64(sp.npages) << osPageShift
		if uint64(cm.ch.Committed()) < size {
			bad("large region %p: %d bytes committed of %d", cm.base, cm.ch.Committed(), size)
		}
		if !zeroRange(sp.base, uintptr(cm.largeReq), uintptr(size)) {
			bad("large region %p: bytes past its requested %d B are not zero", cm.base, cm.largeReq)
		}
		larges++
		largeReq += cm.largeReq
		largeRes += size
	}
	if h.runs.larges != larges || h.runs.largeRequested != largeReq || h.runs.largeReserved != largeRes {
		bad("large counters %d %d %d, regions say %d %d %d", h.runs.larges, h.runs.largeRequested, h.runs.largeReserved, larges, largeReq, largeRes)
	}
	return errors.Join(errs...)
}

// checkSlab checks one slab: used + free == capacity, no free bit past the
// last block, every free block wiped and its requested length zero, every
// live block zero past its requested length, the tail after the last block
// zero.
func (h *Heap) checkSlab(sp *span, bad func(string, ...any)) {
	c := int(sp.class)
	if sp.size != classSize[c] || sp.nblocks != classSlabBlocks[c] || sp.npages != classSlabPages[c] {
		bad("slab %p: geometry %d B × %d in %d OS pages, class %d says %d × %d in %d",
			sp.base, sp.size, sp.nblocks, sp.npages, c, classSize[c], classSlabBlocks[c], classSlabPages[c])
		return
	}
	if uint64(sp.nblocks)*uint64(sp.size) > uint64(sp.npages)<<osPageShift {
		bad("slab %p: blocks overflow the slab", sp.base)
	}
	nfree := 0
	for w, x := range sp.free {
		nfree += bits.OnesCount64(x)
		lo := uint32(w * 64)
		if lo+64 > sp.nblocks {
			var valid uint64
			if sp.nblocks > lo {
				valid = 1<<(sp.nblocks-lo) - 1
			}
			if x&^valid != 0 {
				bad("slab %p: free bit past its %d blocks", sp.base, sp.nblocks)
			}
		}
	}
	if uint32(nfree)+sp.used != sp.nblocks {
		bad("slab %p class %d B: used %d + free %d != capacity %d", sp.base, sp.size, sp.used, nfree, sp.nblocks)
	}
	for i := uint32(0); i < sp.nblocks; i++ {
		if !sp.isFree(i) {
			if sp.req[i] == 0 || sp.req[i] > sp.size {
				bad("slab %p block %d: requested length %d for class %d B", sp.base, i, sp.req[i], sp.size)
			} else if !zeroRange(sp.blockPtr(i), uintptr(sp.req[i]), uintptr(sp.size)) {
				bad("slab %p block %d (%#x, class %d B): bytes past its requested %d B are not zero", sp.base, i, uintptr(sp.blockPtr(i)), sp.size, sp.req[i])
			}
			continue
		}
		if sp.req[i] != 0 {
			bad("slab %p block %d: free with requested length %d", sp.base, i, sp.req[i])
		}
		if !isZero(sp.blockPtr(i), uintptr(sp.size)) {
			bad("slab %p block %d (%#x, class %d B): free but not wiped", sp.base, i, uintptr(sp.blockPtr(i)), sp.size)
		}
	}
	if !zeroRange(sp.base, uintptr(sp.nblocks)*uintptr(sp.size), uintptr(sp.npages)<<osPageShift) {
		bad("slab %p class %d B: tail after the last block is not zero", sp.base, sp.size)
	}
}

// zeroRange reports whether the bytes [from, to) at p are all zero.
func zeroRange(p unsafe.Pointer, from, to uintptr) bool {
	for ; from < to && from%8 != 0; from++ {
		if *(*byte)(unsafe.Add(p, from)) != 0 {
			return false
		}
	}
	return from >= to || isZero(unsafe.Add(p, from), to-from)
}
