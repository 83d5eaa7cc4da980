package secretmem

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
)

// Memlock is the process's RLIMIT_MEMLOCK account as /proc shows it (VmLck):
// what mlock'ed memory and, on the old model (see Model), memfd_secret
// regions are charged, for the whole mapping at map time. On the new model
// secret memory is charged to the user instead, and no file shows it: use
// Headroom, which knows the model.
type Memlock struct {
	Limit     uint64 // soft RLIMIT_MEMLOCK in bytes (meaningless when Unlimited)
	Locked    uint64 // bytes charged to the process now (VmLck in /proc/self/status)
	Unlimited bool   // RLIM_INFINITY, or CAP_IPC_LOCK in the effective set, which bypasses the limit for mlock and the old model
}

// capIPCLock is CAP_IPC_LOCK's bit in the capability sets.
const capIPCLock = 14

// ReadMemlock reads the limit with getrlimit(2) and the locked bytes and the
// effective capabilities from /proc/self/status.
func ReadMemlock() (Memlock, error) {
	var m Memlock
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return m, fmt.Errorf("secretmem: getrlimit(RLIMIT_MEMLOCK): %w", err)
	}
	m.Limit = rl.Cur
	m.Unlimited = rl.Cur == unix.RLIM_INFINITY
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m, fmt.Errorf("secretmem: reading locked memory: %w", err)
	}
	st := procfs.ParseStatus(status)
	if v, ok := st["VmLck"]; ok {
		// "VmLck:	    2048 kB"
		n, err := procfs.ParseKB(v)
		if err != nil {
			return m, fmt.Errorf("secretmem: parsing VmLck %q: %w", v, err)
		}
		m.Locked = n
	}
	if v, ok := st["CapEff"]; ok {
		has, err := procfs.HasCap(v, capIPCLock)
		if err != nil {
			return m, fmt.Errorf("secretmem: %w", err)
		}
		if has {
			m.Unlimited = true
		}
	}
	return m, nil
}

// Headroom returns how many more bytes the limit allows: Limit - Locked, 0 when
// Locked is at or past the limit, math.MaxUint64 when Unlimited.
func (m Memlock) Headroom() uint64 {
	if m.Unlimited {
		return math.MaxUint64
	}
	if m.Locked >= m.Limit {
		return 0
	}
	return m.Limit - m.Locked
}

// String gives "limit 65536 B, locked 4096 B" or "unlimited, locked 4096 B".
func (m Memlock) String() string {
	if m.Unlimited {
		return fmt.Sprintf("limit unlimited (RLIM_INFINITY or CAP_IPC_LOCK), locked %d B", m.Locked)
	}
	return fmt.Sprintf("limit %d B, locked %d B", m.Limit, m.Locked)
}
