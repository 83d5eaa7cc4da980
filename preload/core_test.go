package preload

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/conformance"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// cStats returns the C heap's statistics or fails the test.
func cStats(t testing.TB) Stats {
	t.Helper()
	s, err := Core().Stats()
	require.NoError(t, err)
	return s
}

// TestBindingSources checks that the wrappers compile exactly the files of
// CSHIM_CORE in cshim/cshim.mk, and that every cshim source and header has
// its cache-key symlink (see core.go): a file ccore adds must show up here
// before the binding silently lacks it, or runs it stale.
func TestBindingSources(t *testing.T) {
	mk, err := os.ReadFile("../cshim/cshim.mk")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^CSHIM_CORE\s*:=\s*(.*)$`).FindSubmatch(mk)
	require.NotNil(t, m, "CSHIM_CORE line in cshim/cshim.mk")
	var core []string
	for _, f := range strings.Fields(string(m[1])) {
		core = append(core, strings.TrimSuffix(strings.TrimPrefix(f, "cshim/"), ".c"))
	}
	require.NotEmpty(t, core)

	wrappers, err := filepath.Glob("cshim_*.c")
	require.NoError(t, err)
	var got []string
	for _, w := range wrappers {
		name := strings.TrimSuffix(strings.TrimPrefix(w, "cshim_"), ".c")
		got = append(got, name)
		src, err := os.ReadFile(w)
		require.NoError(t, err)
		assert.Contains(t, string(src), `#include "../cshim/`+name+`.c"`, w)
	}
	slices.Sort(core)
	slices.Sort(got)
	assert.Equal(t, core, got, "preload/cshim_*.c must match CSHIM_CORE")
	assert.NotContains(t, got, "openssl", "the OpenSSL skin belongs to libsecretheap.so only")

	headers, err := filepath.Glob("../cshim/*.h")
	require.NoError(t, err)
	for _, f := range core {
		headers = append(headers, "../cshim/"+f+".c")
	}
	for _, h := range headers {
		link := "cshim-" + filepath.Base(h)
		if strings.HasSuffix(link, ".c") {
			link += ".h"
		}
		target, err := os.Readlink(link)
		if assert.NoError(t, err, "symlink %s for %s", link, h) {
			assert.Equal(t, h, target, link)
		}
	}
}

func TestFreeNilAndForeign(t *testing.T) {
	testutil.RequireSecretMem(t)
	h := Core()
	require.NoError(t, h.Free(nil), "Free(nil) is a no-op, as free(NULL)")
	cases := []struct {
		name string
		b    []byte
	}{
		{"go heap", make([]byte, 64)},
		{"empty go slice", make([]byte, 0)},
		{"stack-sized", make([]byte, 8)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, h.Free(tc.b), ErrForeign)
			_, err := h.Realloc(tc.b, 32)
			require.ErrorIs(t, err, ErrForeign)
			_, ok := h.Backend(tc.b)
			require.False(t, ok)
			require.Zero(t, h.UsableSize(tc.b))
		})
	}
	// Control: a block of ours is not foreign.
	b, err := h.Alloc(64)
	require.NoError(t, err)
	be, ok := h.Backend(b)
	require.True(t, ok)
	require.NotEqual(t, secretmem.BackendNone, be)
	require.NoError(t, h.Free(b))
}

func TestAllocSizes(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, n := range []int{0, -1, maxAlloc + 1} {
		b, err := Core().Alloc(n)
		require.ErrorIs(t, err, ErrTooLarge, "Alloc(%d)", n)
		require.Nil(t, b)
	}
	// Within maxAlloc but beyond any arena: the core says ENOMEM.
	b, err := Core().Alloc(maxAlloc)
	require.ErrorIs(t, err, ErrExhausted)
	require.Nil(t, b)
}

