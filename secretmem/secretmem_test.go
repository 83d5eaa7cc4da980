package secretmem_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

func TestMain(m *testing.M) {
	testutil.LiftMemlock()
	code := m.Run()
	testutil.CleanupShared()
	os.Exit(code)
}

// bytesOf views n bytes of mapped memory at p.
func bytesOf(p unsafe.Pointer, n uintptr) []byte { return unsafe.Slice((*byte)(p), n) }

// mappingOf returns the /proc/self/maps line (procfs.Mapping.String) and
// the smaps VmFlags of the mapping that contains addr.
func mappingOf(t *testing.T, addr uintptr) (line string, flags []string) {
	t.Helper()
	maps, err := procfs.Smaps(0)
	require.NoError(t, err)
	m, ok := procfs.MappingAt(maps, uint64(addr))
	require.True(t, ok, "no mapping contains %#x", addr)
	return m.String(), m.VmFlags
}

func TestProbe(t *testing.T) {
	testutil.RequireSecretMem(t)
	require.NoError(t, secretmem.Probe())
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want secretmem.Policy
		err  bool
	}{
		{"", secretmem.PolicyAuto, false},
		{"auto", secretmem.PolicyAuto, false},
		{" Secret ", secretmem.PolicySecret, false},
		{"locked", secretmem.PolicyLocked, false},
		{"mlock", 0, true},
		{"secrets", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := secretmem.ParsePolicy(tc.in)
			if tc.err {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "auto, secret or locked")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p)
			back, err := secretmem.ParsePolicy(p.String())
			require.NoError(t, err)
			assert.Equal(t, p, back, "String round-trips")
		})
	}
	assert.Equal(t, "secret", secretmem.BackendSecret.String())
	assert.Equal(t, "locked", secretmem.BackendLocked.String())
	assert.Equal(t, "none", secretmem.BackendNone.String())
}

// TestBackendMapping checks what the kernel says about each backend's
// mapping: memfd_secret shows up as /secretmem, the locked backend as
// anonymous memory that is locked (lo), not dumped (dd) and wiped on fork
// (wf). Each backend is the other's control.
func TestBackendMapping(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		policy  secretmem.Policy
		backend secretmem.Backend
		secret  bool
		flags   []string
	}{
		{secretmem.PolicySecret, secretmem.BackendSecret, true, []string{"sh"}},
		{secretmem.PolicyAuto, secretmem.BackendSecret, true, []string{"sh"}},
		{secretmem.PolicyLocked, secretmem.BackendLocked, false, []string{"lo", "dd", "wf"}},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			before, err := secretmem.ReadMemlock()
			require.NoError(t, err)
			r, err := secretmem.MapAt(nil, 64<<10, tc.policy)
			require.NoError(t, err)
			defer r.Close()
			assert.Equal(t, tc.backend, r.Backend())
			assert.NoError(t, r.FallbackReason())
			line, flags := mappingOf(t, uintptr(r.Base()))
			assert.Equal(t, tc.secret, strings.Contains(line, "/secretmem"), line)
			for _, f := range tc.flags {
				assert.Contains(t, flags, f, line)
			}
			if !tc.secret {
				assert.NotContains(t, flags, "sh", "locked memory is private")
			} else {
				assert.NotContains(t, flags, "wf", "memfd_secret refuses MADV_WIPEONFORK")
			}
			// The locked backend and the old model charge the whole mapping to
			// the process (VmLck) at map time, before any OS page is
			// committed; the new model charges the user at first fault, and
			// VmLck never shows it.
			after, err := secretmem.ReadMemlock()
			require.NoError(t, err)
			if tc.backend == secretmem.BackendLocked || secretmem.Detect().Model == secretmem.ModelOld {
				assert.GreaterOrEqual(t, after.Locked, before.Locked+64<<10)
			} else {
				assert.Equal(t, before.Locked, after.Locked)
			}
		})
	}
	// Control: an ordinary anonymous mapping has none of these marks, so the
	// flag checks above can fail.
	p, err := unix.MmapPtr(-1, 0, nil, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer unix.MunmapPtr(p, 64<<10)
	line, flags := mappingOf(t, uintptr(p))
	assert.NotContains(t, line, "/secretmem")
	for _, f := range []string{"lo", "dd", "wf", "sh"} {
		assert.NotContains(t, flags, f)
	}
}

