package pmdcache

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/secretheap/secretheap/secretmem"
	"golang.org/x/sys/unix"
)

const (
	// slotShift sizes the arena's slots: 4 MiB, twice the largest chunk, so
	// every chunk is followed by at least 2 MiB of PROT_NONE guard.
	slotShift = 22
	slotSize  = 1 << slotShift

	// MaxChunkSize is the size of a chunk when RLIMIT_MEMLOCK allows it:
	// 2 MiB of address space. Its OS pages are not one 2 MiB physical frame:
	// the kernel allocates them one by one, and 512 of them landed in ~20
	// frames (internal/directmap). What chunks save is secret OS pages.
	MaxChunkSize = 2 << 20
	// MinChunkSize is the smallest chunk the cache shrinks to when memlock
	// headroom is short: below it a chunk holds too few slabs to be useful
	// and the cache reports ErrExhausted instead.
	MinChunkSize = 64 << 10

	// DefaultArenaSize is the address space reserved for chunks: 16384 slots.
	// It costs no memory; the two slot tables (Lookup's atomic one and the
	// slow path's) cost 16 bytes per slot, 256 KiB, allocated on first Get.
	DefaultArenaSize = 64 << 30

	// DefaultMaxIdleChunks bounds the wholly free chunks kept mapped.
	// Faulting a chunk back costs ~27 ms (BenchmarkChunkFaultIn: ~50 µs per
	// OS page on a loaded VM, 26× anonymous memory) and splits the
	// direct map for good, while an idle chunk holds up to 2 MiB of
	// RLIMIT_MEMLOCK: two keep a burst of allocations warm without starving
	// other users of an 8 MiB limit.
	DefaultMaxIdleChunks = 2

	// maxRunPages caps one commit run by default (see the package doc):
	// 64 OS pages. Config.MaxRunPages overrides it.
	maxRunPages = 64
)

// ErrExhausted reports that no chunk could be mapped: RLIMIT_MEMLOCK (the
// error also matches secretmem.ErrMemlock), Config.Limit, or the arena's
// address space ran out. The error is an *ExhaustedError with the numbers.
var ErrExhausted = errors.New("pmdcache: secret memory exhausted")

// ErrClosed reports a Get or GetLarge on a closed Cache.
var ErrClosed = errors.New("pmdcache: cache closed")

// ExhaustedError says which limit refused a chunk, what is in use and what
// was asked. It matches ErrExhausted and its cause with errors.Is.
type ExhaustedError struct {
	Limit string // "RLIMIT_MEMLOCK", "Config.Limit" or "arena"
	Max   uint64 // the limit in bytes (0 when RLIMIT_MEMLOCK is unlimited)
	InUse uint64 // bytes charged against it now
	Asked uint64 // bytes asked for
	Err   error  // the refusal from secretmem, if any
}

// Error returns one line with the limit, what is in use and what was asked.
func (e *ExhaustedError) Error() string {
	s := fmt.Sprintf("pmdcache: secret memory exhausted: %s %d B, in use %d B, asked %d B", e.Limit, e.Max, e.InUse, e.Asked)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Cause classifies the refusal (secretmem.CauseOf uses it).
func (e *ExhaustedError) Cause() secretmem.Cause {
	switch e.Limit {
	case "Config.Limit":
		return secretmem.CauseLimit
	case "arena":
		return secretmem.CauseArena
	}
	return secretmem.CauseMemlock
}

// Unwrap returns ErrExhausted and the cause.
func (e *ExhaustedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrExhausted}
	}
	return []error{ErrExhausted, e.Err}
}

// Config configures a Cache. The zero value is usable.
type Config struct {
	Policy        secretmem.Policy // backend policy for every chunk
	Limit         uint64           // max bytes mapped (chunks, idle chunks and large regions); 0 = only RLIMIT_MEMLOCK limits
	MaxIdleChunks int              // wholly free chunks kept mapped: 0 = DefaultMaxIdleChunks, negative = none
	ArenaSize     uintptr          // address space reserved for chunks: 0 = DefaultArenaSize; rounded up to 4 MiB slots; at most an eighth of what RLIMIT_AS leaves
	// MaxRunPages caps one commit run, in OS pages: 0 means 64 (see the
	// package doc); 1 commits exactly what each Commit asks, trading more
	// slow-path trips for no committed-but-unused memory.
	MaxRunPages int
	// Logf receives the one warning the cache gives when PolicyAuto falls
	// back to the locked backend. Nil writes it to standard error, once per
	// process.
	Logf func(format string, args ...any)
}

