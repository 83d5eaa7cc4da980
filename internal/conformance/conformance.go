// Package conformance is the one behavioural test suite for secretheap's two
// allocators: the Go heap (package alloc) and the C core (cshim, reached
// through cgo by package internal/ccore). It is written once, here, and run by
// alloc/conformance_test.go and internal/ccore/conformance_test.go, so that a
// property holds for both or the difference is written down below.
//
// Each case runs under t.Run, against a fresh Allocator from the factory, and
// ends with the allocator's invariant checker (Check), so a case that leaves
// the heap inconsistent fails by name.
//
// # Cases
//
//   - zero-on-alloc: every block is zero when handed out, including a block
//     handed out again after it was filled and freed.
//   - wipe-on-free: the bytes of a freed block read as zero before anyone
//     reuses them (read through a pipe, so an unmapped block would be EFAULT,
//     not a crash); the control reads the pattern in the live block.
//   - alignment: every block is at least 16-byte aligned, for every size 1..2048
//     and sampled sizes up to 40000, many live at once.
//   - len-cap: len == cap == n.
//   - class-boundaries: sizes c-1, c, c+1 around every size class and the
//     small/page-run and page-run/huge limits, all live at once and each filled
//     to its last byte with its own pattern: no two blocks overlap and no write
//     reaches a neighbour.
//   - page-runs and huge: requests above 32 KiB and above half a chunk
//     (1 MiB) behave like small ones.
//   - secretmem-mapping: a block that reports secretmem.BackendSecret lies in a mapping
//     /proc/self/maps names secretmem; the control is a Go-heap slice, whose
//     mapping is found and is not secretmem.
//   - backend: Backend reports a live block (and any sub-slice of it) with its
//     backend, and neither a freed block nor a Go-heap slice.
//   - usable-size: where the allocator exposes it, usable size >= n.
//   - foreign-slice: freeing a Go-heap slice is an error and touches nothing.
//   - invalid-size: n <= 0 and an impossible n are errors, not crashes.
//   - stats: live blocks and requested bytes move by exactly what the case
//     allocated and return to where they were after it freed everything.
//   - concurrent: goroutines allocate, fill, hand blocks to other goroutines,
//     which verify and free them.
//
// # Intended differences between Go and C
//
// The suite states behaviour through the Allocator interface, so the
// adapters absorb the differences below; they are by design, not bugs.
//
//   - Misuse (double free, a slice starting inside a block): the Go heap
//     panics, the C core prints "secretheap: double free of 0x… (class N B)"
//     and aborts the process. Neither is in this suite, because an abort
//     cannot be observed in-process; each package tests its own in a child
//     process.
//   - A pointer outside every chunk: C's secretheap_free hands it to libc
//     free (blocks malloc'ed before the library loaded must stay freeable).
//     The Go heap returns alloc.ErrForeign; the cgo binding checks first and
//     returns alloc.ErrForeign too, because passing a Go-heap pointer to
//     libc free would corrupt the process.
//   - Exhaustion: C's default SECRETHEAP_ON_EXHAUSTED=fallback hands out libc
//     memory; Go never hands out unprotected memory. The binding treats a
//     fallback block (backend NONE) as exhaustion: it frees it and returns
//     an error, so through the binding both sides agree.
//   - Scope: the C heap is one per process, the Go heap one per alloc.New.
//     The suite therefore compares stats as differences around each case,
//     never as absolute values.
//   - n <= 0: C's malloc(0) returns a minimum block; the binding refuses
//     n <= 0 as the Go heap does, so slices of length 0 never own memory.
//   - Usable size: the C core reports the block's class size; the Go heap has
//     no such call (its slices have cap == len), so UsableSize is optional.
//   - Backend of a slice: the Go heap requires the whole slice to lie within
//     the bytes asked for; secretheap_backend looks at one pointer and counts
//     the class slack as part of the block, so the binding (which checks the
//     first and the last byte) accepts a slice reaching into the slack, and
//     one spanning two adjacent live blocks. Go slices from Alloc have
//     cap == len, so only unsafe code can build either.
//
// # Differences found by the differential test (preload)
//
// preload's FuzzDifferential and TestDifferentialRandom run one operation
// sequence on both heaps. What they found, and which side is at fault:
//
//   - C, realloc in place: secretheap_realloc keeps a block where it is when
//     the new size has the same size class (or fits its page run) and
//     neither wipes the bytes a shrink gives up nor zeroes those a grow
//     adds. alloc(48), fill, realloc(33), realloc(48) shows the old bytes
//     33..47 where realloc's contract and the Go heap give zeros. They are
//     the block's own and free wipes them, so nothing leaks to another
//     caller; the test tolerates and logs it unless SECRETHEAP_DIFF_STRICT=1.
//     The fix belongs in C: wipe [n, old) on an in-place shrink.
package conformance

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// Stats are the numbers the suite compares, taken from the allocator's own
// statistics. Only differences between two snapshots are meaningful (the C
// heap is shared by the whole process).
type Stats struct {
	// LiveBlocks counts blocks handed out and not yet freed.
	LiveBlocks uint64
	// RequestedBytes sums the sizes asked for by live blocks.
	RequestedBytes uint64
	// ReservedBytes sums the bytes reserved for live blocks (>= requested).
	ReservedBytes uint64
}

