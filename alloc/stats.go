package alloc

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"

	statstable "github.com/secretheap/secretheap/internal/stats"
	"github.com/secretheap/secretheap/secretmem"
)

// ClassStats are the statistics of one size class.
type ClassStats struct {
	Size           uint32 // block size of the class in bytes
	RequestedBytes uint64 // sum of the lengths asked for by live blocks
	ReservedBytes  uint64 // live blocks × block size
	LiveBlocks     uint64
	Slabs          uint64 // slabs of the class, full, partial or kept empty
}

// Stats is a snapshot of a heap's statistics. The field names match the C
// library's struct secretheap_stats; both are rows of one table,
// internal/stats, and so is the JSON form (MarshalJSON).
type Stats struct {
	// Classes holds one entry per size class, smallest first.
	Classes []ClassStats

	// Page runs: requests above the largest class, OS pages inside a chunk.
	RunBlocks, RunRequestedBytes, RunReservedBytes uint64
	// Large regions: requests above half a chunk, a region of their own.
	LargeRegions, LargeRequestedBytes, LargeReservedBytes uint64

	// Totals over classes, page runs and large regions.
	RequestedBytes, ReservedBytes, LiveBlocks uint64

	// From the chunk cache.
	ChunksMapped       uint64 // chunks mapped (in use or idle), large regions included
	ChunksSecret       uint64 // chunks (not large regions) served by memfd_secret
	ChunksLocked       uint64 // chunks (not large regions) served by the locked fallback
	LargeRegionsMapped uint64 // large regions mapped
	BytesMapped        uint64 // bytes of secret memory mapped
	CommittedBytes     uint64 // bytes of OS pages committed (faulted in)
	IdleChunks         uint64 // wholly free chunks kept for reuse
	Fallbacks          uint64 // always 0 in Go: Go never hands out unprotected memory
	ForkReprivatised   uint64 // always 0 in Go: the C library's fork handling
	MisuseCaught       uint64 // double frees, interior pointers, writes after free
	// ExhaustedReturns counts the Allocs that returned an error wrapping
	// ErrExhausted (C: exhausted_returns, the NULLs of ON_EXHAUSTED=null).
	ExhaustedReturns uint64
	ShardCount       uint64 // lock shards of the heap
	HeapClosed       bool

	// What the library committed itself, by backend (never VmLck: the new
	// accounting model leaves it at 0), and the kernel's rules.
	CommittedSecretBytes uint64          // of CommittedBytes, memfd_secret OS pages
	CommittedLockedBytes uint64          // of CommittedBytes, locked-backend OS pages
	LazyBytes            uint64          // large regions whose OS pages fault in on touch (old model, locked)
	ArenaBytes           uint64          // address space reserved for chunks (shrunk under RLIMIT_AS)
	Model                secretmem.Model // the accounting model in force (secretmem.Detect)
	MemlockLimit         uint64          // soft RLIMIT_MEMLOCK at detection; math.MaxUint64: unlimited
	MemlockBypass        bool            // CAP_IPC_LOCK lifts the limit (old model only)
	BudgetShared         bool            // the limit is a per-user budget shared with the uid's other processes (new model)
}

// Stats returns a snapshot of the heap's statistics. It takes every lock
// briefly, one at a time: the snapshot is not atomic across shards.
func (h *Heap) Stats() Stats {
	var s Stats
	s.Classes = make([]ClassStats, numClasses)
	for c := range s.Classes {
		s.Classes[c].Size = classSize[c]
	}
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for c := range sh.stats {
			st := &sh.stats[c]
			cs := &s.Classes[c]
			cs.RequestedBytes += st.requested
			cs.LiveBlocks += st.live
			cs.ReservedBytes += st.live * uint64(classSize[c])
			cs.Slabs += st.slabs
		}
		sh.mu.Unlock()
	}
	for _, cs := range s.Classes {
		s.RequestedBytes += cs.RequestedBytes
		s.ReservedBytes += cs.ReservedBytes
		s.LiveBlocks += cs.LiveBlocks
	}
	h.mu.Lock()
	r := h.runs
	h.mu.Unlock()
	s.RunBlocks, s.RunRequestedBytes, s.RunReservedBytes = r.runs, r.runRequested, r.runReserved
	s.LargeRegions, s.LargeRequestedBytes, s.LargeReservedBytes = r.larges, r.largeRequested, r.largeReserved
	s.RequestedBytes += r.runRequested + r.largeRequested
	s.ReservedBytes += r.runReserved + r.largeReserved
	s.LiveBlocks += r.runs + r.larges
	s.MisuseCaught = h.misuse.Load()
	s.ExhaustedReturns = h.exhausted.Load()
	s.ShardCount = uint64(len(h.shards))
	s.HeapClosed = h.closed.Load()
	if !s.HeapClosed {
		h.cacheStats(&s)
	}
	return s
}

// cacheStats fills the chunk-cache totals.
func (h *Heap) cacheStats(s *Stats) {
	cs := h.cache.Stats()
	s.ChunksSecret = uint64(cs.ChunksSecret)
	s.ChunksLocked = uint64(cs.ChunksLocked)
	s.LargeRegionsMapped = uint64(cs.LargeRegions)
	s.ChunksMapped = s.ChunksSecret + s.ChunksLocked + s.LargeRegionsMapped
	s.BytesMapped = cs.BytesMapped
	s.CommittedBytes = cs.BytesCommitted
	s.IdleChunks = uint64(cs.IdleChunks)
	s.CommittedSecretBytes, s.CommittedLockedBytes = cs.CommittedSecret, cs.CommittedLocked
	s.LazyBytes, s.ArenaBytes = cs.LazyBytes, cs.ArenaBytes
	k := secretmem.Detect()
	s.Model, s.MemlockLimit, s.MemlockBypass, s.BudgetShared = k.Model, k.MemlockLimit, k.Bypass(), k.Shared()
}

// MarshalJSON writes s with the keys of the C library's JSON stats report
// (SECRETHEAP_STATS=json:…, internal/stats): every value an unsigned
// integer (bools 0 or 1, Model its number), "classes" one object per size
// class. Values the Go allocator has no field for are left out.
func (s Stats) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	writeFields(&b, reflect.ValueOf(s), statstable.Fields)
	b.WriteString(`,"classes":[`)
	for i := range s.Classes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('{')
		writeFields(&b, reflect.ValueOf(s.Classes[i]), statstable.ClassFields)
		b.WriteByte('}')
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// writeFields writes v's fields named in the table as "key":number pairs.
func writeFields(b *bytes.Buffer, v reflect.Value, table []statstable.Field) {
	first := true
	for _, f := range table {
		if f.Go == "" {
			continue
		}
		fv := v.FieldByName(f.Go)
		var n uint64
		switch fv.Kind() {
		case reflect.Bool:
			if fv.Bool() {
				n = 1
			}
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
			n = fv.Uint()
		default: // TestStatsTable keeps the table and the struct in step
			panic(fmt.Sprintf("alloc: stats field %s (%s) is not a table value", f.Go, fv.Kind()))
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(strconv.Quote(f.Key) + ":" + strconv.FormatUint(n, 10))
	}
}
