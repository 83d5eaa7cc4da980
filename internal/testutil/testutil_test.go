package testutil_test

import (
	"os"
	"syscall"
	"testing"

	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.CleanupShared()
	os.Exit(code)
}

// TestChildOptions checks that each option takes effect in the child, with
// a control child that has none of them.
func TestChildOptions(t *testing.T) {
	type state struct {
		UID, GID    int
		Memlock     uint64
		MemfdSecret string
		MemfdCreate string
		NoNewPrivs  int
	}
	for _, tc := range []struct {
		name string
		opts testutil.ChildOptions
		want func(t *testing.T, s state)
	}{
		{"nobody-64K-ENOSYS", testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: 64 << 10, BlockMemfdSecret: unix.ENOSYS},
			func(t *testing.T, s state) {
				assert.Equal(t, testutil.Nobody, s.UID)
				assert.Equal(t, testutil.Nobody, s.GID)
				assert.Equal(t, uint64(64<<10), s.Memlock)
				assert.Equal(t, "ENOSYS", s.MemfdSecret)
				assert.Equal(t, "", s.MemfdCreate, "other syscalls still work")
				assert.Equal(t, 1, s.NoNewPrivs)
			}},
		{"EPERM", testutil.ChildOptions{BlockMemfdSecret: unix.EPERM},
			func(t *testing.T, s state) {
				assert.Equal(t, os.Getuid(), s.UID, "the parent's uid")
				assert.Equal(t, "EPERM", s.MemfdSecret)
			}},
		{"control", testutil.ChildOptions{},
			func(t *testing.T, s state) {
				assert.Equal(t, os.Getuid(), s.UID, "the parent's uid")
				var rl unix.Rlimit
				require.NoError(t, unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl))
				assert.Equal(t, rl.Cur, s.Memlock, "inherited")
				assert.Equal(t, "", s.MemfdSecret)
				assert.Equal(t, 0, s.NoNewPrivs)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				var s state
				s.UID, s.GID = os.Getuid(), os.Getgid()
				var rl unix.Rlimit
				require.NoError(t, unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl))
				s.Memlock = rl.Cur
				if fd, err := unix.MemfdSecret(unix.O_CLOEXEC); err != nil {
					s.MemfdSecret = unix.ErrnoName(err.(syscall.Errno))
				} else {
					unix.Close(fd)
				}
				if fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC); err != nil {
					s.MemfdCreate = err.Error()
				} else {
					unix.Close(fd)
				}
				s.NoNewPrivs, _ = unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
				testutil.Report("state", s)
				return
			}
			// Checked here, not before InChild: the child itself is not root.
			if tc.opts.Nobody && os.Geteuid() != 0 {
				t.Skip("starting a child as uid 65534 needs root")
			}
			res := testutil.RunChild(t, tc.opts)
			require.True(t, res.Clean(), res.Output)
			var s state
			require.True(t, res.Report("state", &s), res.Output)
			tc.want(t, s)
		})
	}
}

// TestChildDeaths checks that RunChild tells a clean exit from a failed test,
// a Go runtime crash on a fault, and a death by signal — the distinctions
// "never a signal" assertions rest on.
func TestChildDeaths(t *testing.T) {
	for _, tc := range []struct {
		name  string
		die   func(t *testing.T)
		check func(t *testing.T, r testutil.ChildResult)
	}{
		{"clean", func(t *testing.T) {}, func(t *testing.T, r testutil.ChildResult) {
			assert.True(t, r.Clean())
			assert.Zero(t, r.ExitCode)
		}},
		{"fail", func(t *testing.T) { t.Fatal("failing on purpose") }, func(t *testing.T, r testutil.ChildResult) {
			assert.False(t, r.Clean())
			assert.Equal(t, 1, r.ExitCode)
			assert.Zero(t, r.Signal)
			assert.Empty(t, r.FatalSignal)
		}},
		{"fault", func(t *testing.T) {
			p, err := unix.MmapPtr(-1, 0, nil, 4096, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			require.NoError(t, err)
			*(*byte)(p) = 1 // SIGSEGV: the Go runtime crashes with exit 2
		}, func(t *testing.T, r testutil.ChildResult) {
			assert.False(t, r.Clean())
			assert.Equal(t, "SIGSEGV", r.FatalSignal)
			assert.Equal(t, 2, r.ExitCode)
		}},
		{"killed", func(t *testing.T) {
			_ = unix.Kill(os.Getpid(), unix.SIGKILL)
			select {}
		}, func(t *testing.T, r testutil.ChildResult) {
			assert.False(t, r.Clean())
			assert.Equal(t, syscall.SIGKILL, r.Signal)
			assert.Equal(t, -1, r.ExitCode)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				tc.die(t)
				return
			}
			tc.check(t, testutil.RunChild(t, testutil.ChildOptions{}))
		})
	}
}

// TestRequireSecretMem runs the helper where memfd_secret is blocked: it
// skips, or fails with SECRETHEAP_REQUIRE=1; the control child has
// memfd_secret and runs on.
func TestRequireSecretMem(t *testing.T) {
	for _, tc := range []struct {
		name    string
		block   syscall.Errno
		require string
		want    string
	}{
		{"skip", unix.ENOSYS, "", "--- SKIP"},
		{"require", unix.ENOSYS, "1", "--- FAIL"},
		{"control", 0, "1", "body ran"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				testutil.RequireSecretMem(t)
				t.Log("body ran")
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{BlockMemfdSecret: tc.block,
				Env: []string{testutil.RequireEnv + "=" + tc.require}})
			assert.Contains(t, res.Output, tc.want)
			if tc.block != 0 {
				assert.Contains(t, res.Output, "memfd_secret unavailable")
				assert.NotContains(t, res.Output, "body ran")
			}
			assert.Equal(t, tc.require == "1" && tc.block != 0, res.ExitCode != 0, res.Output)
		})
	}
}