// Allocator is the surface of a heap under test.
type Allocator interface {
	// Alloc returns a zeroed block of len and cap n, or an error; n <= 0
	// is an error.
	Alloc(n int) ([]byte, error)
	// Free wipes and releases a block returned by Alloc. A slice that is
	// no block of this allocator's (e.g. on the Go heap) is an error and
	// is not touched.
	Free(b []byte) error
	// Backend reports whether b lies inside a live block, and its backend.
	Backend(b []byte) (secretmem.Backend, bool)
	// Stats returns the allocator's current statistics.
	Stats() Stats
	// Check runs the allocator's invariant checker: nil when every slab
	// and chunk invariant holds. Only called while no goroutine allocates.
	Check() error
}

// UsableSizer is implemented by allocators that report a block's usable
// size (the C core: the class size).
type UsableSizer interface {
	// UsableSize returns the usable bytes of the live block that starts at
	// b, 0 if there is none.
	UsableSize(b []byte) int
}

// Factory returns the allocator for one case. It may return the same
// (process-wide) allocator every time; cleanup belongs in t.Cleanup.
type Factory func(t *testing.T) Allocator

// testCase is one named property.
type testCase struct {
	name string
	run  func(t *testing.T, a Allocator)
}

// cases lists the properties in the order they run; see the package comment.
var cases = []testCase{
	{"zero-on-alloc", testZeroOnAlloc},
	{"wipe-on-free", testWipeOnFree},
	{"alignment", testAlignment},
	{"len-cap", testLenCap},
	{"class-boundaries", testClassBoundaries},
	{"page-runs", testPageRuns},
	{"huge", testHuge},
	{"secretmem-mapping", testSecretMemMapping},
	{"backend", testBackend},
	{"usable-size", testUsableSize},
	{"foreign-slice", testForeignSlice},
	{"invalid-size", testInvalidSize},
	{"stats", testStats},
	{"concurrent", testConcurrent},
}

// OnlyEnv names an environment variable that, when set, restricts Run to
// the cases it lists (comma-separated names, e.g. "wipe-on-free,stats"): for
// a developer chasing one property, and for the suite's own mutation tests.
const OnlyEnv = "SECRETHEAP_CONFORMANCE_ONLY"

// CaseNames returns the names of the suite's cases, in the order Run runs
// them.
func CaseNames() []string {
	names := make([]string, len(cases))
	for i, tc := range cases {
		names[i] = tc.name
	}
	return names
}

// Run runs every case against allocators from newAllocator, each under
// t.Run, and runs the allocator's invariant checker after each. It skips
// (or fails under SECRETHEAP_REQUIRE=1) where memfd_secret is unavailable.
func Run(t *testing.T, newAllocator Factory) {
	testutil.RequireSecretMem(t)
	var only []string
	if v := os.Getenv(OnlyEnv); v != "" {
		only = strings.Split(v, ",")
	}
	for _, tc := range cases {
		if only != nil && !slices.Contains(only, tc.name) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t)
			require.NoError(t, a.Check(), "invariants before the case")
			tc.run(t, a)
			require.NoError(t, a.Check(), "invariants after the case")
		})
	}
}

