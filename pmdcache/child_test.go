package pmdcache_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/pmdcache"
	"github.com/secretheap/secretheap/secretmem"
)

// TestMemlockChild runs the cache as uid 65534 (no CAP_IPC_LOCK) under a
// small RLIMIT_MEMLOCK: chunks shrink to what the headroom allows, every
// byte of them works, and then Get returns a clean ErrExhausted that says
// why. The child must exit normally: never SIGBUS, never any signal.
func TestMemlockChild(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name    string
		memlock uint64
		large   uintptr   // a large region mapped first, to leave an odd headroom
		sizes   []uintptr // chunk sizes Get must return, in order
	}{
		{"64K", 64 << 10, 0, []uintptr{64 << 10}},
		{"8M", 8 << 20, 1536 << 10, []uintptr{2 << 20, 2 << 20, 2 << 20, 512 << 10}},
		{"8M-control", 8 << 20, 0, []uintptr{2 << 20, 2 << 20, 2 << 20, 2 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				memlockChild(t, tc.large)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: tc.memlock})
			require.True(t, res.Clean(), "exit %d, signal %v, fatal %q:\n%s", res.ExitCode, res.Signal, res.FatalSignal, res.Output)
			var got struct {
				Sizes []uintptr
				Err   string
			}
			require.True(t, res.Report("result", &got), res.Output)
			assert.Equal(t, tc.sizes, got.Sizes)
			assert.Contains(t, got.Err, "RLIMIT_MEMLOCK")
			assert.Contains(t, got.Err, fmt.Sprintf("limit %d B", tc.memlock))
		})
	}
}

// memlockChild fills the limit with chunks. Old model: the kernel's refusal
// is Get's mmap (EAGAIN) and VmLck is exactly what the cache mapped, the
// large region lazy (charged at mmap, not faulted in). New model: mapping is
// free, the refusal is a Commit's EFAULT (never SIGBUS), VmLck shows
// nothing, and the cache's own count is the charge. Sizes lists the chunks
// committed whole.
func memlockChild(t *testing.T, large uintptr) {
	c, err := pmdcache.New(pmdcache.Config{Policy: secretmem.PolicySecret})
	require.NoError(t, err)
	defer c.Close()
	model := secretmem.Detect().Model
	if large > 0 {
		l, err := c.GetLarge(large)
		require.NoError(t, err)
		require.NoError(t, l.Commit(l.Size()))
	}
	var got struct {
		Sizes []uintptr
		Err   string
	}
	for i := 0; ; i++ {
		require.Less(t, i, 100, "the limit never stopped Get")
		ch, err := c.Get()
		if err == nil {
			if err = ch.Commit(ch.Size()); err != nil {
				require.Equal(t, secretmem.ModelNew, model, "only the new model refuses at commit: %v", err)
				require.ErrorIs(t, err, unix.EFAULT, "the kernel's own refusal")
			}
		} else if model == secretmem.ModelOld {
			require.ErrorIs(t, err, unix.EAGAIN, "the kernel's own refusal")
		} else {
			// New model: what the cache committed itself fills the limit,
			// so it maps nothing more (the kernel would refuse every commit).
			require.Equal(t, uint64(0), secretmem.Headroom(secretmem.BackendSecret, c.Stats().CommittedSecret), "%v", err)
		}
		if err != nil {
			require.ErrorIs(t, err, pmdcache.ErrExhausted)
			require.ErrorIs(t, err, secretmem.ErrMemlock)
			got.Err = err.Error()
			break
		}
		got.Sizes = append(got.Sizes, ch.Size())
		b := bytesOf(ch, ch.Size())
		for j := range b {
			b[j] = byte(j)
		}
	}
	st := c.Stats()
	m, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	require.Equal(t, st.BytesCommitted, st.CommittedSecret)
	if model == secretmem.ModelOld {
		require.Equal(t, m.Locked, st.BytesMapped, "VmLck is exactly what the cache mapped")
		require.Equal(t, st.BytesMapped, st.BytesCommitted+st.LazyBytes)
		require.Equal(t, uint64(large), st.LazyBytes, "old model: the large region is usable without faulting it in")
	} else {
		require.Zero(t, m.Locked, "the new model's charge is not in VmLck")
		require.Zero(t, st.LazyBytes, "new model: a large region is committed, never lazy")
	}
	testutil.Report("result", got)
}