// TestCommit checks that committed memory reads zero, that committing again
// never changes committed bytes, and that Wipe zeroes exactly its range.
func TestCommit(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, p := range []secretmem.Policy{secretmem.PolicySecret, secretmem.PolicyLocked} {
		t.Run(p.String(), func(t *testing.T) {
			const size = 256 << 10
			r, err := secretmem.MapAt(nil, size, p)
			require.NoError(t, err)
			defer r.Close()
			pg := secretmem.PageSize()
			require.NoError(t, r.Commit(pg, 1)) // one byte commits its whole OS page
			assert.Equal(t, pg, r.Committed())
			b := bytesOf(r.Base(), size)
			assert.Equal(t, make([]byte, pg), b[pg:2*pg], "fresh OS page reads zero")
			for i := range b[pg : 2*pg] {
				b[pg+uintptr(i)] = 0xA5
			}
			// Committing an overlapping range must leave committed bytes alone
			// (a pread from /dev/zero over them would zero them).
			require.NoError(t, r.Commit(0, 4*pg))
			assert.Equal(t, 4*pg, r.Committed())
			assert.Equal(t, bytes.Repeat([]byte{0xA5}, int(pg)), b[pg:2*pg], "committed bytes survive a second Commit")
			assert.Equal(t, make([]byte, pg), b[0:pg])

			r.Wipe(pg+10, 100)
			assert.Equal(t, make([]byte, 100), b[pg+10:pg+110])
			assert.Equal(t, byte(0xA5), b[pg+9], "Wipe stays inside its range")
			assert.Equal(t, byte(0xA5), b[pg+110], "Wipe stays inside its range")
			r.Wipe(0, size) // reaches only committed OS pages: must not fault
			assert.Equal(t, make([]byte, 4*pg), b[:4*pg])
			assert.Equal(t, 4*pg, r.Committed(), "Wipe commits nothing")

			require.Error(t, r.Commit(size-pg, 2*pg), "past the end")
			require.NoError(t, r.Close())
			require.NoError(t, r.Close(), "second Close is a no-op")
			require.Error(t, r.Commit(0, pg), "Commit after Close")
		})
	}
}

// TestReservation checks MapAt inside a reservation and that Close puts the
// PROT_NONE guard back and returns the memlock charge.
func TestReservation(t *testing.T) {
	testutil.RequireSecretMem(t)
	res, err := secretmem.Reserve(8<<20, 4<<20)
	require.NoError(t, err)
	defer res.Release()
	base := uintptr(res.Base())
	assert.Zero(t, base%(4<<20), "aligned")
	line, flags := mappingOf(t, base)
	assert.Contains(t, line, " ---p ")
	assert.Contains(t, flags, "dd", "a core dump writer must skip the reservation (gcore would write it as zeros)")
	// Control: a plain PROT_NONE mapping is not marked dd.
	plain, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	require.NoError(t, err)
	_, plainFlags := mappingOf(t, uintptr(unsafe.Pointer(&plain[0])))
	assert.NotContains(t, plainFlags, "dd")
	require.NoError(t, unix.Munmap(plain))

	for _, p := range []secretmem.Policy{secretmem.PolicySecret, secretmem.PolicyLocked} {
		t.Run(p.String(), func(t *testing.T) {
			m0, err := secretmem.ReadMemlock()
			require.NoError(t, err)
			addr := unsafe.Add(res.Base(), 2<<20)
			r, err := secretmem.MapAt(addr, 2<<20, p)
			require.NoError(t, err)
			assert.Equal(t, addr, r.Base())
			require.NoError(t, r.Commit(0, 2<<20))
			b := bytesOf(r.Base(), 2<<20)
			b[0], b[len(b)-1] = 1, 2
			line, _ := mappingOf(t, uintptr(addr))
			assert.Contains(t, line, " rw")
			m1, err := secretmem.ReadMemlock()
			require.NoError(t, err)
			if p == secretmem.PolicyLocked || secretmem.Detect().Model == secretmem.ModelOld {
				assert.Equal(t, m0.Locked+2<<20, m1.Locked)
			} else {
				assert.Equal(t, m0.Locked, m1.Locked, "the new model's charge is not in VmLck")
			}

			require.NoError(t, r.Close())
			line, flags := mappingOf(t, uintptr(addr))
			assert.Contains(t, line, " ---p ", "guard is back")
			assert.Contains(t, flags, "dd", "the guard is left out of core dumps again")
			assert.NotContains(t, line, "/secretmem")
			m2, err := secretmem.ReadMemlock()
			require.NoError(t, err)
			assert.Equal(t, m0.Locked, m2.Locked, "memlock charge returned")
		})
	}

	t.Run("outside", func(t *testing.T) {
		_, err := secretmem.MapAt(unsafe.Add(res.Base(), 6<<20), 4<<20, secretmem.PolicyLocked)
		require.ErrorIs(t, err, unix.EINVAL, "a range leaving the reservation is refused")
		var x [64]byte
		_, err = secretmem.MapAt(unsafe.Pointer(&x), 4096, secretmem.PolicyLocked)
		require.ErrorIs(t, err, unix.EINVAL, "MAP_FIXED over memory we do not own is refused")
		// Control: the same call inside the reservation works.
		r, err := secretmem.MapAt(unsafe.Add(res.Base(), 4<<20), 4<<20, secretmem.PolicyLocked)
		require.NoError(t, err)
		require.NoError(t, r.Close())
	})
}

func TestReadMemlockRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_IPC_LOCK)")
	}
	m, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	assert.True(t, m.Unlimited, "CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK")
	assert.Equal(t, ^uint64(0), m.Headroom())
}

func TestHeadroom(t *testing.T) {
	for _, tc := range []struct {
		m    secretmem.Memlock
		want uint64
	}{
		{secretmem.Memlock{Limit: 8 << 20, Locked: 2 << 20}, 6 << 20},
		{secretmem.Memlock{Limit: 64 << 10, Locked: 64 << 10}, 0},
		{secretmem.Memlock{Limit: 64 << 10, Locked: 1 << 20}, 0},
		{secretmem.Memlock{Limit: 0, Unlimited: true, Locked: 1 << 20}, ^uint64(0)},
	} {
		t.Run(tc.m.String(), func(t *testing.T) { assert.Equal(t, tc.want, tc.m.Headroom()) })
	}
}

// TestMemlockLimit runs in an unprivileged child with a small RLIMIT_MEMLOCK:
// what fits maps and commits, what does not is a typed error with the
// numbers — never a signal.
func TestMemlockLimit(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name    string
		memlock uint64
	}{
		{"64K", 64 << 10},
		{"8M", 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				memlockChild(t, tc.memlock)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: tc.memlock})
			require.True(t, res.Clean(), "child must pass and exit normally:\n%s", res.Output)
			var msg string
			require.True(t, res.Report("error", &msg), res.Output)
			assert.Contains(t, msg, fmt.Sprintf("limit %d B", tc.memlock))
			assert.Contains(t, msg, "ulimit -l")
		})
	}
	t.Run("zero", func(t *testing.T) {
		if testutil.InChild(t) {
			err := secretmem.Probe()
			require.Error(t, err)
			require.ErrorIs(t, err, secretmem.ErrMemlock)
			require.NotErrorIs(t, err, secretmem.ErrUnsupported)
			var pe *secretmem.ProbeError
			require.ErrorAs(t, err, &pe)
			assert.Contains(t, pe.Fix, "LimitMEMLOCK=")
			testutil.Report("error", err.Error())
			return
		}
		res := testutil.RunChild(t, testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: 0})
		require.True(t, res.Clean(), res.Output)
	})
}