// Sizes returns the sizes that sit on either side of every size class and of
// the small/page-run (32 KiB) and page-run/huge (half a 2 MiB chunk)
// limits, ascending and without duplicates. The classes follow the shared
// generator's rule (16..128 in steps of 16, then four per doubling to
// 32 KiB); the suite recomputes them so that it depends on neither
// allocator's tables.
func Sizes() []int {
	seen := map[int]bool{}
	var out []int
	add := func(n int) {
		if n > 0 && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, c := range ClassSizes() {
		add(c - 1)
		add(c)
		add(c + 1)
	}
	for _, n := range []int{1, 2, 7, 15, 4095, 4096, 4097, 32768 + 4096, 65536, 1<<20 - 1, 1 << 20, 1<<20 + 1} {
		add(n)
	}
	slices.Sort(out)
	return out
}

// ClassSizes returns the 40 block sizes of the shared size-class table.
func ClassSizes() []int {
	var out []int
	for c := 16; c <= 128; c += 16 {
		out = append(out, c)
	}
	for base := 128; base < 32768; base *= 2 {
		for i := 1; i <= 4; i++ {
			out = append(out, base+i*base/4)
		}
	}
	return out
}

// Fill writes a pattern derived from seed into b, different at every offset
// and for every seed, so that a block overwritten by another shows.
func Fill(b []byte, seed uint64) {
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x) | 1 // never zero: a wiped byte always differs
	}
}

// Verify reports the first offset at which b differs from Fill(seed), or -1.
func Verify(b []byte, seed uint64) int {
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if b[i] != byte(x)|1 {
			return i
		}
	}
	return -1
}

// FirstNonZero returns the offset of the first non-zero byte of b, or -1.
func FirstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// Peek copies the memory under b through a pipe: the kernel reads it, so a
// range that is no longer mapped gives EFAULT instead of a segmentation
// fault. This is how the suite reads a block after freeing it.
func Peek(b []byte) ([]byte, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// A pipe holds 64 KiB by default; move at most half of that per round
	// so that a write never blocks (the pipe is non-blocking anyway).
	const piece = 32 << 10
	out := make([]byte, 0, len(b))
	for off := 0; off < len(b); off += piece {
		end := min(off+piece, len(b))
		n, err := unix.Write(p[1], b[off:end])
		if err != nil {
			return out, fmt.Errorf("write of %d bytes at offset %d: %w", end-off, off, err)
		}
		if n != end-off {
			return out, fmt.Errorf("short write at offset %d: %d of %d", off, n, end-off)
		}
		buf := make([]byte, n)
		got := 0
		for got < n {
			m, err := unix.Read(p[0], buf[got:])
			if err != nil {
				return out, fmt.Errorf("read back at offset %d: %w", off+got, err)
			}
			got += m
		}
		out = append(out, buf...)
	}
	return out, nil
}

// mustAlloc allocates n bytes or fails the test.
func mustAlloc(t testing.TB, a Allocator, n int) []byte {
	t.Helper()
	b, err := a.Alloc(n)
	require.NoError(t, err, "Alloc(%d)", n)
	require.Len(t, b, n, "Alloc(%d)", n)
	return b
}

