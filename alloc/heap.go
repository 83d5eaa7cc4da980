package alloc

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/pmdcache"
	"github.com/secretheap/secretheap/secretmem"
)

// See doc.go for the design of the heap.

var (
	// ErrTooLarge: the size is ≤ 0 or larger than any allocation could be
	// (past the Limit, or past the address space the chunk cache reserves).
	ErrTooLarge = errors.New("secretheap: allocation size out of range")
	// ErrExhausted: secret memory ran out (Config.Limit or RLIMIT_MEMLOCK).
	// The returned error also wraps the cause from the layer below.
	ErrExhausted = errors.New("secretheap: secret memory exhausted")
	// ErrForeign: Free or Backend got a slice that lies in no chunk of this
	// heap (Go memory, another heap, memory of a closed heap).
	ErrForeign = errors.New("secretheap: slice not allocated by this heap")
	// ErrClosed: the heap was closed.
	ErrClosed = errors.New("secretheap: heap is closed")

	// errNoFit: a span does not fit in a chunk of the size the cache hands
	// out (chunks shrink under memlock pressure); the caller falls back to a
	// page run or a region of its own.
	errNoFit = errors.New("span larger than a chunk")
)

const (
	// maxAlloc bounds one allocation. The chunk cache reserves 64 GiB of
	// address space; half of it for one block is already absurd for keys.
	maxAlloc = 32 << 30
	// largeMin: a request of more than half a chunk (2 MiB) gets a region
	// of its own — sharing a chunk would strand the rest of it.
	largeMin = 1 << 20
	// commitRunPages caps pmdcache's commit runs (they double from one OS
	// page up to this). The committed part of a chunk never shrinks, so
	// what a run commits beyond need stays committed: in BenchmarkChurn
	// committed/live was 1.292 with the default 64, 1.276 with 16, 1.269
	// with 4, 1.272 with 1 (exact), measured with slab tails of up to 1/8;
	// with tails of 1/32 it is 1.231 at 16. 16 keeps a chunk's growth to ~32
	// pread calls of ≤ 64 KiB each (~0.4 ms of faults per call) on the slow
	// path.
	commitRunPages = 16
	// maxShards bounds the shards of a heap (each costs ~1 KiB of Go memory
	// and keeps up to one empty slab per class; chunks holding nothing else
	// count against the idle bound: see trim).
	maxShards = 64
)

// MisuseError is the panic value for a misuse the heap caught: a double free,
// a pointer inside a chunk that is not the start of a live block, or (with
// CheckZero) a write after free. These are fatal by design, as in mimalloc's
// secure mode: the heap state is fine, but the caller's is not.
type MisuseError struct {
	Kind  string  // "double free", "interior pointer", "not a block", "tail slice", "write after free"
	Addr  uintptr // the address passed in
	Class int     // block size of the class in bytes, 0 for page runs and regions
	Msg   string  // the full message
}

func (e *MisuseError) Error() string { return e.Msg }

// Heap is a secret-memory allocator. It is safe for concurrent use.
type Heap struct {
	cache     *pmdcache.Cache
	cfg       Config
	checkZero bool
	closed    atomic.Bool
	shards    []shard
	mask      uint32 // len(shards)-1

	misuse    atomic.Uint64 // misuse caught (counted before the panic)
	exhausted atomic.Uint64 // Allocs refused with ErrExhausted (Stats.ExhaustedReturns)

	// mu is the slow-path lock: carving spans out of chunks, getting and
	// returning chunks, page runs and large regions. Lock order: a shard's
	// mu before mu, never the other way round.
	mu     sync.Mutex
	chunks []*chunkMeta           // guarded by mu: chunks holding slabs and runs
	larges map[uintptr]*chunkMeta // guarded by mu: live regions of their own, by base address
	// freedLarges holds the base of every region freed and not yet reused
	// for another region; guarded by mu. A second Free of a region that
	// the cache has unmapped finds no chunk, and this tells a double free
	// (named) from a foreign slice (ErrForeign). At most one entry per
	// slot of the cache's arena.
	freedLarges map[uintptr]struct{}
	runs        runCounters // guarded by mu
	// husks counts the chunks in chunks whose every span is a kept slab
	// (chunkMeta.husk); guarded by mu. With the cache's idle chunks they
	// are held to idleBound (see trim).
	husks     int
	idleBound int // max(effective MaxIdleChunks, 1): chunks with no live block kept mapped
}

