package secretmem_test

import (
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// smapsOf returns the VmFlags of the mapping holding addr and VmLck in KiB.
func smapsOf(t *testing.T, addr uintptr) (flags string, vmlck int) {
	maps, err := procfs.Smaps(0)
	require.NoError(t, err)
	if m, ok := procfs.MappingAt(maps, uint64(addr)); ok {
		flags = "VmFlags: " + strings.Join(m.VmFlags, " ")
	}
	st, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	lck, err := procfs.StatusKB(st, "VmLck")
	require.NoError(t, err)
	return flags, int(lck >> 10)
}

// TestDetectMatchesKernel: the model Detect reads off MADV_COLD is what smaps
// and VmLck show for a fresh secret mapping: VM_LOCKED ("lo") and charged at
// mmap on the old model, neither on the new one.
func TestDetectMatchesKernel(t *testing.T) {
	testutil.RequireSecretMem(t)
	k := secretmem.Detect()
	require.Nil(t, k.Unavailable)
	_, before := smapsOf(t, 0)
	r, err := secretmem.MapAt(nil, 64<<10, secretmem.PolicySecret)
	require.NoError(t, err)
	defer r.Close()
	flags, after := smapsOf(t, uintptr(r.Base()))
	locked := strings.Contains(flags+" ", " lo ")
	t.Logf("model %v, %s, VmLck %d -> %d KiB", k.Model, flags, before, after)
	if locked {
		assert.Equal(t, secretmem.ModelOld, k.Model)
		assert.GreaterOrEqual(t, after-before, 64)
	} else {
		assert.Equal(t, secretmem.ModelNew, k.Model)
		assert.Less(t, after-before, 64)
	}
	assert.Equal(t, k.Model != secretmem.ModelOld, k.Shared())
	assert.Equal(t, k.Model == secretmem.ModelOld && os.Geteuid() == 0, k.Bypass())
}

// TestCommitNeedsNoDescriptor: with every descriptor number taken (the
// state a daemon's fd juggling can leave), Commit still works: it keeps and
// opens no descriptor (the /dev/zero descriptor it opened on first use
// failed here with EMFILE, and a kept one could be closed or replaced by
// the host program).
func TestCommitNeedsNoDescriptor(t *testing.T) {
	testutil.RequireSecretMem(t)
	if testutil.InChild(t) {
		r, err := secretmem.MapAt(nil, 1<<20, secretmem.PolicySecret)
		require.NoError(t, err)
		// The runtime's poller needs descriptors of its own: start it now.
		pr, pw, err := os.Pipe()
		require.NoError(t, err)
		defer pr.Close()
		defer pw.Close()
		var rl unix.Rlimit
		require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
		rl.Cur = 64
		require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &rl))
		for {
			if _, err := unix.Open("/dev/null", unix.O_RDONLY, 0); err != nil {
				require.ErrorIs(t, err, unix.EMFILE)
				break
			}
		}
		require.NoError(t, r.Commit(0, 1<<20))
		b := unsafe.Slice((*byte)(r.Base()), 1<<20)
		for i, c := range b {
			require.Zero(t, c, "byte %d", i)
		}
		require.NoError(t, r.Close())
		return
	}
	res := testutil.RunChild(t, testutil.ChildOptions{})
	require.True(t, res.Clean(), res.Output)
}

// TestCauseOf names each errno the source layer can meet.
func TestCauseOf(t *testing.T) {
	for en, want := range map[unix.Errno]secretmem.Cause{
		unix.ENOSYS: secretmem.CauseNoSupport, unix.EPERM: secretmem.CauseDenied, unix.EACCES: secretmem.CauseDenied,
		unix.EMFILE: secretmem.CauseFDs, unix.ENFILE: secretmem.CauseFDs, unix.ENOMEM: secretmem.CauseMemory,
		unix.EBADF: secretmem.CauseBadFD, unix.EINVAL: secretmem.CauseOther,
	} {
		assert.Equal(t, want, secretmem.CauseOf(en), "%v", en)
	}
	assert.Equal(t, secretmem.CauseNone, secretmem.CauseOf(nil))
	assert.Equal(t, secretmem.CauseMemlock, secretmem.CauseOf(secretmem.ErrMemlock))
	assert.Equal(t, "memlock", secretmem.CauseMemlock.String())
}