// Cache hands out chunks. All methods are safe for concurrent use; Lookup
// takes no lock.
type Cache struct {
	cfg     Config
	maxIdle int
	maxRun  uintptr // bytes
	nslots  int

	arena atomic.Pointer[arena] // written with mu held, read without

	mu        sync.Mutex
	res       *secretmem.Reservation // guarded by mu
	slots     []*Chunk               // every mapped chunk (InUse or Idle) by slot; guarded by mu
	idle      []*Chunk               // Idle chunks, most recently put last; guarded by mu
	closed    bool                   // guarded by mu
	fallback  error                  // why auto fell back to locked; guarded by mu
	mapped    uint64                 // bytes mapped; guarded by mu
	byBackend [3]int                 // chunks (not large) by backend; guarded by mu
	large     int                    // large regions mapped; guarded by mu
	maps      uint64                 // chunks and regions mapped over the cache's life; guarded by mu
	unmaps    uint64                 // and unmapped; guarded by mu

	committed       atomic.Uint64 // bytes committed in mapped chunks (lazy regions not included)
	committedSecret atomic.Uint64 // of committed, in memfd_secret chunks: the new model's charge
	lazy            atomic.Uint64 // bytes of large regions made usable by CommitLazy
}

// arena is what Lookup needs, published once the reservation exists.
type arena struct {
	base  uintptr
	slots []atomic.Pointer[Chunk] // InUse chunks only
}

type chunkState uint8

const (
	stateInUse chunkState = iota + 1
	stateIdle
	stateUnmapped
)

// Chunk is a run of secret memory handed out by a Cache: 2 MiB (or smaller
// under memlock pressure) aligned to its size, or a large region.
type Chunk struct {
	// Owner is the allocator's per-chunk metadata. The cache never reads it;
	// Put sets it to nil, so Get always returns a chunk with a nil Owner.
	Owner any

	cache  *Cache
	region *secretmem.Region
	base   uintptr
	size   uintptr
	slot   int
	nslots int
	large  bool
	state  chunkState // guarded by cache.mu

	mu        sync.Mutex     // serialises Commit
	committed atomic.Uintptr // bytes committed (usable), a prefix; written with mu held
	lastRun   uintptr        // size of the last commit run; guarded by mu
	dead      bool           // unmapped; guarded by mu
	lazy      bool           // large region made usable by CommitLazy; guarded by mu
}

// New returns a cache that has mapped nothing yet: the arena is reserved on
// the first Get.
func New(cfg Config) (*Cache, error) {
	switch cfg.Policy {
	case secretmem.PolicyAuto, secretmem.PolicySecret, secretmem.PolicyLocked:
	default:
		return nil, fmt.Errorf("pmdcache: unknown %v", cfg.Policy)
	}
	c := &Cache{cfg: cfg, maxIdle: cfg.MaxIdleChunks}
	switch {
	case cfg.MaxIdleChunks == 0:
		c.maxIdle = DefaultMaxIdleChunks
	case cfg.MaxIdleChunks < 0:
		c.maxIdle = 0
	}
	c.maxRun = uintptr(cfg.MaxRunPages) * secretmem.PageSize()
	switch {
	case cfg.MaxRunPages == 0:
		c.maxRun = maxRunPages * secretmem.PageSize()
	case cfg.MaxRunPages < 0:
		return nil, fmt.Errorf("pmdcache: MaxRunPages %d is negative", cfg.MaxRunPages)
	}
	size := cfg.ArenaSize
	if size == 0 {
		size = DefaultArenaSize
	}
	size = (size + slotSize - 1) &^ (slotSize - 1)
	if size < 2*slotSize {
		size = 2 * slotSize // slot 0 is the leading guard
	}
	c.nslots = int(size >> slotShift)
	if c.cfg.Logf == nil {
		c.cfg.Logf = stderrOnce
	}
	return c, nil
}

// stderrWarned makes the default warning one per process, however many
// caches (heaps) fall back.
var stderrWarned sync.Once

// stderrOnce is the default Config.Logf.
func stderrOnce(format string, args ...any) {
	stderrWarned.Do(func() { fmt.Fprintf(os.Stderr, format+"\n", args...) })
}

// minArena is the smallest arena ensureArena shrinks to.
const minArena = 64 << 20