// runCounters are the statistics of page runs and large regions.
type runCounters struct {
	runs, runRequested, runReserved       uint64
	larges, largeRequested, largeReserved uint64
}

// shard owns the slabs it created: its lock guards their bitmaps and its
// partial lists. Allocations spread over shards; a Free goes to the shard
// owning the slab.
type shard struct {
	mu    sync.Mutex
	index uint32 // position in Heap.shards
	// partial holds, per class, the shard's slabs that have a free block,
	// in occupancy buckets (bucketOf); mask has bit b set when bucket b is
	// not empty. Alloc takes the fullest bucket's first slab.
	partial [numClasses][numBuckets]*span
	mask    [numClasses]atomic.Uint32 // written with mu held, read without (Alloc's scan)
	stats   [numClasses]classCounters
	_       [64]byte // keep neighbouring shards' locks off one cache line
}

type classCounters struct {
	requested, live, slabs uint64
}

// New builds a heap. It maps nothing until the first allocation.
func New(cfg Config) (*Heap, error) {
	if cfg.NoDump {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("secretheap: prctl(PR_SET_DUMPABLE, 0) for Config.NoDump: %w", err)
		}
	}
	// pmdcache shares the convention (0 = default, negative = none): pass it through.
	c, err := pmdcache.New(pmdcache.Config{Policy: cfg.Policy, Limit: cfg.Limit, MaxIdleChunks: cfg.MaxIdleChunks, MaxRunPages: commitRunPages})
	if err != nil {
		return nil, err
	}
	n := 2
	for n < 2*runtime.GOMAXPROCS(0) && n < maxShards {
		n *= 2
	}
	// The cache's bound (0 = its default, negative = none), but at least
	// one chunk: the one holding the kept empty slabs, so that an
	// Alloc/Free pair never maps and unmaps a chunk.
	idle := cfg.MaxIdleChunks
	if idle == 0 {
		idle = pmdcache.DefaultMaxIdleChunks
	}
	h := &Heap{
		cache:       c,
		cfg:         cfg,
		checkZero:   cfg.CheckZero,
		shards:      make([]shard, n),
		mask:        uint32(n - 1),
		larges:      make(map[uintptr]*chunkMeta),
		freedLarges: make(map[uintptr]struct{}),
		idleBound:   max(idle, 1),
	}
	for i := range h.shards {
		h.shards[i].index = uint32(i)
	}
	return h, nil
}

var (
	defaultOnce sync.Once
	defaultHeap *Heap
	defaultErr  error
)

// Default returns the process-wide heap, built on first use from the
// SECRETHEAP_* environment variables (see ConfigFromEnv); an invalid value is
// its error, every time. On first use it also prints to stderr, once, what
// the environment asks that it does not do: C-only options that are set,
// and SECRETHEAP_* names that are no option.
func Default() (*Heap, error) {
	defaultOnce.Do(func() {
		cfg, notes, err := configFromEnv(os.LookupEnv, os.Environ())
		for _, n := range notes {
			fmt.Fprintf(os.Stderr, "secretheap: %s\n", n)
		}
		if err != nil {
			defaultErr = err
			return
		}
		defaultHeap, defaultErr = New(cfg)
	})
	return defaultHeap, defaultErr
}

// Alloc allocates n bytes from the default heap (see Heap.Alloc).
func Alloc(n int) ([]byte, error) {
	h, err := Default()
	if err != nil {
		return nil, err
	}
	return h.Alloc(n)
}

// Free frees b on the default heap (see Heap.Free).
func Free(b []byte) error {
	h, err := Default()
	if err != nil {
		return err
	}
	return h.Free(b)
}

