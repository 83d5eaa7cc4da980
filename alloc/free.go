package alloc

import (
	"fmt"
	"unsafe"

	"github.com/secretheap/secretheap/pmdcache"
)

// The free paths of Heap (Free, freeRun, freeLarge) and the return of
// empty slabs and idle chunks (releaseLocked, trim). See doc.go for the
// design.

// releaseLocked returns sp's OS pages to its chunk (they are wiped already)
// and a wholly free chunk to the cache. It reports whether the chunks with
// no live block now exceed the idle bound: the caller then calls trim once
// it holds no lock. h.mu is held (and sp's shard lock, for a slab).
func (h *Heap) releaseLocked(sp *span) bool {
	cm := sp.cm
	for p := sp.firstPage; p < sp.firstPage+sp.npages; p++ {
		cm.pages[p].Store(nil)
	}
	setBits(cm.freeBits, int(sp.firstPage), int(sp.npages))
	cm.nfree += int(sp.npages)
	cm.nspans--
	if sp.kept {
		sp.kept = false
		cm.nkept--
	}
	if cm.nfree == cm.npages {
		h.noteChunkLocked(cm)
		h.dropChunkLocked(cm)
		// One more idle chunk in the cache.
		return h.husks > 0 && h.overIdleLocked()
	}
	return h.noteChunkLocked(cm)
}

// keepLocked marks sp, a slab that just became empty and that its shard
// keeps (Free), as kept, and reports whether the caller must trim (see
// releaseLocked). sp's shard lock and h.mu are held. A slab stays marked
// until it is released or trim finds it in use, so an Alloc/Free pair on
// the kept slab comes here once, not every time.
func (h *Heap) keepLocked(sp *span) bool {
	sp.kept = true
	sp.cm.nkept++
	return h.noteChunkLocked(sp.cm)
}

// noteChunkLocked updates cm.husk and h.husks after cm's spans changed and
// reports whether cm just became a husk that puts the heap over its idle
// bound. h.mu is held.
func (h *Heap) noteChunkLocked(cm *chunkMeta) bool {
	husk := cm.nspans > 0 && cm.nspans == cm.nkept
	if husk == cm.husk {
		return false
	}
	cm.husk = husk
	if !husk {
		h.husks--
		return false
	}
	h.husks++
	return h.overIdleLocked()
}

// overIdleLocked reports whether the chunks that hold no live block — husks
// and the cache's idle chunks — exceed idleBound. h.mu is held.
func (h *Heap) overIdleLocked() bool {
	if h.husks == 0 {
		return false
	}
	if h.husks > h.idleBound {
		return true
	}
	return h.husks+h.cache.Stats().IdleChunks > h.idleBound
}

// trim gives back the OS pages of the kept empty slabs of every husk, so
// that those chunks go to the cache, which keeps MaxIdleChunks of them and
// unmaps the rest: chunks that hold no live block stay within the idle
// bound, as DESIGN.md requires of wholly free chunks (each mapped chunk
// holds 2 MiB of RLIMIT_MEMLOCK). A kept slab found in use is unmarked
// instead: its chunk is not a husk. The next Alloc of a class whose kept
// slab went carves a new one, preferably in a chunk with live blocks, else
// in an idle chunk (committed already, no system call).
//
// It runs only when a Free made the heap cross the bound (releaseLocked,
// keepLocked), with no lock held: it takes every shard lock in index order,
// then h.mu, the lock order of the rest of the heap.
func (h *Heap) trim() {
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
	if h.closed.Load() || !h.overIdleLocked() {
		return // another trim got here first
	}
	var husks []*chunkMeta
	for _, cm := range h.chunks {
		if cm.husk {
			husks = append(husks, cm)
		}
	}
	for _, cm := range husks {
		inUse := false
		for p := 0; p < cm.npages; {
			sp := cm.pages[p].Load()
			if sp == nil {
				p++
				continue
			}
			if sp.used != 0 {
				inUse = true
				sp.kept = false
				cm.nkept--
			}
			p += int(sp.npages)
		}
		if inUse {
			h.noteChunkLocked(cm)
			continue
		}
		for p := 0; p < cm.npages; {
			sp := cm.pages[p].Load()
			if sp == nil {
				p++
				continue
			}
			p += int(sp.npages)
			sh := sp.shard
			sh.remove(sp)
			sh.stats[sp.class].slabs--
			h.releaseLocked(sp) // the last one gives the chunk to the cache
		}
	}
}