// ensureArena reserves the arena on first use: Config.ArenaSize, but under a
// finite RLIMIT_AS at most an eighth of the address space left (address space is the program's
// budget too: a reservation that fits but leaves it nothing breaks it as
// surely as one that fails), halved while the kernel refuses, down to
// 64 MiB. c.mu must be held.
func (c *Cache) ensureArena() error {
	if c.res != nil {
		return nil
	}
	size := uintptr(c.nslots) << slotShift
	for room := secretmem.AddressSpaceRoom(); size > minArena && uint64(size) > room/8; {
		size /= 2
	}
	res, err := secretmem.Reserve(size, slotSize)
	for err != nil && size/2 >= minArena && size/2 >= 2*slotSize {
		size /= 2
		res, err = secretmem.Reserve(size, slotSize)
	}
	if err != nil {
		return fmt.Errorf("pmdcache: reserving the arena: %w", err)
	}
	c.nslots = int(size >> slotShift)
	c.res = res
	c.slots = make([]*Chunk, c.nslots)
	c.arena.Store(&arena{base: uintptr(res.Base()), slots: make([]atomic.Pointer[Chunk], c.nslots)})
	return nil
}

// Get returns an Idle chunk (no system call; its committed OS pages are kept)
// or maps a new one (Reserved → InUse). The new chunk is 2 MiB, or the
// largest power of two ≥ 64 KiB that the memlock headroom and Config.Limit
// allow. It returns an *ExhaustedError (ErrExhausted) when not even 64 KiB
// fits.
func (c *Cache) Get() (*Chunk, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if n := len(c.idle); n > 0 {
		ch := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.publish(ch)
		return ch, nil
	}
	if err := c.ensureArena(); err != nil {
		return nil, err
	}
	slot := c.freeSlots(1)
	if slot < 0 {
		return nil, c.arenaFull(MinChunkSize)
	}
	size, err := c.chunkSize()
	if err != nil {
		return nil, err
	}
	for {
		ch, err := c.mapChunk(slot, 1, size, false)
		if err == nil {
			return ch, nil
		}
		// Another thread or process may have locked memory since we read
		// the headroom: halve and retry down to the minimum.
		if errors.Is(err, secretmem.ErrMemlock) && size > MinChunkSize {
			size /= 2
			continue
		}
		return nil, err
	}
}

// GetLarge maps a region of its own for size bytes (rounded up to OS pages),
// in consecutive slots followed by at least one guard OS page. Put unmaps it.
// When the region does not fit (ErrExhausted) while chunks sit idle, the idle
// chunks are unmapped and the region tried once more.
func (c *Cache) GetLarge(size uintptr) (*Chunk, error) {
	if size == 0 {
		return nil, fmt.Errorf("pmdcache: GetLarge of 0 bytes: %w", unix.EINVAL)
	}
	page := secretmem.PageSize()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if size > uintptr(c.nslots)<<slotShift {
		return nil, c.arenaFull(uint64(size))
	}
	size = (size + page - 1) &^ (page - 1)
	n := int((size + page + slotSize - 1) >> slotShift)
	if err := c.ensureArena(); err != nil {
		return nil, err
	}
	for retry := true; ; retry = false {
		ch, err := c.mapLarge(size, n)
		if err == nil || !retry || len(c.idle) == 0 || !errors.Is(err, ErrExhausted) {
			return ch, err
		}
		// Idle chunks hold memlock and count against Limit: a region the
		// caller needs now is worth more than chunks kept for later.
		c.dropIdle()
	}
}

// mapLarge maps a large region of size bytes in n slots. c.mu must be held.
func (c *Cache) mapLarge(size uintptr, n int) (*Chunk, error) {
	if c.cfg.Limit > 0 && c.mapped+uint64(size) > c.cfg.Limit {
		return nil, &ExhaustedError{Limit: "Config.Limit", Max: c.cfg.Limit, InUse: c.mapped, Asked: uint64(size)}
	}
	slot := c.freeSlots(n)
	if slot < 0 {
		return nil, c.arenaFull(uint64(size))
	}
	return c.mapChunk(slot, n, size, true)
}

// dropIdle unmaps every idle chunk. c.mu must be held.
func (c *Cache) dropIdle() {
	for _, ch := range c.idle {
		c.unmap(ch)
	}
	clear(c.idle)
	c.idle = c.idle[:0]
}

