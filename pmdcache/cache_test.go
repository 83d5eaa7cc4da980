package pmdcache_test

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/pmdcache"
	"github.com/secretheap/secretheap/secretmem"
)

func TestMain(m *testing.M) {
	testutil.LiftMemlock()
	code := m.Run()
	testutil.CleanupShared()
	os.Exit(code)
}

const (
	mib  = 1 << 20
	slot = 4 * mib
)

var page = secretmem.PageSize()

// needMemlock skips a test that maps more than the memlock headroom allows
// (only without CAP_IPC_LOCK: CI runs as root, where nothing is skipped).
func needMemlock(t testing.TB, n uint64) {
	t.Helper()
	if h := secretmem.Headroom(secretmem.BackendSecret, 0); h < n {
		t.Skipf("needs %d B of RLIMIT_MEMLOCK headroom, have %d B", n, h)
	}
}

func newCache(t testing.TB, cfg pmdcache.Config) *pmdcache.Cache {
	t.Helper()
	c, err := pmdcache.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func bytesOf(ch *pmdcache.Chunk, n uintptr) []byte { return unsafe.Slice((*byte)(ch.Base()), n) }

// perms returns the permission column of the /proc/self/maps line that
// contains addr, and its name.
func perms(t *testing.T, addr uintptr) (string, string) {
	t.Helper()
	maps, err := procfs.Maps(0)
	require.NoError(t, err)
	m, ok := procfs.MappingAt(maps, uint64(addr))
	if !ok {
		return "", ""
	}
	return m.Perms, m.Path
}

func TestNewMapsNothing(t *testing.T) {
	c := newCache(t, pmdcache.Config{})
	assert.Equal(t, pmdcache.Stats{}, c.Stats())
	assert.Nil(t, c.Lookup(0x7f0000000000), "no arena yet")
	_, err := pmdcache.New(pmdcache.Config{Policy: 9})
	require.Error(t, err)
}

// TestLayout checks alignment, guards and Lookup for chunks, guards and
// foreign addresses.
func TestLayout(t *testing.T) {
	testutil.RequireSecretMem(t)
	c := newCache(t, pmdcache.Config{Policy: secretmem.PolicySecret})
	var chunks []*pmdcache.Chunk
	for range 3 {
		ch, err := c.Get()
		require.NoError(t, err)
		chunks = append(chunks, ch)
	}
	heap := make([]byte, 64)
	for i, ch := range chunks {
		base := uintptr(ch.Base())
		require.Equal(t, uintptr(pmdcache.MaxChunkSize), ch.Size())
		assert.Zero(t, base%pmdcache.MaxChunkSize, "chunk aligned to 2 MiB")
		assert.Zero(t, base%slot, "chunk at its slot's start")
		assert.Equal(t, secretmem.BackendSecret, ch.Backend())
		assert.False(t, ch.Large())
		assert.Zero(t, ch.Committed(), "nothing committed up front")
		p, name := perms(t, base)
		assert.Equal(t, "rw-s", p)
		assert.Contains(t, name, "/secretmem")
		p, _ = perms(t, base+ch.Size())
		assert.Equal(t, "---p", p, "rest of the slot is a guard")
		p, _ = perms(t, base-1)
		assert.Equal(t, "---p", p, "guard before")
		for _, tc := range []struct {
			name string
			addr uintptr
			want *pmdcache.Chunk
		}{
			{"first byte", base, ch},
			{"middle", base + ch.Size()/2, ch},
			{"last byte", base + ch.Size() - 1, ch},
			{"guard after", base + ch.Size(), nil},
			{"end of slot", base + slot - 1, nil},
			{"guard before", base - 1, nil},
		} {
			t.Run(fmt.Sprintf("chunk%d/%s", i, tc.name), func(t *testing.T) {
				assert.Same(t, tc.want, c.Lookup(tc.addr))
			})
		}
	}
	for _, tc := range []struct {
		name string
		addr uintptr
	}{
		{"zero", 0},
		{"go heap", uintptr(unsafe.Pointer(&heap[0]))},
		{"max", ^uintptr(0)},
		{"slot 0 (leading guard)", uintptr(chunks[0].Base()) - slot}, // the first chunk takes slot 1
		{"past the arena", uintptr(chunks[0].Base()) - slot + pmdcache.DefaultArenaSize},
	} {
		t.Run("foreign/"+tc.name, func(t *testing.T) { assert.Nil(t, c.Lookup(tc.addr)) })
	}
	for _, ch := range chunks {
		c.Put(ch)
	}
}

// TestCommitRuns checks the run sizes: the first exactly what is asked,
// then doubling up to 64 OS pages; committed bytes never change; fresh bytes
// read zero.
func TestCommitRuns(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, p := range []secretmem.Policy{secretmem.PolicySecret, secretmem.PolicyLocked} {
		t.Run(p.String(), func(t *testing.T) {
			c := newCache(t, pmdcache.Config{Policy: p})
			ch, err := c.Get()
			require.NoError(t, err)
			require.NoError(t, ch.Commit(100))
			assert.Equal(t, page, ch.Committed(), "first run: exactly what is asked, rounded to an OS page")
			b := bytesOf(ch, ch.Size())
			for i := range b[:page] {
				b[i] = 0x5A
			}
			want := []uintptr{2, 4, 8, 16, 32, 64, 64, 64} // pages per run
			total := page
			for _, run := range want {
				require.NoError(t, ch.Commit(ch.Committed()+1))
				total += run * page
				assert.Equal(t, total, ch.Committed())
			}
			assert.Equal(t, bytes.Repeat([]byte{0x5A}, int(page)), b[:page], "committed bytes survive later runs")
			assert.Equal(t, make([]byte, total-page), b[page:total], "fresh OS pages read zero")
			assert.Equal(t, uint64(total), c.Stats().BytesCommitted)

			// A request larger than the next run is served whole.
			require.NoError(t, ch.Commit(total+100*page))
			assert.Equal(t, total+100*page, ch.Committed())
			// Fast path: nothing to do.
			require.NoError(t, ch.Commit(10))
			// The run never passes the chunk's end.
			require.NoError(t, ch.Commit(ch.Size()))
			assert.Equal(t, ch.Size(), ch.Committed())
			require.Error(t, ch.Commit(ch.Size()+1))
			c.Put(ch)
		})
	}
}

// TestMaxRunPages checks the run cap: 1 commits exactly what is asked (the
// default doubles, see TestCommitRuns).
func TestMaxRunPages(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		max  int
		want []uintptr // committed OS pages after each Commit(committed+1)
	}{
		{1, []uintptr{1, 2, 3, 4, 5}},
		{4, []uintptr{1, 3, 7, 11, 15}},
		{0, []uintptr{1, 3, 7, 15, 31}},
	} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			c := newCache(t, pmdcache.Config{MaxRunPages: tc.max})
			ch, err := c.Get()
			require.NoError(t, err)
			var got []uintptr
			for range tc.want {
				require.NoError(t, ch.Commit(ch.Committed()+1))
				got = append(got, ch.Committed()/page)
			}
			assert.Equal(t, tc.want, got)
			c.Put(ch)
		})
	}
	_, err := pmdcache.New(pmdcache.Config{MaxRunPages: -1})
	require.Error(t, err)
}