// mustFree frees b or fails the test.
func mustFree(t testing.TB, a Allocator, b []byte) {
	t.Helper()
	require.NoError(t, a.Free(b), "Free(%d bytes at %p)", len(b), unsafe.SliceData(b))
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func testZeroOnAlloc(t *testing.T, a Allocator) {
	for _, n := range Sizes() {
		b := mustAlloc(t, a, n)
		require.Equal(t, -1, FirstNonZero(b), "fresh block of %d bytes", n)
		Fill(b, uint64(n))
		mustFree(t, a, b)
		// The same size again: most likely the block just freed (both
		// allocators reuse the most recently freed block of a class).
		b = mustAlloc(t, a, n)
		require.Equal(t, -1, FirstNonZero(b), "reused block of %d bytes", n)
		mustFree(t, a, b)
	}
}

func testWipeOnFree(t *testing.T, a Allocator) {
	// A live pin keeps the small sizes' chunk mapped after the block under
	// test is freed; huge blocks have a region of their own, which may be
	// unmapped on free — then Peek gets EFAULT, and the kernel has wiped
	// the pages, which passes too.
	pin := mustAlloc(t, a, 16)
	defer mustFree(t, a, pin)
	for _, n := range []int{1, 16, 17, 100, 1024, 4096, 5000, 32768, 32769, 100000, 1<<20 + 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			b := mustAlloc(t, a, n)
			Fill(b, 0xA5A5+uint64(n))
			// Control: Peek sees the pattern of the live block, so a
			// zero read after Free is the wipe, not a blind Peek.
			live, err := Peek(b)
			require.NoError(t, err)
			require.Equal(t, -1, Verify(live, 0xA5A5+uint64(n)), "Peek of the live block")
			mustFree(t, a, b)
			freed, err := Peek(b)
			if n > 1<<20 && errors.Is(err, unix.EFAULT) {
				return
			}
			require.NoError(t, err, "freed %d-byte block is no longer mapped", n)
			require.Equal(t, -1, FirstNonZero(freed), "freed %d-byte block not wiped", n)
		})
	}
}

func testAlignment(t *testing.T, a Allocator) {
	var sizes []int
	for n := 1; n <= 2048; n++ {
		sizes = append(sizes, n)
	}
	for n := 2049; n <= 40000; n += 97 {
		sizes = append(sizes, n)
	}
	sizes = append(sizes, 40000)
	// Keep a batch live so that blocks land at distinct addresses instead
	// of one recycled block passing every time.
	const batch = 64
	live := make([][]byte, 0, batch)
	flush := func() {
		for _, b := range live {
			mustFree(t, a, b)
		}
		live = live[:0]
	}
	for _, n := range sizes {
		b := mustAlloc(t, a, n)
		require.Zero(t, addr(b)%16, "Alloc(%d) = %#x, not 16-byte aligned", n, addr(b))
		live = append(live, b)
		if len(live) == batch {
			flush()
		}
	}
	flush()
}

func testLenCap(t *testing.T, a Allocator) {
	for _, n := range []int{1, 15, 16, 33, 1000, 4096, 32769, 1<<20 + 1} {
		b := mustAlloc(t, a, n)
		assert.Equal(t, n, len(b), "len")
		assert.Equal(t, n, cap(b), "cap")
		mustFree(t, a, b)
	}
}

func testClassBoundaries(t *testing.T, a Allocator) {
	sizes := Sizes()
	blocks := make([][]byte, len(sizes))
	for i, n := range sizes {
		blocks[i] = mustAlloc(t, a, n)
		require.Equal(t, -1, FirstNonZero(blocks[i]), "fresh %d-byte block", n)
		Fill(blocks[i], uint64(i)+1)
	}
	// Intervals must not overlap: sort by address and compare neighbours.
	order := make([]int, len(blocks))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return cmp.Compare(addr(blocks[i]), addr(blocks[j])) })
	for k := 1; k < len(order); k++ {
		prev, cur := blocks[order[k-1]], blocks[order[k]]
		require.LessOrEqual(t, addr(prev)+uintptr(len(prev)), addr(cur),
			"blocks of %d and %d bytes overlap", len(prev), len(cur))
	}
	for i, b := range blocks {
		require.Equal(t, -1, Verify(b, uint64(i)+1), "block of %d bytes overwritten", len(b))
	}
	require.NoError(t, a.Check(), "invariants with every boundary size live")
	for _, b := range blocks {
		mustFree(t, a, b)
	}
}

func testPageRuns(t *testing.T, a Allocator) {
	sizes := []int{32769, 36864, 40000, 65536, 65537, 131072, 500000, 1 << 20}
	blocks := make([][]byte, len(sizes))
	for i, n := range sizes {
		blocks[i] = mustAlloc(t, a, n)
		require.Equal(t, -1, FirstNonZero(blocks[i]), "fresh %d-byte run", n)
		require.Zero(t, addr(blocks[i])%16)
		Fill(blocks[i], uint64(n))
	}
	for i, b := range blocks {
		require.Equal(t, -1, Verify(b, uint64(sizes[i])), "run of %d bytes overwritten", len(b))
	}
	for _, b := range blocks {
		mustFree(t, a, b)
	}
	b := mustAlloc(t, a, 65536)
	require.Equal(t, -1, FirstNonZero(b), "reused run")
	mustFree(t, a, b)
}