// TestFallbackChild makes memfd_secret fail (seccomp, ENOSYS) in a child:
// PolicyAuto serves locked chunks and warns exactly once; PolicySecret
// fails with ErrUnsupported. The control child has memfd_secret.
func TestFallbackChild(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name    string
		errno   unix.Errno
		backend string
	}{
		{"blocked", unix.ENOSYS, "locked"},
		{"control", 0, "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				fallbackChild(t, tc.errno != 0)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{BlockMemfdSecret: tc.errno})
			require.True(t, res.Clean(), res.Output)
			var got struct {
				Backend  string
				Warnings []string
				Stats    pmdcache.Stats
			}
			require.True(t, res.Report("result", &got), res.Output)
			assert.Equal(t, tc.backend, got.Backend)
			if tc.errno != 0 {
				require.Len(t, got.Warnings, 1, "one warning, not one per chunk")
				assert.Contains(t, got.Warnings[0], "locked backend")
				assert.Contains(t, got.Warnings[0], "ENOSYS")
				assert.Equal(t, 3, got.Stats.ChunksLocked)
				assert.Zero(t, got.Stats.ChunksSecret)
			} else {
				assert.Empty(t, got.Warnings)
				assert.Equal(t, 3, got.Stats.ChunksSecret)
			}
		})
	}
}

func fallbackChild(t *testing.T, blocked bool) {
	var got struct {
		Backend  string
		Warnings []string
		Stats    pmdcache.Stats
	}
	logf := func(format string, args ...any) { got.Warnings = append(got.Warnings, fmt.Sprintf(format, args...)) }
	c, err := pmdcache.New(pmdcache.Config{Logf: logf})
	require.NoError(t, err)
	defer c.Close()
	for range 3 {
		ch, err := c.Get()
		require.NoError(t, err)
		require.NoError(t, ch.Commit(4096))
		got.Backend = ch.Backend().String()
	}
	got.Stats = c.Stats()
	if blocked {
		require.ErrorIs(t, c.FallbackReason(), secretmem.ErrUnsupported)
	} else {
		require.NoError(t, c.FallbackReason())
	}

	strict, err := pmdcache.New(pmdcache.Config{Policy: secretmem.PolicySecret, Logf: logf})
	require.NoError(t, err)
	defer strict.Close()
	_, err = strict.Get()
	if blocked {
		require.ErrorIs(t, err, secretmem.ErrUnsupported)
		require.False(t, errors.Is(err, pmdcache.ErrExhausted), "unsupported is not exhaustion")
		require.True(t, strings.Contains(err.Error(), "secretmem.enable=1"), err.Error())
	} else {
		require.NoError(t, err)
	}
	testutil.Report("result", got)
}

// TestFallbackWarnsOncePerProcess checks the default logger: two caches
// falling back print one warning to standard error, not one each.
func TestFallbackWarnsOncePerProcess(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name  string
		errno unix.Errno
		want  int
	}{
		{"blocked", unix.EPERM, 1},
		{"control", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				for range 2 {
					c, err := pmdcache.New(pmdcache.Config{})
					require.NoError(t, err)
					for range 2 {
						_, err := c.Get()
						require.NoError(t, err)
					}
					require.NoError(t, c.Close())
				}
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{BlockMemfdSecret: tc.errno})
			require.True(t, res.Clean(), res.Output)
			assert.Equal(t, tc.want, strings.Count(res.Output, "WARNING: memfd_secret is unavailable"), res.Output)
			if tc.want > 0 {
				assert.Contains(t, res.Output, "seccomp")
			}
		})
	}
}

// TestArenaFitsRlimitAS: under RLIMIT_AS the arena takes at most an eighth
// of the address space left, so the program keeps the rest (it took
// whatever fitted: 512 MiB of 1 GiB left, and the program's own 600 MiB
// mapping then failed).
func TestArenaFitsRlimitAS(t *testing.T) {
	testutil.RequireSecretMem(t)
	if testutil.InChild(t) {
		room := uint64(1 << 30)
		st, err := os.ReadFile("/proc/self/status")
		require.NoError(t, err)
		vmsize, err := procfs.StatusKB(st, "VmSize")
		require.NoError(t, err)
		rl := unix.Rlimit{Cur: vmsize + room, Max: vmsize + room}
		require.NoError(t, unix.Setrlimit(unix.RLIMIT_AS, &rl))
		c, err := pmdcache.New(pmdcache.Config{})
		require.NoError(t, err)
		defer c.Close()
		ch, err := c.Get()
		require.NoError(t, err)
		require.NoError(t, ch.Commit(4096))
		arena := c.Stats().ArenaBytes
		assert.LessOrEqual(t, arena, room/8)
		assert.GreaterOrEqual(t, arena, uint64(64<<20))
		p, err := unix.MmapPtr(-1, 0, nil, 600<<20, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		require.NoError(t, err, "the program keeps its address space (arena %d MiB)", arena>>20)
		require.NoError(t, unix.MunmapPtr(p, 600<<20))
		return
	}
	res := testutil.RunChild(t, testutil.ChildOptions{})
	require.True(t, res.Clean(), res.Output)
}
