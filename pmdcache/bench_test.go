package pmdcache_test

import (
	"testing"

	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/pmdcache"
	"github.com/secretheap/secretheap/secretmem"
	"github.com/stretchr/testify/require"
)

var backends = []secretmem.Policy{secretmem.PolicySecret, secretmem.PolicyLocked}

// BenchmarkGetPutIdle measures the reuse path: Get of an idle chunk and Put
// back (no system call).
func BenchmarkGetPutIdle(b *testing.B) {
	testutil.RequireSecretMem(b)
	c := newCache(b, pmdcache.Config{})
	ch, err := c.Get()
	require.NoError(b, err)
	require.NoError(b, ch.Commit(64<<10))
	c.Put(ch)
	b.ReportAllocs()
	for b.Loop() {
		ch, err := c.Get()
		if err != nil {
			b.Fatal(err)
		}
		c.Put(ch)
	}
	if st := c.Stats(); st.Maps != 1 {
		b.Fatalf("reuse mapped %d chunks", st.Maps)
	}
}

// BenchmarkLookup measures the owner lookup of an address in a chunk.
func BenchmarkLookup(b *testing.B) {
	testutil.RequireSecretMem(b)
	c := newCache(b, pmdcache.Config{})
	ch, err := c.Get()
	require.NoError(b, err)
	addr := uintptr(ch.Base()) + 12345
	for b.Loop() {
		if c.Lookup(addr) != ch {
			b.Fatal("lookup")
		}
	}
}

// BenchmarkFirstCommitPage measures committing the first OS page of a fresh
// chunk (the first allocation's cost). Mapping and unmapping the chunk are
// outside the timer. The locked backend (anonymous memory) is the baseline.
func BenchmarkFirstCommitPage(b *testing.B) {
	benchFreshCommit(b, false, func(*pmdcache.Chunk) uintptr { return 1 })
}

// BenchmarkChunkFaultIn measures committing a whole fresh 2 MiB chunk in one
// run (512 OS pages), the cost idle reuse avoids.
func BenchmarkChunkFaultIn(b *testing.B) {
	benchFreshCommit(b, true, (*pmdcache.Chunk).Size)
}

// benchFreshCommit times Commit(end(chunk)) on a fresh chunk per iteration,
// for each backend; Get and Put (map, unmap) are outside the timer.
// setBytes reports throughput over a whole chunk.
func benchFreshCommit(b *testing.B, setBytes bool, end func(*pmdcache.Chunk) uintptr) {
	testutil.RequireSecretMem(b)
	for _, p := range backends {
		b.Run(p.String(), func(b *testing.B) {
			c := newCache(b, pmdcache.Config{Policy: p, MaxIdleChunks: -1})
			if setBytes {
				b.SetBytes(pmdcache.MaxChunkSize)
			}
			for b.Loop() {
				b.StopTimer()
				ch, err := c.Get()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := ch.Commit(end(ch)); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c.Put(ch)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkMapChunk measures Get of a new chunk and its Put (map + unmap,
// nothing committed): the cost of a chunk the idle bound did not keep.
func BenchmarkMapChunk(b *testing.B) {
	testutil.RequireSecretMem(b)
	for _, p := range backends {
		b.Run(p.String(), func(b *testing.B) {
			c := newCache(b, pmdcache.Config{Policy: p, MaxIdleChunks: -1})
			for b.Loop() {
				ch, err := c.Get()
				if err != nil {
					b.Fatal(err)
				}
				c.Put(ch)
			}
		})
	}
}

// BenchmarkFirstGet measures what the first allocation of a process costs
// in this layer: New, reserving the arena, mapping the first chunk and
// committing its first OS page (then Close, outside the timer).
func BenchmarkFirstGet(b *testing.B) {
	testutil.RequireSecretMem(b)
	for _, p := range backends {
		b.Run(p.String(), func(b *testing.B) {
			for b.Loop() {
				c, err := pmdcache.New(pmdcache.Config{Policy: p})
				if err != nil {
					b.Fatal(err)
				}
				ch, err := c.Get()
				if err != nil {
					b.Fatal(err)
				}
				if err := ch.Commit(1); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