func memlockChild(t *testing.T, limit uint64) {
	m, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	require.False(t, m.Unlimited, "uid 65534 has no CAP_IPC_LOCK")
	require.Equal(t, limit, m.Limit)
	head := m.Headroom()
	require.GreaterOrEqual(t, head, uint64(64<<10))
	require.Equal(t, head, secretmem.Headroom(secretmem.BackendLocked, 0), "mlock's headroom is the limit minus VmLck")

	for _, p := range []secretmem.Policy{secretmem.PolicySecret, secretmem.PolicyLocked} {
		// Control: what fits maps, commits and works.
		r, err := secretmem.MapAt(nil, uintptr(head), p)
		require.NoError(t, err, "%v: the headroom itself must fit", p)
		require.NoError(t, r.Commit(0, r.Size()))
		b := bytesOf(r.Base(), r.Size())
		for i := range b {
			b[i] = byte(i)
		}
		// Past the limit: a typed error. On the new model the mapping is
		// free and the refusal comes at the first commit (EFAULT, not SIGBUS).
		newModel := p == secretmem.PolicySecret && secretmem.Detect().Model != secretmem.ModelOld
		r2, err := secretmem.MapAt(nil, 64<<10, p)
		if newModel {
			require.NoError(t, err, "new model: mmap is never refused")
			err = r2.Commit(0, 64<<10)
			require.NoError(t, r2.Close())
		}
		require.Error(t, err)
		require.ErrorIs(t, err, secretmem.ErrMemlock)
		var me *secretmem.MemlockError
		require.ErrorAs(t, err, &me)
		assert.Equal(t, uint64(64<<10), me.Asked)
		assert.Equal(t, limit, me.Memlock.Limit)
		switch {
		case newModel:
			require.ErrorIs(t, err, unix.EFAULT, "the first commit past the user's budget")
		case p == secretmem.PolicySecret:
			assert.Equal(t, head, me.Memlock.Locked)
			require.ErrorIs(t, err, unix.EAGAIN, "memfd_secret mmap past the limit")
		default:
			assert.Equal(t, head, me.Memlock.Locked)
			require.ErrorIs(t, err, unix.ENOMEM, "mlock2 past the limit")
		}
		testutil.Report("error", err.Error())
		require.NoError(t, r.Close())
	}
}

// TestPolicyWithoutMemfdSecret makes memfd_secret unavailable in a child with
// a seccomp filter, the way an old kernel (ENOSYS) or a container profile
// (EPERM) does. The control child has no filter and gets memfd_secret.
func TestPolicyWithoutMemfdSecret(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		says  string
	}{
		{"ENOSYS", unix.ENOSYS, "secretmem.enable=1"},
		{"EPERM", unix.EPERM, "seccomp"},
		{"control", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				policyChild(t, tc.errno, tc.says)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{BlockMemfdSecret: tc.errno})
			require.True(t, res.Clean(), res.Output)
			var got struct{ Auto, Probe string }
			require.True(t, res.Report("result", &got), res.Output)
			if tc.errno == 0 {
				assert.Equal(t, "secret", got.Auto)
				assert.Empty(t, got.Probe)
			} else {
				assert.Equal(t, "locked", got.Auto, "auto falls back")
				assert.Contains(t, got.Probe, tc.says)
			}
		})
	}
}

func policyChild(t *testing.T, en syscall.Errno, says string) {
	var got struct{ Auto, Probe string }
	probeErr := secretmem.Probe()
	secret, secretErr := secretmem.MapAt(nil, 64<<10, secretmem.PolicySecret)
	auto, err := secretmem.MapAt(nil, 64<<10, secretmem.PolicyAuto)
	require.NoError(t, err, "auto always maps something")
	defer auto.Close()
	require.NoError(t, auto.Commit(0, auto.Size()))
	got.Auto = auto.Backend().String()
	if en == 0 {
		require.NoError(t, probeErr)
		require.NoError(t, secretErr)
		secret.Close()
		assert.NoError(t, auto.FallbackReason())
	} else {
		for _, err := range []error{probeErr, secretErr, auto.FallbackReason()} {
			require.Error(t, err)
			require.ErrorIs(t, err, secretmem.ErrUnsupported)
			require.ErrorIs(t, err, en)
			require.NotErrorIs(t, err, secretmem.ErrMemlock)
			assert.Contains(t, err.Error(), says)
		}
		var pe *secretmem.ProbeError
		require.ErrorAs(t, probeErr, &pe)
		assert.Equal(t, en, pe.Errno)
		assert.NotEmpty(t, pe.Fix)
		got.Probe = probeErr.Error()
		// Once unavailable, auto goes straight to the locked backend.
		again, err := secretmem.MapAt(nil, 64<<10, secretmem.PolicyAuto)
		require.NoError(t, err)
		assert.Equal(t, secretmem.BackendLocked, again.Backend())
		again.Close()
	}
	testutil.Report("result", got)
}