// TestIdleReuse checks that a Put chunk comes back from Get with its
// committed OS pages and without a new mapping; the control (no idle chunks
// kept) gets a fresh, uncommitted chunk.
func TestIdleReuse(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name    string
		maxIdle int
		reused  bool
	}{
		{"kept", 0, true},
		{"control-none-kept", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, pmdcache.Config{MaxIdleChunks: tc.maxIdle})
			ch, err := c.Get()
			require.NoError(t, err)
			ch.Owner = "allocator metadata"
			require.NoError(t, ch.Commit(64<<10))
			base := ch.Base()
			c.Put(ch)
			assert.Nil(t, c.Lookup(uintptr(base)), "an idle chunk is not found by Lookup")
			assert.Nil(t, ch.Owner, "Put clears Owner")
			ch2, err := c.Get()
			require.NoError(t, err)
			assert.Nil(t, ch2.Owner)
			st := c.Stats()
			if tc.reused {
				assert.Same(t, ch, ch2)
				assert.Equal(t, uintptr(64<<10), ch2.Committed(), "committed pages kept")
				assert.Equal(t, uint64(1), st.Maps, "no new mapping")
				assert.Zero(t, st.Unmaps)
			} else {
				assert.NotSame(t, ch, ch2)
				assert.Zero(t, ch2.Committed())
				assert.Equal(t, uint64(2), st.Maps)
				assert.Equal(t, uint64(1), st.Unmaps)
			}
			assert.Same(t, ch2, c.Lookup(uintptr(ch2.Base())))
			c.Put(ch2)
		})
	}
}

