package main

// What the subcommands judge from the /proc files that internal/procfs
// reads and parses, and how they print sizes.

import (
	"fmt"
	"math"

	"github.com/secretheap/secretheap/internal/procfs"
)

// isLocked reports whether the mapping looks like secretheap's locked
// backend: anonymous, mlocked and left out of core dumps (VmFlags lo, dd).
// The Go backend also sets wipe-on-fork (wf); the C library does not under
// SECRETHEAP_FORK=copy, and mlocks only the OS pages it has committed, so
// only those show. Another locked heap (OpenSSL's own secure heap) looks the
// same, which is why inspect words it as it does.
func isLocked(m procfs.Mapping) bool {
	return m.Path == "" && m.HasFlag("lo") && m.HasFlag("dd")
}

// formatBytes prints a byte count the way the kernel's limits are usually
// written: exact KiB/MiB/GiB when it divides, else one decimal.
func formatBytes(n uint64) string {
	const (
		ki = 1 << 10
		mi = 1 << 20
		gi = 1 << 30
	)
	switch {
	case n == math.MaxUint64:
		return "unlimited"
	case n >= gi:
		return trimUnit(float64(n)/gi, n%gi == 0, "GiB")
	case n >= mi:
		return trimUnit(float64(n)/mi, n%mi == 0, "MiB")
	case n >= ki:
		return trimUnit(float64(n)/ki, n%ki == 0, "KiB")
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func trimUnit(v float64, exact bool, unit string) string {
	if exact {
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