func TestErrorsMatch(t *testing.T) {
	e := &secretmem.MemlockError{Op: "mmap", Backend: secretmem.BackendSecret, Asked: 4096, Errno: unix.EAGAIN,
		Memlock: secretmem.Memlock{Limit: 65536, Locked: 65536}}
	assert.ErrorIs(t, e, secretmem.ErrMemlock)
	assert.ErrorIs(t, e, unix.EAGAIN)
	assert.NotErrorIs(t, e, unix.EFAULT)
	assert.NotErrorIs(t, e, secretmem.ErrUnsupported)
	wrapped := fmt.Errorf("outer: %w", e)
	assert.True(t, errors.Is(wrapped, secretmem.ErrMemlock))
	assert.Contains(t, e.Error(), "limit 65536 B, locked 65536 B, asked 4096 B")
}

// unsafePointer returns the address of b's first byte.
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// TestHeadroomByModel: the locked backend and the old model are charged to
// the process (limit minus VmLck, CAP_IPC_LOCK lifts it); the new model to
// the user, with no bypass: the limit minus what we committed is the
// ceiling, for root too. Fails on either model when the other's rule is used.
func TestHeadroomByModel(t *testing.T) {
	m, err := secretmem.ReadMemlock()
	require.NoError(t, err)
	if m.Unlimited {
		assert.Equal(t, ^uint64(0), secretmem.Headroom(secretmem.BackendLocked, 0))
	} else {
		assert.Equal(t, m.Headroom(), secretmem.Headroom(secretmem.BackendLocked, 0))
	}
	k := secretmem.Detect()
	var rl unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl))
	switch {
	case rl.Cur == unix.RLIM_INFINITY:
		assert.Equal(t, ^uint64(0), secretmem.Headroom(secretmem.BackendSecret, 4096))
	case k.Model == secretmem.ModelOld:
		assert.Equal(t, secretmem.Headroom(secretmem.BackendLocked, 0), secretmem.Headroom(secretmem.BackendSecret, 4096),
			"old model: the same account as mlock (%v)", k)
	default:
		assert.Equal(t, rl.Cur-4096, secretmem.Headroom(secretmem.BackendSecret, 4096),
			"new model: the limit less what we committed, no CAP_IPC_LOCK bypass (%v)", k)
	}
}

// TestCommitRefusalIsAnError makes the kernel refuse to commit (the pages
// are read-only, so the kernel-side write meets EFAULT, the same answer a
// memlock refusal gets on the new model): Commit must return an error, not
// raise a signal, and keep what it committed before. The new model calls it
// memlock; the old one charged the mapping at mmap, so it is not.
func TestCommitRefusalIsAnError(t *testing.T) {
	testutil.RequireSecretMem(t)
	r, err := secretmem.MapAt(nil, 64<<10, secretmem.PolicySecret)
	require.NoError(t, err)
	defer r.Close()
	pg := secretmem.PageSize()
	require.NoError(t, r.Commit(0, pg))
	require.NoError(t, unix.Mprotect(bytesOf(unsafe.Add(r.Base(), 2*pg), 2*pg), unix.PROT_READ))
	err = r.Commit(0, 8*pg)
	require.Error(t, err)
	require.ErrorIs(t, err, unix.EFAULT)
	if secretmem.Detect().Model == secretmem.ModelOld {
		require.NotErrorIs(t, err, secretmem.ErrMemlock)
		assert.Equal(t, secretmem.CauseMemory, secretmem.CauseOf(err))
	} else {
		require.ErrorIs(t, err, secretmem.ErrMemlock)
		assert.Equal(t, secretmem.CauseMemlock, secretmem.CauseOf(err))
	}
	assert.Equal(t, 2*pg, r.Committed(), "the OS page before the refusal was committed and is kept")
	// Control: the same commit over writable pages succeeds.
	require.NoError(t, unix.Mprotect(bytesOf(unsafe.Add(r.Base(), 2*pg), 2*pg), unix.PROT_READ|unix.PROT_WRITE))
	require.NoError(t, r.Commit(0, 8*pg))
	assert.Equal(t, 8*pg, r.Committed())
}