// dropChunkLocked returns a wholly free chunk to the cache. h.mu is held.
func (h *Heap) dropChunkLocked(cm *chunkMeta) {
	for i, c := range h.chunks {
		if c == cm {
			h.chunks = append(h.chunks[:i], h.chunks[i+1:]...)
			break
		}
	}
	cm.ch.Owner = nil
	h.cache.Put(cm.ch)
}

// Free wipes the block b starts at and returns it to the heap. b must start
// at the start of a block from Alloc and have a capacity of at least 1; its
// len and cap may be anything up to the allocated length. A nil slice is
// ignored. A slice outside every chunk of the heap gives ErrForeign, a closed
// heap ErrClosed. Misuse panics with a *MisuseError naming it, before
// anything is written: a double free (also of two goroutines freeing one
// block at once: exactly one succeeds), a slice starting inside a block but
// not at its start, or a slice of capacity 0 — Go gives a tail sub-slice
// such as b[len(b):] the block's own start address, so it cannot be told
// from the block and would free (and wipe) it.
func (h *Heap) Free(b []byte) error {
	p := unsafe.Pointer(unsafe.SliceData(b))
	if p == nil {
		return nil
	}
	if h.closed.Load() {
		return ErrClosed
	}
	addr := uintptr(p)
	ch := h.cache.Lookup(addr)
	if ch == nil {
		return h.foreign(addr)
	}
	if cap(b) == 0 {
		h.fail("tail slice", addr, 0, fmt.Sprintf("secretheap: free of a slice of capacity 0 at %#x: a tail sub-slice such as b[len(b):] carries its block's start address, so freeing it would free the block; pass the slice Alloc returned", addr))
	}
	if ch.Large() {
		return h.freeLarge(ch, addr)
	}
	cm, _ := ch.Owner.(*chunkMeta)
	if cm == nil {
		h.fail("not a block", addr, 0, fmt.Sprintf("secretheap: free of %#x, which is in an idle chunk, not a live block (double free?)", addr))
	}
	off := addr - uintptr(cm.base)
	sp := cm.pages[off>>osPageShift].Load()
	if sp == nil {
		if addr&(osPageSize-1) == 0 {
			// As the C core says it: only a page run (or a wild
			// pointer) starts on an OS page that is free now.
			h.fail("double free", addr, 0, fmt.Sprintf("secretheap: double free of %#x (no live block on that OS page: a page run freed twice, or a wild pointer)", addr))
		}
		h.fail("not a block", addr, 0, fmt.Sprintf("secretheap: free of %#x, which is on a free OS page, not a live block (double free?)", addr))
	}
	if sp.kind == kindRun {
		return h.freeRun(sp, addr)
	}
	i, exact := sp.blockIndex(addr - uintptr(sp.base))
	if !exact || i >= sp.nblocks {
		h.fail("interior pointer", addr, int(sp.size), fmt.Sprintf("secretheap: free of %#x, inside a block but not at its start (class %d B)", addr, sp.size))
	}
	sh := sp.shard
	sh.mu.Lock()
	if h.closed.Load() {
		sh.mu.Unlock()
		return ErrClosed
	}
	if sp.isFree(i) {
		sh.mu.Unlock()
		h.fail("double free", addr, int(sp.size), fmt.Sprintf("secretheap: double free of %#x (class %d B)", addr, sp.size))
	}
	wipe(p, uintptr(sp.size))
	sp.free[i>>6] |= 1 << (i & 63)
	wasFull := sp.used == sp.nblocks
	sp.used--
	st := &sh.stats[sp.class]
	st.requested -= uint64(sp.req[i])
	st.live--
	sp.req[i] = 0
	trim := false
	if wasFull {
		sh.insert(sp)
	} else if sp.used == 0 {
		// Empty. If the shard has another slab of the class to allocate
		// from, give the OS pages back; the last one stays (kept), so an
		// Alloc/Free pair does not carve and release every time. Kept
		// slabs must not pin chunks: see trim.
		sh.remove(sp)
		if sh.mask[sp.class].Load() == 0 {
			sh.insert(sp)
			if !sp.kept {
				h.mu.Lock()
				trim = h.keepLocked(sp)
				h.mu.Unlock()
			}
		} else {
			st.slabs--
			h.mu.Lock()
			trim = h.releaseLocked(sp)
			h.mu.Unlock()
		}
	} else if b := sp.bucketOf(); b != sp.bucket {
		sh.remove(sp)
		sh.insert(sp)
	}
	sh.mu.Unlock()
	if trim {
		h.trim()
	}
	return nil
}