// sizeToClass returns the class of a request 0 < n ≤ maxSmallSize.
func sizeToClass(n int) int {
	if n <= smallLookupMax {
		return int(sizeToClass16[(n+15)>>4])
	}
	return int(sizeToClass128[(n+127)>>7])
}

// shardHint returns where Alloc starts looking for a shard: a hash of the
// calling goroutine's stack address. Goroutines have distinct stacks, so
// concurrent callers start on different shards, and one goroutine keeps
// starting on the same one (its slabs stay warm in its core's cache). It is
// only a hint (a stack may move when it grows). Measured against
// math/rand/v2's per-M random number: ~5 ns less per Alloc, same spread.
func shardHint() uint32 {
	var x byte
	a := uint64(uintptr(unsafe.Pointer(&x))) >> 12
	return uint32((a * 0x9E3779B97F4A7C15) >> 40)
}

// lockShard locks a shard and returns it: shard r first, the next ones if
// it is contended, and a blocking lock only when all are.
func (h *Heap) lockShard(r uint32) *shard {
	for j := uint32(0); j <= h.mask; j++ {
		s := &h.shards[(r+j)&h.mask]
		if s.mu.TryLock() {
			return s
		}
	}
	s := &h.shards[r&h.mask]
	s.mu.Lock()
	return s
}

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

func className(class int) string {
	if class == 0 {
		return "page run"
	}
	return fmt.Sprintf("class %d B", class)
}

// fail counts and panics with a named misuse. No lock is held.
func (h *Heap) fail(kind string, addr uintptr, class int, msg string) {
	h.misuse.Add(1)
	panic(&MisuseError{Kind: kind, Addr: addr, Class: class, Msg: msg})
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

// Backend reports whether b lies inside a live block of this heap and which
// backend holds it. An empty slice is in no block.
func (h *Heap) Backend(b []byte) (secretmem.Backend, bool) {
	if len(b) == 0 || h.closed.Load() {
		return 0, false
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	ch := h.cache.Lookup(addr)
	if ch == nil {
		return 0, false
	}
	end := addr + uintptr(len(b))
	if ch.Large() {
		// Under h.mu, not through ch.Owner: a Free may be clearing it.
		h.mu.Lock()
		defer h.mu.Unlock()
		cm := h.larges[uintptr(ch.Base())]
		if cm == nil || cm.ch != ch || end > uintptr(cm.base)+uintptr(cm.largeReq) {
			return 0, false
		}
		return ch.Backend(), true
	}
	cm, _ := ch.Owner.(*chunkMeta)
	if cm == nil {
		return 0, false
	}
	sp := cm.pages[(addr-uintptr(cm.base))>>osPageShift].Load()
	if sp == nil {
		return 0, false
	}
	mu := &h.mu
	if sp.kind == kindSlab {
		mu = &sp.shard.mu
	}
	mu.Lock()
	defer mu.Unlock()
	i := uint32(0)
	if sp.kind == kindSlab {
		i, _ = sp.blockIndex(addr - uintptr(sp.base))
		if i >= sp.nblocks || sp.isFree(i) {
			return 0, false
		}
	} else if sp.used == 0 {
		return 0, false
	}
	start := uintptr(sp.blockPtr(i))
	if end > start+uintptr(sp.req[i]) {
		return 0, false
	}
	return ch.Backend(), true
}

// Close wipes and unmaps all the heap's memory. Every block still held by a
// caller becomes invalid: its OS pages are PROT_NONE afterwards, and touching
// them is a fatal fault. Later calls return ErrClosed.
func (h *Heap) Close() error {
	if h.closed.Swap(true) {
		return ErrClosed
	}
	// Wait for Allocs and Frees in flight: they hold a shard lock or mu
	// while they touch the memory, and re-check closed once they hold it.
	for i := range h.shards {
		h.shards[i].mu.Lock()
	}
	h.mu.Lock()
	err := h.cache.Close()
	h.chunks = nil
	h.larges = nil
	h.mu.Unlock()
	for i := range h.shards {
		h.shards[i].mu.Unlock()
	}
	return err
}