func TestRealloc(t *testing.T) {
	testutil.RequireSecretMem(t)
	h := Core()
	cases := []struct {
		name     string
		from, to int
	}{
		{"same class grow", 40, 48},
		{"same class shrink", 48, 40},
		{"small to larger class", 100, 3000},
		{"small to smaller class", 3000, 100},
		{"small to page run", 1000, 50000},
		{"page run to small", 50000, 1000},
		{"page run grow", 40000, 200000},
		{"page run to region", 100000, 1<<20 + 1},
		{"region to small", 1<<20 + 1, 64},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := h.Alloc(tc.from)
			require.NoError(t, err)
			conformance.Fill(b, 77)
			nb, err := h.Realloc(b, tc.to)
			require.NoError(t, err)
			require.Len(t, nb, tc.to)
			keep := min(tc.from, tc.to)
			require.Equal(t, -1, conformance.Verify(nb[:keep], 77), "first %d bytes kept", keep)
			require.Equal(t, -1, conformance.FirstNonZero(nb[keep:]), "grown tail zero")
			if unsafe.SliceData(nb) != unsafe.SliceData(b) {
				old, err := conformance.Peek(b)
				if err == nil {
					require.Equal(t, -1, conformance.FirstNonZero(old), "moved-from block wiped")
				} else {
					require.ErrorIs(t, err, syscall.EFAULT, "moved-from region unmapped")
				}
			}
			require.NoError(t, h.Free(nb))
			require.NoError(t, h.Check())
		})
	}
	t.Run("nil allocates", func(t *testing.T) {
		b, err := h.Realloc(nil, 33)
		require.NoError(t, err)
		require.Len(t, b, 33)
		require.NoError(t, h.Free(b))
	})
	t.Run("bad size keeps the block", func(t *testing.T) {
		b, err := h.Alloc(64)
		require.NoError(t, err)
		conformance.Fill(b, 5)
		for _, n := range []int{0, -5} {
			nb, err := h.Realloc(b, n)
			require.ErrorIs(t, err, ErrTooLarge)
			require.Nil(t, nb)
		}
		_, ok := h.Backend(b)
		require.True(t, ok, "block still live")
		require.Equal(t, -1, conformance.Verify(b, 5))
		require.NoError(t, h.Free(b))
	})
}

func TestStatsMapping(t *testing.T) {
	testutil.RequireSecretMem(t)
	h := Core()
	before := cStats(t)
	require.Len(t, before.Classes, len(conformance.ClassSizes()))
	for i, c := range conformance.ClassSizes() {
		require.EqualValues(t, c, before.Classes[i].Size, "class %d", i)
	}
	small, err := h.Alloc(45) // class 2, 48 B
	require.NoError(t, err)
	run, err := h.Alloc(40000)
	require.NoError(t, err)
	large, err := h.Alloc(1<<20 + 5)
	require.NoError(t, err)
	mid := cStats(t)
	assert.Equal(t, before.Classes[2].LiveBlocks+1, mid.Classes[2].LiveBlocks)
	assert.Equal(t, before.Classes[2].RequestedBytes+45, mid.Classes[2].RequestedBytes)
	assert.Equal(t, before.Classes[2].ReservedBytes+48, mid.Classes[2].ReservedBytes)
	assert.Equal(t, before.RunBlocks+1, mid.RunBlocks)
	assert.Equal(t, before.RunRequestedBytes+40000, mid.RunRequestedBytes)
	assert.Equal(t, before.LargeRegions+1, mid.LargeRegions)
	assert.Equal(t, before.LargeRequestedBytes+1<<20+5, mid.LargeRequestedBytes)
	assert.Equal(t, before.LiveBlocks+3, mid.LiveBlocks)
	assert.Equal(t, secretmem.BackendSecret, mid.Backend)
	assert.NotZero(t, mid.ChunksSecret)
	assert.GreaterOrEqual(t, mid.BytesMapped, mid.CommittedBytes)
	assert.Equal(t, OpenSSLNotHooked, mid.OpenSSL, "the binding never hooks OpenSSL")
	for _, b := range [][]byte{small, run, large} {
		require.NoError(t, h.Free(b))
	}
	after := cStats(t)
	assert.Equal(t, before.LiveBlocks, after.LiveBlocks)
	assert.Equal(t, before.RequestedBytes, after.RequestedBytes)
}

func TestVersion(t *testing.T) {
	hdr, err := os.ReadFile("../cshim/secretheap.h")
	require.NoError(t, err)
	m := regexp.MustCompile(`#define SECRETHEAP_VERSION "([^"]+)"`).FindSubmatch(hdr)
	require.NotNil(t, m)
	assert.Equal(t, string(m[1]), Core().Version())
}

