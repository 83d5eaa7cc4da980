package secretmem

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"golang.org/x/sys/unix"
)

// Model is the way the running kernel charges memfd_secret memory against
// RLIMIT_MEMLOCK. It is detected from the kernel's behaviour (Detect), never
// from its version: distributions backport the change. The numbering
// matches the C API's SECRETHEAP_MODEL_* constants.
type Model uint8

const (
	// ModelUnknown: memfd_secret is unavailable, or the probe could not tell
	// (under mlockall(MCL_FUTURE) every mapping is locked). Treated as
	// ModelNew, the stricter rules.
	ModelUnknown Model = iota
	// ModelOld: the mapping is VM_LOCKED and charged to the process for its
	// whole length at mmap (VmLck shows it); mmap fails with EAGAIN past
	// RLIMIT_MEMLOCK; CAP_IPC_LOCK bypasses the limit.
	ModelOld
	// ModelNew ("mm/secretmem: properly account locked pages", mainline
	// 97d34aa65c29, in Debian 12's 6.1.192 and 6.12 kernels): mmap always
	// succeeds; each OS page is charged at its first fault to the user (every
	// process of the uid shares one budget) against RLIMIT_MEMLOCK, with no
	// CAP_IPC_LOCK bypass; a refused fault is SIGBUS for a user-space touch
	// and EFAULT for a kernel-side write (Commit); VmLck does not show it.
	ModelNew
)

// String returns "unknown", "old" or "new".
func (m Model) String() string {
	switch m {
	case ModelUnknown:
		return "unknown"
	case ModelOld:
		return "old"
	case ModelNew:
		return "new"
	}
	return fmt.Sprintf("Model(%d)", uint8(m))
}

// Kernel is what the running kernel gives: whether memfd_secret works, the
// accounting model, and the limit.
type Kernel struct {
	Model Model
	// Unavailable is why memfd_secret cannot be used (a *ProbeError matching
	// ErrUnsupported: ENOSYS, or EPERM from a seccomp filter), nil if it can.
	Unavailable error
	// MemlockLimit is the soft RLIMIT_MEMLOCK in bytes at detection,
	// math.MaxUint64 for RLIM_INFINITY.
	MemlockLimit uint64
	// CapIPCLock reports CAP_IPC_LOCK in the effective set. It lifts the
	// limit on the old model and for the locked backend, never on the new one.
	CapIPCLock bool
}

// Bypass reports whether the limit does not apply to secret memory: the
// old model with CAP_IPC_LOCK.
func (k Kernel) Bypass() bool { return k.Model == ModelOld && k.CapIPCLock }

// Shared reports whether the budget is the user's, shared with every other
// process of the uid and unreadable from user space (the new model): the
// limit is then a ceiling, and a refused Commit is the truth.
func (k Kernel) Shared() bool { return k.Unavailable == nil && k.Model != ModelOld }

// FaultsGuaranteed reports whether an OS page of a mapped region of backend b
// can be touched without Commit and without risk of a memlock SIGBUS: the
// old model charged the whole mapping at mmap; the locked backend is charged
// by mlock2(MLOCK_ONFAULT) at map time. On the new model only Commit may
// fault pages in.
func (k Kernel) FaultsGuaranteed(b Backend) bool {
	return b == BackendLocked || (b == BackendSecret && k.Model == ModelOld)
}

var detected struct {
	once sync.Once
	k    Kernel
}

// Detect returns what the kernel gives, probed once per process: one OS
// page of memfd_secret is mapped (never touched, so nothing is charged on
// the new model) and asked madvise(MADV_COLD). The old model makes the
// mapping VM_LOCKED (mm/secretmem.c), and MADV_COLD refuses VM_LOCKED
// mappings with EINVAL while it is a no-op on an empty unlocked one: one
// system call, no /proc, no version string. EAGAIN from that mmap is the
// old model too (only it checks the limit at mmap). Under mlockall(MCL_FUTURE)
// an anonymous page is locked as well and the answer is ModelUnknown.
func Detect() Kernel {
	detected.once.Do(func() { detected.k = probeKernel() })
	return detected.k
}

func probeKernel() Kernel {
	var k Kernel
	var rl unix.Rlimit
	k.MemlockLimit = math.MaxUint64
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		k.MemlockLimit = rl.Cur
	}
	k.CapIPCLock = hasIPCLock()
	r, err := mapSecret(nil, pageSize)
	if err != nil {
		var pe *ProbeError
		switch {
		case errors.As(err, &pe):
			k.Unavailable = pe
		case errors.Is(err, ErrMemlock):
			k.Model = ModelOld
		}
		return k
	}
	secretLocked := madvise(r.p, pageSize, unix.MADV_COLD) == unix.EINVAL
	_ = r.Close()
	if !secretLocked {
		k.Model = ModelNew
		return k
	}
	a, err := unix.MmapPtr(-1, 0, nil, pageSize, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		k.Model = ModelOld
		return k
	}
	anonLocked := madvise(a, pageSize, unix.MADV_COLD) == unix.EINVAL
	_ = unix.MunmapPtr(a, pageSize)
	if !anonLocked {
		k.Model = ModelOld
	}
	return k
}

// hasIPCLock reports CAP_IPC_LOCK in the effective set (one capget).
func hasIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return unix.Capget(&hdr, &data[0]) == nil && data[0].Effective&(1<<capIPCLock) != 0
}

// NextBackend returns the backend MapAt would use for policy p now.
func NextBackend(p Policy) Backend {
	switch {
	case p == PolicyLocked:
		return BackendLocked
	case p == PolicyAuto && unsupported.Load() != nil:
		return BackendLocked
	}
	return BackendSecret
}

// Headroom returns how many more bytes a region of backend b may be
// charged under RLIMIT_MEMLOCK, math.MaxUint64 when unlimited. ownSecret is
// what the caller has committed of secret memory: on the new model no file
// shows the charge, so the limit minus it is a ceiling (other processes of
// the user may hold the rest). On the old model and for the locked backend
// it is the limit minus VmLck, and CAP_IPC_LOCK lifts it. Reading VmLck costs
// 30–100 µs here; the other cases cost no /proc read.
func Headroom(b Backend, ownSecret uint64) uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return math.MaxUint64
	}
	if b == BackendSecret && Detect().Model != ModelOld {
		if ownSecret >= rl.Cur {
			return 0
		}
		return rl.Cur - ownSecret
	}
	if hasIPCLock() {
		return math.MaxUint64
	}
	m, err := ReadMemlock()
	if err != nil {
		return math.MaxUint64
	}
	return m.Headroom()
}