func testHuge(t *testing.T, a Allocator) {
	for _, n := range []int{1<<20 + 1, 2 << 20, 3<<20 + 12345} {
		b := mustAlloc(t, a, n)
		require.Equal(t, -1, FirstNonZero(b), "fresh %d-byte region", n)
		require.Zero(t, addr(b)%16)
		Fill(b, uint64(n))
		be, ok := a.Backend(b[n-1:])
		require.True(t, ok, "last byte of a huge block")
		require.Contains(t, []secretmem.Backend{secretmem.BackendSecret, secretmem.BackendLocked}, be)
		require.Equal(t, -1, Verify(b, uint64(n)))
		mustFree(t, a, b)
	}
}

// mappingOf returns the /proc/self/maps line (procfs.Mapping.String) whose
// range holds p.
func mappingOf(p uintptr) (string, error) {
	maps, err := procfs.Maps(0)
	if err != nil {
		return "", err
	}
	m, ok := procfs.MappingAt(maps, uint64(p))
	if !ok {
		return "", fmt.Errorf("%#x is in no mapping of /proc/self/maps", p)
	}
	return m.String(), nil
}

func testSecretMemMapping(t *testing.T, a Allocator) {
	for _, n := range []int{32, 4096, 40000, 1<<20 + 1} {
		b := mustAlloc(t, a, n)
		be, ok := a.Backend(b)
		require.True(t, ok)
		for _, off := range []int{0, n - 1} {
			line, err := mappingOf(addr(b) + uintptr(off))
			require.NoError(t, err)
			if be == secretmem.BackendSecret {
				assert.Contains(t, line, "secretmem", "byte %d of a %d-byte block", off, n)
			} else {
				assert.NotContains(t, line, "secretmem", "locked block in a secretmem mapping")
			}
		}
		mustFree(t, a, b)
	}
	// Control: the Go heap's mapping is found and is not secretmem.
	ordinary := make([]byte, 64)
	line, err := mappingOf(addr(ordinary))
	require.NoError(t, err)
	require.NotContains(t, line, "secretmem")
}

func testBackend(t *testing.T, a Allocator) {
	for _, n := range []int{1, 48, 4096, 32769, 1<<20 + 1} {
		b := mustAlloc(t, a, n)
		be, ok := a.Backend(b)
		require.True(t, ok, "live %d-byte block", n)
		require.Contains(t, []secretmem.Backend{secretmem.BackendSecret, secretmem.BackendLocked}, be)
		be2, ok := a.Backend(b[n/2:])
		require.True(t, ok, "middle of a live %d-byte block", n)
		require.Equal(t, be, be2)
		mustFree(t, a, b)
		_, ok = a.Backend(b)
		require.False(t, ok, "freed %d-byte block still reported live", n)
	}
	_, ok := a.Backend(make([]byte, 32))
	require.False(t, ok, "Go-heap slice reported as a block")
}

func testUsableSize(t *testing.T, a Allocator) {
	us, ok := a.(UsableSizer)
	if !ok {
		t.Skip("allocator has no usable-size call (cap == len)")
	}
	for _, n := range Sizes() {
		b := mustAlloc(t, a, n)
		got := us.UsableSize(b)
		require.GreaterOrEqual(t, got, n, "usable size of a %d-byte block", n)
		// The whole usable size is ours to write: write it and check.
		full := unsafe.Slice(unsafe.SliceData(b), got)
		Fill(full, uint64(n))
		require.Equal(t, -1, Verify(full, uint64(n)))
		mustFree(t, a, b)
		require.Zero(t, us.UsableSize(b), "usable size of a freed block")
	}
	require.Zero(t, us.UsableSize(make([]byte, 32)), "usable size of a Go-heap slice")
}

func testForeignSlice(t *testing.T, a Allocator) {
	ordinary := make([]byte, 64)
	Fill(ordinary, 7)
	require.Error(t, a.Free(ordinary), "Free of a Go-heap slice")
	require.Equal(t, -1, Verify(ordinary, 7), "Free of a foreign slice touched it")
	// Stack-sized and larger foreign slices, too.
	big := make([]byte, 1<<16)
	require.Error(t, a.Free(big))
}