// chunkSize picks the size of a new chunk from the memlock headroom and
// Config.Limit. c.mu must be held.
func (c *Cache) chunkSize() (uintptr, error) {
	avail := secretmem.Headroom(secretmem.NextBackend(c.cfg.Policy), c.committedSecret.Load())
	limited := "RLIMIT_MEMLOCK"
	if c.cfg.Limit > 0 {
		left := uint64(0)
		if c.mapped < c.cfg.Limit {
			left = c.cfg.Limit - c.mapped
		}
		if left < avail {
			avail, limited = left, "Config.Limit"
		}
	}
	if avail >= MaxChunkSize {
		return MaxChunkSize, nil
	}
	if avail < MinChunkSize {
		if limited == "Config.Limit" {
			return 0, &ExhaustedError{Limit: limited, Max: c.cfg.Limit, InUse: c.mapped, Asked: MinChunkSize}
		}
		if avail < uint64(secretmem.PageSize()) && secretmem.NextBackend(c.cfg.Policy) == secretmem.BackendSecret && secretmem.Detect().Shared() {
			// New model: the mapping would succeed and every commit in it
			// fail; what we committed ourselves already fills the limit.
			limit, used := secretmem.Detect().MemlockLimit, c.committedSecret.Load()
			return 0, &ExhaustedError{Limit: "RLIMIT_MEMLOCK", Max: limit, InUse: used, Asked: MinChunkSize,
				Err: fmt.Errorf("%w: limit %d B, committed by this cache %d B (new model: a per-user budget)", secretmem.ErrMemlock, limit, used)}
		}
		// Let the kernel refuse: its answer (EAGAIN at mmap on the old model,
		// EFAULT at Commit on the new) is the cause the caller sees, and our
		// reading of the headroom may be stale.
		return MinChunkSize, nil
	}
	return uintptr(1) << (63 - bits.LeadingZeros64(avail)), nil
}

// mapChunk maps size bytes at slot (taking n slots) and publishes the chunk.
// c.mu must be held.
func (c *Cache) mapChunk(slot, n int, size uintptr, large bool) (*Chunk, error) {
	a := c.arena.Load()
	addr := a.base + uintptr(slot)<<slotShift
	r, err := secretmem.MapAt(unsafe.Add(c.res.Base(), addr-a.base), size, c.cfg.Policy)
	if err != nil {
		var me *secretmem.MemlockError
		if errors.As(err, &me) {
			return nil, &ExhaustedError{Limit: "RLIMIT_MEMLOCK", Max: me.Memlock.Limit, InUse: me.Memlock.Locked, Asked: uint64(size), Err: err}
		}
		return nil, fmt.Errorf("pmdcache: mapping a chunk of %d bytes: %w", size, err)
	}
	if fb := r.FallbackReason(); fb != nil && c.fallback == nil {
		c.fallback = fb
		c.cfg.Logf("secretheap: WARNING: memfd_secret is unavailable, secret memory falls back to the locked backend "+
			"(mlock + MADV_DONTDUMP + MADV_WIPEONFORK: never swapped or dumped, but still in the kernel direct map "+
			"and readable by a same-user ptracer): %v", fb)
	}
	ch := &Chunk{cache: c, region: r, base: addr, size: r.Size(), slot: slot, nslots: n, large: large}
	for i := slot; i < slot+n; i++ {
		c.slots[i] = ch
	}
	c.mapped += uint64(ch.size)
	c.maps++
	if large {
		c.large++
	} else {
		c.byBackend[r.Backend()]++
	}
	c.publish(ch)
	return ch, nil
}

// publish makes ch InUse and visible to Lookup. c.mu must be held.
func (c *Cache) publish(ch *Chunk) {
	ch.state = stateInUse
	a := c.arena.Load()
	for i := ch.slot; i < ch.slot+ch.nslots; i++ {
		a.slots[i].Store(ch)
	}
}

// unpublish hides ch from Lookup. c.mu must be held.
func (c *Cache) unpublish(ch *Chunk) {
	a := c.arena.Load()
	for i := ch.slot; i < ch.slot+ch.nslots; i++ {
		a.slots[i].Store(nil)
	}
}

// freeSlots returns the first of n consecutive free slots (never slot 0), or
// -1. c.mu must be held. A linear scan: it runs only when a chunk is mapped,
// next to a system call that costs far more.
func (c *Cache) freeSlots(n int) int {
	run := 0
	for i := 1; i < len(c.slots); i++ {
		if c.slots[i] != nil {
			run = 0
			continue
		}
		run++
		if run == n {
			return i - n + 1
		}
	}
	return -1
}

