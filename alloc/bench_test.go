package alloc_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/awnumar/memguard"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// The benchmarks compare the heap with its baselines in the same run:
// make([]byte, n) (Go heap, collected) and memguard's NewBuffer + Destroy
// (one mmap + mlock + guard pages per buffer). Issue #2 sets the targets:
// 32 B pair ≤ 40 ns, RunParallel no worse per op, churn ≤ 100 ns/op with
// committed/live ≤ 1.25, first allocation ≤ 200 µs.

var benchSizes = []int{32, 256, 4096, 17000}

// cpuNow is the process's CPU time (user + system). The machine these
// numbers come from is shared (load average ~12 on 2 cores while the other
// helpers build and test), so wall-clock ns/op is inflated by waiting for a
// core; cpu-ns/op (CPU time of the whole process, GC workers included, per
// op) is the steadier figure to compare.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
}

// sink keeps make's result alive so the compiler cannot drop the allocation.
var sink []byte

func benchHeap(b *testing.B) *alloc.Heap {
	b.Helper()
	h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
	if err != nil {
		b.Skipf("secret memory unavailable: %v", err)
	}
	// Warm the heap: the first slab of each class is committed outside
	// the timed loop (BenchmarkFirstAlloc measures that cost).
	p, err := h.Alloc(1)
	if err != nil {
		b.Skipf("secret memory unavailable: %v", err)
	}
	_ = h.Free(p)
	b.Cleanup(func() { _ = h.Close() })
	return h
}

// BenchmarkAllocFree: one Alloc and one Free of n bytes per op.
func BenchmarkAllocFree(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("secretheap/%d", n), func(b *testing.B) {
			h := benchHeap(b)
			b.ReportAllocs()
			cpu := cpuNow()
			for b.Loop() {
				p, err := h.Alloc(n)
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Free(p); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
		b.Run(fmt.Sprintf("make/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuNow()
			for b.Loop() {
				sink = make([]byte, n)
			}
			reportCPU(b, cpu)
		})
		b.Run(fmt.Sprintf("memguard/%d", n), func(b *testing.B) {
			cpu := cpuNow()
			for b.Loop() {
				lb := memguard.NewBuffer(n)
				lb.Destroy()
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkAllocFreeParallel: the 32 B pair from every P at once.
func BenchmarkAllocFreeParallel(b *testing.B) {
	b.Run("secretheap/32", func(b *testing.B) {
		h := benchHeap(b)
		cpu := cpuNow()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p, err := h.Alloc(32)
				if err != nil {
					panic(err)
				}
				if err := h.Free(p); err != nil {
					panic(err)
				}
			}
		})
		reportCPU(b, cpu)
	})
	b.Run("make/32", func(b *testing.B) {
		cpu := cpuNow()
		b.RunParallel(func(pb *testing.PB) {
			var local []byte
			for pb.Next() {
				local = make([]byte, 32)
			}
			sink = local
		})
		reportCPU(b, cpu)
	})
}

// BenchmarkChurn keeps 4,096 live blocks of random 16–2,048 B; each op frees
// a random one and allocates a new one of random size. It reports
// committed/live: committed secret bytes over live requested bytes at the
// end (the committed frontier never shrinks, so this is also its peak).
func BenchmarkChurn(b *testing.B) {
	const live = 4096
	b.Run("secretheap", func(b *testing.B) {
		h := benchHeap(b)
		r := rand.New(rand.NewPCG(1, 2))
		blocks := make([][]byte, live)
		for i := range blocks {
			p, err := h.Alloc(16 + r.IntN(2048-16+1))
			if err != nil {
				b.Fatal(err)
			}
			blocks[i] = p
		}
		cpu := cpuNow()
		for b.Loop() {
			i := r.IntN(live)
			if err := h.Free(blocks[i]); err != nil {
				b.Fatal(err)
			}
			p, err := h.Alloc(16 + r.IntN(2048-16+1))
			if err != nil {
				b.Fatal(err)
			}
			blocks[i] = p
		}
		reportCPU(b, cpu)
		st := h.Stats()
		b.ReportMetric(float64(st.CommittedBytes)/float64(st.RequestedBytes), "committed/live")
		b.ReportMetric(float64(st.ReservedBytes)/float64(st.RequestedBytes), "reserved/live")
	})
	b.Run("make", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 2))
		blocks := make([][]byte, live)
		for i := range blocks {
			blocks[i] = make([]byte, 16+r.IntN(2048-16+1))
		}
		cpu := cpuNow()
		for b.Loop() {
			blocks[r.IntN(live)] = make([]byte, 16+r.IntN(2048-16+1))
		}
		reportCPU(b, cpu)
	})
}

// BenchmarkNewHeapFirstAlloc builds a new Heap and makes its first 32 B
// allocation, per op: reserve the arena, map a chunk (memfd_secret,
// ftruncate, mmap), commit the first run, carve a slab — plus Close. In one
// process the direct-map split and the kernel's per-process state are warm
// after the first op; BenchmarkFirstAllocFreshProcess measures a cold
// process.
func BenchmarkNewHeapFirstAlloc(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Alloc(32); err != nil {
			b.Skipf("secret memory unavailable: %v", err)
		}
		b.StopTimer()
		_ = h.Close()
		b.StartTimer()
	}
}

// firstAllocEnv makes the test binary a child that times New + the first
// Alloc in a fresh process and prints the nanoseconds.
const firstAllocEnv = "SECRETHEAP_BENCH_FIRST_ALLOC_CHILD"

func TestMain(m *testing.M) {
	testutil.LiftMemlock()
	if os.Getenv(firstAllocEnv) == "1" {
		t0 := time.Now()
		h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
		if err == nil {
			_, err = h.Alloc(32)
		}
		d := time.Since(t0)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(d.Nanoseconds())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkFirstAllocFreshProcess re-executes the test binary per op; the
// child times New + its first 32 B Alloc (not process start-up) and prints
// it. ns/op is that child-side time; the wall time of the re-exec is not
// counted.
func BenchmarkFirstAllocFreshProcess(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	n := 0
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), firstAllocEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			b.Skipf("child: %v: %s", err, out)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			b.Fatalf("child said %q", out)
		}
		total += time.Duration(ns)
		n++
	}
	// ns/op is the child's time for New + first Alloc.
	b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/op")
}