// TestIdleBound checks that chunks beyond MaxIdleChunks are unmapped.
func TestIdleBound(t *testing.T) {
	testutil.RequireSecretMem(t)
	needMemlock(t, 10*mib)
	for _, maxIdle := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(maxIdle), func(t *testing.T) {
			c := newCache(t, pmdcache.Config{MaxIdleChunks: maxIdle})
			want := maxIdle
			if maxIdle == 0 {
				want = pmdcache.DefaultMaxIdleChunks
			}
			var chs []*pmdcache.Chunk
			for range 5 {
				ch, err := c.Get()
				require.NoError(t, err)
				require.NoError(t, ch.Commit(page))
				chs = append(chs, ch)
			}
			for _, ch := range chs {
				c.Put(ch)
			}
			st := c.Stats()
			assert.Equal(t, want, st.IdleChunks)
			assert.Equal(t, uint64(5-want), st.Unmaps)
			assert.Equal(t, uint64(want)*pmdcache.MaxChunkSize, st.BytesMapped)
			assert.Equal(t, uint64(want)*uint64(page), st.BytesCommitted)
			assert.Equal(t, want, st.ChunksSecret+st.ChunksLocked)
			unmapped := 0
			for _, ch := range chs {
				if p, _ := perms(t, uintptr(ch.Base())); p == "---p" {
					unmapped++
				}
			}
			assert.Equal(t, 5-want, unmapped, "unmapped chunks are guards again")
		})
	}
}

// TestLimit checks Config.Limit: the last chunk shrinks to fit, then
// ErrExhausted; the control without a limit keeps mapping 2 MiB chunks.
func TestLimit(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name  string
		limit uint64
		sizes []uintptr
	}{
		{"3M", 3 * mib, []uintptr{2 * mib, 1 * mib}},
		{"2.25M", 2*mib + 256<<10, []uintptr{2 * mib, 256 << 10}},
		{"100K", 100 << 10, []uintptr{64 << 10}},
		{"control", 0, []uintptr{2 * mib, 2 * mib, 2 * mib}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, pmdcache.Config{Limit: tc.limit})
			for _, want := range tc.sizes {
				ch, err := c.Get()
				require.NoError(t, err)
				assert.Equal(t, want, ch.Size())
				assert.Zero(t, uintptr(ch.Base())%want, "aligned to its size")
				require.NoError(t, ch.Commit(ch.Size()))
			}
			if tc.limit == 0 {
				return
			}
			_, err := c.Get()
			require.ErrorIs(t, err, pmdcache.ErrExhausted)
			var ee *pmdcache.ExhaustedError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, "Config.Limit", ee.Limit)
			assert.Equal(t, tc.limit, ee.Max)
			assert.Contains(t, err.Error(), fmt.Sprintf("Config.Limit %d B", tc.limit))
			_, err = c.GetLarge(4 * mib)
			require.ErrorIs(t, err, pmdcache.ErrExhausted)
			assert.LessOrEqual(t, c.Stats().BytesMapped, tc.limit)
		})
	}
}