// arenaFull reports that no free slot run is left. c.mu must be held.
func (c *Cache) arenaFull(asked uint64) error {
	return &ExhaustedError{Limit: "arena", Max: uint64(c.nslots) << slotShift, InUse: c.mapped, Asked: asked}
}

// Put hands back a wholly free chunk (its committed bytes already wiped).
// It becomes Idle, keeping its committed OS pages, while fewer than
// MaxIdleChunks are idle; a large region, or a chunk beyond the bound, is
// wiped and unmapped (→ Reserved). Put of a chunk that is not InUse (a double
// Put, or a chunk of another cache) panics: it is allocator corruption. After
// Close, Put does nothing.
func (c *Cache) Put(ch *Chunk) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch.cache != c {
		panic(fmt.Sprintf("pmdcache: Put of chunk %#x that belongs to another cache", ch.base))
	}
	if c.closed && ch.state == stateUnmapped {
		return
	}
	if ch.state != stateInUse {
		panic(fmt.Sprintf("pmdcache: Put of chunk %#x that is not in use (double Put)", ch.base))
	}
	c.unpublish(ch)
	if ch.Owner != nil { // allocators usually clear it themselves: no write, no race with their lock-free reads
		ch.Owner = nil
	}
	if ch.large || len(c.idle) >= c.maxIdle {
		c.unmap(ch)
		return
	}
	ch.state = stateIdle
	c.idle = append(c.idle, ch)
}

// unmap moves ch to Reserved. c.mu must be held and ch unpublished.
func (c *Cache) unmap(ch *Chunk) {
	// Close wipes the committed OS pages and leaves PROT_NONE behind; it can
	// only fail if the kernel refuses a PROT_NONE mapping over our own range.
	if err := ch.region.Close(); err != nil {
		panic(fmt.Sprintf("pmdcache: unmapping chunk %#x: %v", ch.base, err))
	}
	for i := ch.slot; i < ch.slot+ch.nslots; i++ {
		c.slots[i] = nil
	}
	ch.state = stateUnmapped
	c.mapped -= uint64(ch.size)
	c.unmaps++
	ch.mu.Lock()
	ch.dead = true
	switch {
	case ch.lazy:
		c.lazy.Add(-uint64(ch.size))
	default:
		c.committed.Add(-uint64(ch.committed.Load()))
		if ch.region.Backend() == secretmem.BackendSecret {
			c.committedSecret.Add(-uint64(ch.committed.Load()))
		}
	}
	ch.committed.Store(0)
	ch.mu.Unlock()
	if ch.large {
		c.large--
	} else {
		c.byBackend[ch.region.Backend()]--
	}
}

// Lookup returns the InUse chunk whose bytes contain addr, or nil: for an
// address outside the arena, in a guard, in a Reserved slot or in an Idle
// chunk. O(1) and lock-free: one shift and two atomic loads.
func (c *Cache) Lookup(addr uintptr) *Chunk {
	a := c.arena.Load()
	if a == nil || addr < a.base {
		return nil
	}
	i := (addr - a.base) >> slotShift
	if i >= uintptr(len(a.slots)) {
		return nil
	}
	ch := a.slots[i].Load()
	if ch == nil || addr-ch.base >= ch.size {
		return nil
	}
	return ch
}

// FallbackReason returns why PolicyAuto served chunks from the locked
// backend (matching secretmem.ErrUnsupported), or nil.
func (c *Cache) FallbackReason() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fallback
}

// Stats is a snapshot of the cache: what the cache mapped and committed
// itself, never read from VmLck (the new model leaves it at 0).
type Stats struct {
	ChunksSecret   int    // chunks (InUse and Idle, not large) served by memfd_secret
	ChunksLocked   int    // chunks served by the locked backend
	IdleChunks     int    // chunks kept for reuse
	LargeRegions   int    // large regions mapped
	BytesMapped    uint64 // chunks, idle chunks and large regions (the old model charges this at mmap)
	BytesCommitted uint64 // OS pages committed in them (the new model charges this, to the user)
	// Of BytesCommitted: in memfd_secret chunks and regions, and in locked ones.
	CommittedSecret, CommittedLocked uint64
	LazyBytes                        uint64 // large regions whose OS pages fault in on touch (Chunk.Commit, old model and locked)
	ArenaBytes                       uint64 // address space reserved for chunks (0 before the first Get)
	Maps                             uint64 // chunks and regions mapped over the cache's life
	Unmaps                           uint64 // chunks and regions unmapped over the cache's life
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		ChunksSecret:    c.byBackend[secretmem.BackendSecret],
		ChunksLocked:    c.byBackend[secretmem.BackendLocked],
		IdleChunks:      len(c.idle),
		LargeRegions:    c.large,
		BytesMapped:     c.mapped,
		BytesCommitted:  c.committed.Load(),
		CommittedSecret: c.committedSecret.Load(),
		CommittedLocked: c.committed.Load() - c.committedSecret.Load(),
		LazyBytes:       c.lazy.Load(),
		ArenaBytes:      uint64(c.arenaBytes()),
		Maps:            c.maps,
		Unmaps:          c.unmaps,
	}
}

