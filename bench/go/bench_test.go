package benchgo

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/awnumar/memguard"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// Names follow Benchmark<Func>/<backend>/<size>, the scheme of
// alloc/bench_test.go, which cmd/benchreport classifies. alloc's file has the
// secretheap, make and memguard pairs, the secretheap and make RunParallel
// pairs and churn; these are the rows it lacks.

var sizes = []int{32, 256, 4096, 17000}

// naiveAlloc is one memfd_secret allocation that must succeed.
func naiveAlloc(b *testing.B, n int) memfdBlock {
	m, err := memfdAlloc(n)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// checkNaive is the naive backend's self-check: its block is secretmem.
func checkNaive(b *testing.B) {
	b.Helper()
	m, err := memfdAlloc(32)
	if err != nil {
		b.Skipf("memfd_secret unavailable: %v", err)
	}
	ok, err := inSecretMem(m.p)
	require.NoError(b, err)
	require.NoError(b, m.free())
	require.True(b, ok, "naive block is not in a secretmem mapping")
}

// BenchmarkNaiveAllocFree: one memfd_secret file per allocation.
func BenchmarkNaiveAllocFree(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("memfd/%d", n), func(b *testing.B) {
			checkNaive(b)
			for b.Loop() {
				if err := naiveAlloc(b, n).free(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNaiveAllocFreeParallel: the 32 B pair from every P at once.
func BenchmarkNaiveAllocFreeParallel(b *testing.B) {
	b.Run("memfd/32", func(b *testing.B) {
		checkNaive(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m, err := memfdAlloc(32)
				if err == nil {
					err = m.free()
				}
				if err != nil {
					panic(err)
				}
			}
		})
	})
}

// BenchmarkMemguardAllocFreeParallel: memguard's 32 B pair from every P.
func BenchmarkMemguardAllocFreeParallel(b *testing.B) {
	b.Run("memguard/32", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				memguard.NewBuffer(32).Destroy()
			}
		})
	})
}

// churn runs the churn workload of alloc's BenchmarkChurn (4,096 live blocks
// of random 16–2,048 B, each op frees one and allocates one) on any backend.
func churn[T any](b *testing.B, get func(n int) T, put func(T)) {
	const live = 4096
	r := rand.New(rand.NewPCG(1, 2))
	blocks := make([]T, live)
	for i := range blocks {
		blocks[i] = get(16 + r.IntN(2048-16+1))
	}
	b.ResetTimer()
	for b.Loop() {
		i := r.IntN(live)
		put(blocks[i])
		blocks[i] = get(16 + r.IntN(2048-16+1))
	}
	b.StopTimer()
	for _, x := range blocks {
		put(x)
	}
}

// BenchmarkChurnBaselines: churn on the naive allocator and on memguard.
func BenchmarkChurnBaselines(b *testing.B) {
	b.Run("memfd", func(b *testing.B) {
		checkNaive(b)
		churn(b, func(n int) memfdBlock { return naiveAlloc(b, n) },
			func(m memfdBlock) {
				if err := m.free(); err != nil {
					b.Fatal(err)
				}
			})
	})
	b.Run("memguard", func(b *testing.B) {
		churn(b, memguard.NewBuffer, func(lb *memguard.LockedBuffer) { lb.Destroy() })
	})
}

// secretHeap is a heap on memfd_secret, checked to really be secret memory.
func secretHeap(b *testing.B) *alloc.Heap {
	b.Helper()
	testutil.RequireSecretMem(b)
	h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
	require.NoError(b, err)
	b.Cleanup(func() { _ = h.Close() })
	s, err := h.NewSecret(32)
	require.NoError(b, err)
	be, ok := h.Backend(s.Bytes())
	require.True(b, ok)
	require.Equal(b, secretmem.BackendSecret, be, "Secret not in memfd_secret memory")
	s.Destroy()
	return h
}

// BenchmarkSecret: a 32-byte Secret made and destroyed — from a size
// (NewSecret), and from a Go-heap key that Wrap copies in and wipes.
func BenchmarkSecret(b *testing.B) {
	b.Run("secretnew/32", func(b *testing.B) {
		h := secretHeap(b)
		for b.Loop() {
			s, err := h.NewSecret(32)
			if err != nil {
				b.Fatal(err)
			}
			s.Destroy()
		}
	})
	b.Run("secretwrap/32", func(b *testing.B) {
		h := secretHeap(b)
		key := make([]byte, 32)
		for b.Loop() {
			key[0] = 1 // Wrap wiped it
			s, err := h.Wrap(key)
			if err != nil {
				b.Fatal(err)
			}
			s.Destroy()
		}
		if key[0] != 0 {
			b.Fatal("Wrap did not wipe its input")
		}
	})
}