// TestGetLarge checks regions of their own: consecutive slots, a guard after,
// Lookup over the whole range, unmapped on Put.
func TestGetLarge(t *testing.T) {
	testutil.RequireSecretMem(t)
	c := newCache(t, pmdcache.Config{})
	for _, tc := range []struct {
		name string
		ask  uintptr
		size uintptr
	}{
		{"1B", 1, page},
		{"5M+1", 5*mib + 1, 5*mib + page},
		{"4M", 4 * mib, 4 * mib}, // needs a second slot for its guard
		{"3M", 3 * mib, 3 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := c.GetLarge(tc.ask)
			require.NoError(t, err)
			assert.True(t, ch.Large())
			assert.Equal(t, tc.size, ch.Size())
			base := uintptr(ch.Base())
			assert.Zero(t, base%slot)
			for _, off := range []uintptr{0, ch.Size() / 2, ch.Size() - 1} {
				assert.Same(t, ch, c.Lookup(base+off))
			}
			assert.Nil(t, c.Lookup(base+ch.Size()))
			assert.Nil(t, c.Lookup(base-1))
			p, _ := perms(t, base+ch.Size())
			assert.Equal(t, "---p", p, "guard after a large region")
			require.NoError(t, ch.Commit(ch.Size()))
			assert.Equal(t, ch.Size(), ch.Committed(), "a large region commits whole on its first run")
			b := bytesOf(ch, ch.Size())
			b[0], b[len(b)-1] = 1, 1
			// A chunk mapped meanwhile does not land in the region's slots.
			small, err := c.Get()
			require.NoError(t, err)
			sb := uintptr(small.Base())
			assert.True(t, sb+small.Size() <= base || sb >= base+ch.Size()+page)
			st := c.Stats()
			assert.Equal(t, 1, st.LargeRegions)
			c.Put(ch)
			assert.Nil(t, c.Lookup(base))
			st = c.Stats()
			assert.Zero(t, st.LargeRegions, "large regions are never kept idle")
			p, _ = perms(t, base)
			assert.Equal(t, "---p", p)
			c.Put(small)
		})
	}
	_, err := c.GetLarge(0)
	require.Error(t, err)
	_, err = c.GetLarge(1 << 40)
	require.ErrorIs(t, err, pmdcache.ErrExhausted, "larger than the arena")
}

func TestArenaFull(t *testing.T) {
	testutil.RequireSecretMem(t)
	c := newCache(t, pmdcache.Config{ArenaSize: 3 * slot}) // slots 1 and 2 usable
	a, err := c.Get()
	require.NoError(t, err)
	b, err := c.Get()
	require.NoError(t, err)
	_, err = c.Get()
	require.ErrorIs(t, err, pmdcache.ErrExhausted)
	assert.Contains(t, err.Error(), "arena")
	c.Put(a)
	// Control: the freed chunk is there again.
	a2, err := c.Get()
	require.NoError(t, err)
	assert.Same(t, a, a2)
	c.Put(a2)
	c.Put(b)
}

func TestPutMisuse(t *testing.T) {
	testutil.RequireSecretMem(t)
	c := newCache(t, pmdcache.Config{})
	other := newCache(t, pmdcache.Config{})
	ch, err := c.Get()
	require.NoError(t, err)
	assert.PanicsWithValue(t, fmt.Sprintf("pmdcache: Put of chunk %#x that belongs to another cache", uintptr(ch.Base())),
		func() { other.Put(ch) })
	c.Put(ch)
	assert.PanicsWithValue(t, fmt.Sprintf("pmdcache: Put of chunk %#x that is not in use (double Put)", uintptr(ch.Base())),
		func() { c.Put(ch) })
}