// arenaBytes is the arena's size, 0 before it is reserved. c.mu must be held.
func (c *Cache) arenaBytes() uintptr {
	if c.res == nil {
		return 0
	}
	return c.res.Size()
}

// Close wipes and unmaps every chunk, InUse or Idle, and releases the arena.
// The chunks' memory must not be used afterwards. A second Close is a no-op.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.res == nil {
		return nil
	}
	seen := map[*Chunk]bool{}
	for _, ch := range c.slots {
		if ch != nil && !seen[ch] {
			seen[ch] = true
			c.unpublish(ch)
			c.unmap(ch)
		}
	}
	c.idle = nil
	c.arena.Store(nil)
	err := c.res.Release()
	c.res = nil
	return err
}

// Base returns the chunk's first address.
func (ch *Chunk) Base() unsafe.Pointer { return ch.region.Base() }

// Size returns the chunk's length in bytes.
func (ch *Chunk) Size() uintptr { return ch.size }

// Backend returns the backend that serves the chunk.
func (ch *Chunk) Backend() secretmem.Backend { return ch.region.Backend() }

// Large reports whether the chunk is a large region from GetLarge.
func (ch *Chunk) Large() bool { return ch.large }

// Committed returns how many bytes from the chunk's start are committed.
// Lock-free.
func (ch *Chunk) Committed() uintptr { return ch.committed.Load() }

// Commit moves the OS pages [0, end) from Uncommitted to Committed (see the
// package doc for the run sizes), so the caller may use them. Bytes already
// committed never change. Fast (one atomic load) when they are all committed.
// A refusal by the kernel returns an *ExhaustedError matching
// secretmem.ErrMemlock; whatever was committed before it stays committed.
func (ch *Chunk) Commit(end uintptr) error {
	if end <= ch.committed.Load() {
		return nil
	}
	if end > ch.size {
		return fmt.Errorf("pmdcache: Commit(%d) past a chunk of %d bytes: %w", end, ch.size, unix.EINVAL)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	cur := ch.committed.Load()
	if end <= cur {
		return nil
	}
	if ch.dead {
		return fmt.Errorf("pmdcache: Commit on an unmapped chunk: %w", unix.EINVAL)
	}
	// A large region is usable at once where no fault can be refused (old
	// model, locked backend): a 64 MiB request costs a mapping, not 16384
	// faults up front, and only the OS pages touched leave the direct map.
	// On the new model it is committed like a chunk (a touch past the user's
	// budget would be SIGBUS).
	if ch.large && cur == 0 && ch.region.CommitLazy() {
		ch.lazy = true
		ch.committed.Store(ch.size)
		ch.cache.lazy.Add(uint64(ch.size))
		return nil
	}
	page := secretmem.PageSize()
	need := (end+page-1)&^(page-1) - cur
	run := max(need, min(2*ch.lastRun, ch.cache.maxRun))
	run = min(run, ch.size-cur)
	err := ch.region.Commit(cur, run)
	now := ch.region.Committed() // commits only ever grow the prefix
	ch.committed.Store(now)
	ch.cache.committed.Add(uint64(now - cur))
	if ch.region.Backend() == secretmem.BackendSecret {
		ch.cache.committedSecret.Add(uint64(now - cur))
	}
	if err != nil {
		var me *secretmem.MemlockError
		if errors.As(err, &me) {
			return &ExhaustedError{Limit: "RLIMIT_MEMLOCK", Max: me.Memlock.Limit, InUse: me.Memlock.Locked, Asked: uint64(run), Err: err}
		}
		return fmt.Errorf("pmdcache: committing %d bytes: %w", run, err)
	}
	ch.lastRun = run
	return nil
}

// Wipe zeroes [off, off+n) of the chunk's usable bytes; in a lazy region
// only the OS pages the program touched (the others are zero and stay out
// of memory).
func (ch *Chunk) Wipe(off, n uintptr) { ch.region.Wipe(off, n) }