// lockLiveSpan is the start of freeing a page run (kind names
// it in messages): addr must be the span's start and the span live. It
// returns with h.mu held, or ErrClosed with it released; misuse panics.
func (h *Heap) lockLiveSpan(sp *span, addr uintptr, kind string) error {
	if addr != uintptr(sp.base) {
		h.fail("interior pointer", addr, 0, fmt.Sprintf("secretheap: free of %#x, inside a %s at %#x but not at its start", addr, kind, uintptr(sp.base)))
	}
	h.mu.Lock()
	if h.closed.Load() {
		h.mu.Unlock()
		return ErrClosed
	}
	if sp.used == 0 {
		h.mu.Unlock()
		h.fail("double free", addr, 0, fmt.Sprintf("secretheap: double free of %#x (%s)", addr, kind))
	}
	return nil
}

// freeRun frees a page run.
func (h *Heap) freeRun(sp *span, addr uintptr) error {
	if err := h.lockLiveSpan(sp, addr, "page run"); err != nil {
		return err
	}
	wipe(sp.base, uintptr(sp.size))
	sp.used = 0
	h.runs.runs--
	h.runs.runRequested -= uint64(sp.req[0])
	h.runs.runReserved -= uint64(sp.size)
	trim := h.releaseLocked(sp)
	h.mu.Unlock()
	if trim {
		h.trim()
	}
	return nil
}

// foreign reports a slice in no chunk: a double free of a region the cache
// has unmapped since (named), else ErrForeign.
func (h *Heap) foreign(addr uintptr) error {
	h.mu.Lock()
	_, freed := h.freedLarges[addr]
	h.mu.Unlock()
	if freed {
		h.fail("double free", addr, 0, fmt.Sprintf("secretheap: double free of %#x (region, already unmapped)", addr))
	}
	return ErrForeign
}

// freeLarge frees the region of its own of chunk ch. The region is found
// in h.larges under h.mu, not through ch.Owner: of two goroutines freeing
// it at once, the second finds it gone and panics naming the double free.
func (h *Heap) freeLarge(ch *pmdcache.Chunk, addr uintptr) error {
	base := uintptr(ch.Base())
	if addr != base {
		h.fail("interior pointer", addr, 0, fmt.Sprintf("secretheap: free of %#x, inside a region at %#x but not at its start", addr, base))
	}
	h.mu.Lock()
	if h.closed.Load() {
		h.mu.Unlock()
		return ErrClosed
	}
	cm := h.larges[base]
	if cm == nil || cm.ch != ch {
		h.mu.Unlock()
		h.fail("double free", addr, 0, fmt.Sprintf("secretheap: double free of %#x (region)", addr))
	}
	sp := cm.largeSpan
	sp.used = 0
	delete(h.larges, base)
	h.freedLarges[base] = struct{}{}
	size := uintptr(sp.npages) << osPageShift
	h.runs.larges--
	h.runs.largeRequested -= cm.largeReq
	h.runs.largeReserved -= uint64(size)
	// Wipe before the region leaves our hands: the cache may keep it. The
	// chunk wipes what was touched (a lazy region's other OS pages are zero
	// and would only be faulted in by a wipe).
	cm.ch.Wipe(0, size)
	cm.ch.Owner = nil
	h.cache.Put(cm.ch)
	h.mu.Unlock()
	return nil
}