// TestThreadExit allocates on OS threads that then exit (a goroutine that
// ends while locked to its thread takes the thread with it), so the C core's
// per-thread caches are torn down by their destructors while blocks from
// them are still live elsewhere; the survivors are freed afterwards.
func TestThreadExit(t *testing.T) {
	testutil.RequireSecretMem(t)
	h := Core()
	before := cStats(t)
	const threads = 16
	var mu sync.Mutex
	var kept [][]byte
	var wg sync.WaitGroup
	errs := make(chan error, threads)
	for w := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread exits with us
			var mine [][]byte
			for i := range 200 {
				b, err := h.Alloc(16 + (w*200+i)%3000)
				if err != nil {
					errs <- err
					return
				}
				conformance.Fill(b, uint64(w)<<16|uint64(i))
				mine = append(mine, b)
			}
			// Free half here (into this thread's cache), hand the rest on.
			for _, b := range mine[:100] {
				if err := h.Free(b); err != nil {
					errs <- err
					return
				}
			}
			mu.Lock()
			kept = append(kept, mine[100:]...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, h.Check())
	for _, b := range kept {
		require.NoError(t, h.Free(b))
	}
	require.NoError(t, h.Check())
	assert.Equal(t, before.LiveBlocks, cStats(t).LiveBlocks)
}

// TestMisuseAborts frees wrongly in a child process: the C core must name
// the misuse on stderr and abort (SIGABRT; GOTRACEBACK=crash makes the Go
// runtime die of the signal instead of exiting 2 after its own report).
func TestMisuseAborts(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		do   func(h *CHeap) error
		want string
	}{
		{"double free", nil, func(h *CHeap) error {
			b, _ := h.Alloc(40)
			_ = h.Free(b)
			return h.Free(b)
		}, `double free of 0x[0-9a-f]+ \(class 48 B\)`},
		{"interior pointer", nil, func(h *CHeap) error {
			b, _ := h.Alloc(100)
			return h.Free(b[16:])
		}, `free of interior pointer 0x[0-9a-f]+ \(block 0x[0-9a-f]+, class 112 B\)`},
		{"double free of a page run", nil, func(h *CHeap) error {
			pin, _ := h.Alloc(40000) // keeps the chunk after the run is freed
			b, _ := h.Alloc(40000)
			_ = pin
			_ = h.Free(b)
			return h.Free(b)
		}, `double free of 0x[0-9a-f]+`},
		{"double free of a region", nil, func(h *CHeap) error {
			b, _ := h.Alloc(3 << 20)
			_ = h.Free(b)
			return h.Free(b)
		}, `free of 0x[0-9a-f]+: inside the secretheap arena but in no live chunk|double free of 0x[0-9a-f]+`},
		{"realloc after free", nil, func(h *CHeap) error {
			b, _ := h.Alloc(64)
			_ = h.Free(b)
			_, err := h.Realloc(b, 128)
			return err
		}, `double realloc of 0x[0-9a-f]+ \(class 64 B\)`},
		{"write after free", []string{"SECRETHEAP_CHECK_ZERO=1"}, func(h *CHeap) error {
			b, _ := h.Alloc(64)
			_ = h.Free(b)
			b[10] = 1 // the slab stays mapped: the write lands in the free block
			_, err := h.Alloc(64)
			return err
		}, `write after free: block 0x[0-9a-f]+ \(class 64 B\)`},
		// Control for the case above: without SECRETHEAP_CHECK_ZERO the
		// same write goes unnoticed, so the abort above is the check's.
		{"write after free unchecked", nil, func(h *CHeap) error {
			b, _ := h.Alloc(64)
			_ = h.Free(b)
			b[10] = 1
			_, err := h.Alloc(64)
			return err
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testutil.RequireSecretMem(t)
			if testutil.InChild(t) {
				err := tc.do(Core())
				if tc.want != "" {
					t.Fatalf("misuse survived (returned %v)", err)
				}
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{Env: append([]string{"GOTRACEBACK=crash"}, tc.env...)})
			if tc.want == "" {
				require.True(t, res.Clean(), res.Output)
				return
			}
			assert.Equal(t, syscall.SIGABRT, res.Signal, "child must die of SIGABRT:\n%s", res.Output)
			assert.Regexp(t, regexp.MustCompile(`(?m)^secretheap: (`+tc.want+`)`), res.Output)
			assert.NotContains(t, res.Output, "misuse survived")
		})
	}
}

