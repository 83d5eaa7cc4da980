package alloc

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/pmdcache"
	"github.com/secretheap/secretheap/secretmem"
)

// See doc.go for the design of the heap. The heap's allocation paths are in
// alloc.go, its free paths and the giving back of idle memory in free.go.

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