func testInvalidSize(t *testing.T, a Allocator) {
	before := a.Stats()
	for _, n := range []int{0, -1, -1 << 40, 1 << 46} {
		b, err := a.Alloc(n)
		require.Error(t, err, "Alloc(%d)", n)
		require.Nil(t, b, "Alloc(%d) returned a slice with its error", n)
	}
	after := a.Stats()
	require.Equal(t, before.LiveBlocks, after.LiveBlocks, "failed allocations left live blocks")
}

func testStats(t *testing.T, a Allocator) {
	before := a.Stats()
	sizes := []int{1, 16, 17, 1000, 4096, 32769, 1<<20 + 1}
	var sum uint64
	blocks := make([][]byte, 0, len(sizes))
	for _, n := range sizes {
		blocks = append(blocks, mustAlloc(t, a, n))
		sum += uint64(n)
	}
	mid := a.Stats()
	require.Equal(t, uint64(len(sizes)), mid.LiveBlocks-before.LiveBlocks, "live blocks")
	require.Equal(t, sum, mid.RequestedBytes-before.RequestedBytes, "requested bytes")
	require.GreaterOrEqual(t, mid.ReservedBytes-before.ReservedBytes, sum, "reserved bytes")
	for _, b := range blocks {
		mustFree(t, a, b)
	}
	after := a.Stats()
	require.Equal(t, before.LiveBlocks, after.LiveBlocks, "live blocks after freeing")
	require.Equal(t, before.RequestedBytes, after.RequestedBytes, "requested bytes after freeing")
	require.Equal(t, before.ReservedBytes, after.ReservedBytes, "reserved bytes after freeing")
}

func testConcurrent(t *testing.T, a Allocator) {
	const (
		producers = 4
		perWorker = 2000
	)
	before := a.Stats()
	type msg struct {
		b    []byte
		seed uint64
	}
	ch := make(chan msg, 64)
	errs := make(chan error, 2*producers)
	var prod, cons sync.WaitGroup
	for w := range producers {
		prod.Add(1)
		go func() {
			defer prod.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range perWorker {
				n := 1 + r.IntN(2048)
				if i%64 == 0 {
					n = 32769 + r.IntN(100000) // a page run now and then
				}
				b, err := a.Alloc(n)
				if err != nil {
					errs <- fmt.Errorf("worker %d: Alloc(%d): %w", w, n, err)
					return
				}
				if k := FirstNonZero(b); k >= 0 {
					errs <- fmt.Errorf("worker %d: fresh %d-byte block has byte %d = %#x", w, n, k, b[k])
					return
				}
				seed := uint64(w)<<32 | uint64(i)
				Fill(b, seed)
				ch <- msg{b, seed}
			}
		}()
	}
	for range producers {
		cons.Add(1)
		go func() {
			defer cons.Done()
			for m := range ch {
				if k := Verify(m.b, m.seed); k >= 0 {
					errs <- fmt.Errorf("block of %d bytes (seed %#x) corrupted at %d", len(m.b), m.seed, k)
				}
				if _, ok := a.Backend(m.b); !ok {
					errs <- fmt.Errorf("live block of %d bytes not reported by Backend", len(m.b))
				}
				if err := a.Free(m.b); err != nil {
					errs <- fmt.Errorf("Free(%d bytes): %w", len(m.b), err)
				}
			}
		}()
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	require.NoError(t, errors.Join(all...))
	after := a.Stats()
	require.Equal(t, before.LiveBlocks, after.LiveBlocks, "live blocks after every block was freed")
}

// Compare is a helper for differential tests: it reports whether two blocks
// hold the same bytes, naming the first difference.
func Compare(x, y []byte) error {
	if len(x) != len(y) {
		return fmt.Errorf("lengths differ: %d vs %d", len(x), len(y))
	}
	if bytes.Equal(x, y) {
		return nil
	}
	for k := range x {
		if x[k] != y[k] {
			return fmt.Errorf("byte %d differs: %#x vs %#x", k, x[k], y[k])
		}
	}
	return nil
}