// TestExhaustion runs a child under SECRETHEAP_LIMIT with each
// SECRETHEAP_ON_EXHAUSTED policy that returns: the binding must report
// ErrExhausted in both, never hand out libc memory, and leave the heap
// consistent. The control is the first MiB, which fits and succeeds.
func TestExhaustion(t *testing.T) {
	cases := []struct {
		policy    string
		fallbacks bool
	}{
		{"fallback", true},
		{"null", false},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			testutil.RequireSecretMem(t)
			if testutil.InChild(t) {
				exhaustChild(t)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{Env: []string{
				"SECRETHEAP_LIMIT=4M", "SECRETHEAP_ON_EXHAUSTED=" + tc.policy,
			}})
			require.True(t, res.Clean(), res.Output)
			var rep exhaustReport
			require.True(t, res.Report("exhaust", &rep), res.Output)
			assert.GreaterOrEqual(t, rep.Allocated, 1<<20, "the first MiB fits under a 4 MiB limit")
			assert.LessOrEqual(t, rep.Allocated, 4<<20, "nothing beyond the limit")
			assert.True(t, rep.Exhausted, "ErrExhausted once the limit is reached")
			assert.Equal(t, tc.fallbacks, rep.Fallbacks > 0, "fallbacks counted only under fallback")
			assert.True(t, rep.ReallocClean, "a refused Realloc under null keeps the block; under fallback it is refused too")
		})
	}
}

// exhaustReport is what exhaustChild reports to the parent.
type exhaustReport struct {
	Allocated    int    // bytes allocated before the first refusal
	Exhausted    bool   // the refusal was ErrExhausted
	Fallbacks    uint64 // the core's fallback counter afterwards
	ReallocClean bool   // Realloc past the limit failed cleanly
}

func exhaustChild(t *testing.T) {
	h := Core()
	const piece = 64 << 10
	var blocks [][]byte
	rep := exhaustReport{}
	for rep.Allocated < 64<<20 {
		b, err := h.Alloc(piece)
		if err != nil {
			rep.Exhausted = errors.Is(err, ErrExhausted)
			break
		}
		be, ok := h.Backend(b)
		require.True(t, ok)
		require.NotEqual(t, secretmem.BackendNone, be, "never libc memory")
		blocks = append(blocks, b)
		rep.Allocated += piece
	}
	// Free one block so a small one fits, then grow it past the limit.
	require.NoError(t, h.Free(blocks[len(blocks)-1]))
	blocks = blocks[:len(blocks)-1]
	small, err := h.Alloc(32)
	require.NoError(t, err)
	conformance.Fill(small, 3)
	grown, err := h.Realloc(small, 8<<20)
	if err != nil && errors.Is(err, ErrExhausted) {
		if os.Getenv("SECRETHEAP_ON_EXHAUSTED") == "null" {
			// C's contract: the old block is untouched.
			_, ok := h.Backend(small)
			rep.ReallocClean = ok && conformance.Verify(small, 3) == -1
			require.NoError(t, h.Free(small))
		} else {
			// fallback: the core moved it to libc and freed small; the
			// binding wiped and freed the copy (see Realloc).
			_, ok := h.Backend(small)
			rep.ReallocClean = !ok
		}
	} else if err == nil {
		require.NoError(t, h.Free(grown))
	}
	s := cStats(t)
	rep.Fallbacks = s.Fallbacks
	for _, b := range blocks {
		require.NoError(t, h.Free(b))
	}
	require.NoError(t, h.Check())
	require.Zero(t, cStats(t).LiveBlocks)
	testutil.Report("exhaust", rep)
}

// readMaps is used by tests that look at this process's mappings.
func readMaps(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// TestNoOpenSSLInBinding checks that the binding did not pull libcrypto in:
// the OpenSSL skin is left out on purpose (see core.go).
func TestNoOpenSSLInBinding(t *testing.T) {
	for _, l := range readMaps(t) {
		assert.NotContains(t, l, "libcrypto", "the cgo binding must not load OpenSSL")
	}
}