func TestClose(t *testing.T) {
	testutil.RequireSecretMem(t)
	needMemlock(t, 7*mib)
	m0, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	c, err := pmdcache.New(pmdcache.Config{})
	require.NoError(t, err)
	inUse, err := c.Get()
	require.NoError(t, err)
	idle, err := c.Get()
	require.NoError(t, err)
	require.NoError(t, idle.Commit(page))
	c.Put(idle)
	large, err := c.GetLarge(3 * mib)
	require.NoError(t, err)
	m1, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	if secretmem.Detect().Model == secretmem.ModelOld {
		assert.Equal(t, m0.Locked+7*mib, m1.Locked, "old model: charged at mmap")
	} else {
		assert.Equal(t, m0.Locked, m1.Locked, "new model: not in VmLck")
	}
	assert.Equal(t, uint64(7*mib), c.Stats().BytesMapped)

	base := uintptr(inUse.Base())
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "second Close is a no-op")
	assert.Nil(t, c.Lookup(base))
	p, _ := perms(t, base)
	assert.Empty(t, p, "arena released")
	m2, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	assert.Equal(t, m0.Locked, m2.Locked, "all memlock returned")
	_, err = c.Get()
	require.ErrorIs(t, err, pmdcache.ErrClosed)
	_, err = c.GetLarge(1)
	require.ErrorIs(t, err, pmdcache.ErrClosed)
	c.Put(inUse) // after Close: nothing to do, no panic
	c.Put(large)
	require.Error(t, inUse.Commit(page))
	assert.Equal(t, pmdcache.Stats{Maps: 3, Unmaps: 3}, c.Stats())
}

// TestConcurrent runs Get, Commit, Lookup and Put from many goroutines; run
// it with -race.
func TestConcurrent(t *testing.T) {
	testutil.RequireSecretMem(t)
	needMemlock(t, 24*mib) // 8 workers' chunks, 3 idle, large regions
	c := newCache(t, pmdcache.Config{MaxIdleChunks: 3})
	const workers, iters = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range iters {
				var ch *pmdcache.Chunk
				var err error
				if i%10 == 9 {
					ch, err = c.GetLarge(uintptr(w+4) * page)
				} else {
					ch, err = c.Get()
				}
				if err != nil {
					errs <- err
					return
				}
				if err := ch.Commit(uintptr(i%4+1) * page); err != nil {
					errs <- err
					return
				}
				b := bytesOf(ch, page)
				if b[0] != 0 {
					errs <- fmt.Errorf("chunk %p handed out twice or not wiped: %d", ch.Base(), b[0])
					return
				}
				b[0] = byte(w + 1)
				ch.Owner = w
				if got := c.Lookup(uintptr(ch.Base()) + page - 1); got != ch {
					errs <- fmt.Errorf("Lookup(%p) = %p, want %p", ch.Base(), got, ch)
					return
				}
				if b[0] != byte(w+1) || ch.Owner != w {
					errs <- fmt.Errorf("chunk %p shared between goroutines", ch.Base())
					return
				}
				b[0] = 0 // wiped, as the allocator does before Put
				c.Put(ch)
			}
		}()
	}
	// Readers race Lookup against everything else.
	stop := make(chan struct{})
	var rd sync.WaitGroup
	rd.Add(1)
	go func() {
		defer rd.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			st := c.Stats()
			if ch := c.Lookup(uintptr(st.BytesMapped)); ch != nil {
				_ = ch.Size()
			}
		}
	}()
	wg.Wait()
	close(stop)
	rd.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	assert.LessOrEqual(t, st.IdleChunks, 3)
	assert.Equal(t, uint64(st.IdleChunks)*pmdcache.MaxChunkSize, st.BytesMapped, "only idle chunks left")
	assert.Zero(t, st.LargeRegions)
}

// TestLargeDropsIdle checks that a large region that does not fit the limit
// takes the memory of idle chunks; the control, with the chunks in use, is
// refused.
func TestLargeDropsIdle(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, idle := range []bool{true, false} {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			c := newCache(t, pmdcache.Config{Limit: 5 * mib})
			a, err := c.Get()
			require.NoError(t, err)
			b, err := c.Get()
			require.NoError(t, err)
			if idle {
				c.Put(a)
				c.Put(b)
				require.Equal(t, 2, c.Stats().IdleChunks)
			}
			l, err := c.GetLarge(3 * mib)
			if !idle {
				require.ErrorIs(t, err, pmdcache.ErrExhausted)
				return
			}
			require.NoError(t, err)
			st := c.Stats()
			assert.Zero(t, st.IdleChunks)
			assert.Equal(t, uint64(3*mib), st.BytesMapped)
			c.Put(l)
		})
	}
}
