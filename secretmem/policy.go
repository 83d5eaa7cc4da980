package secretmem

import (
	"fmt"
	"strings"
)

// Backend names the kind of memory that serves a Region. The numbering
// matches the C API's SECRETHEAP_BACKEND_* constants.
type Backend uint8

const (
	// BackendNone is the zero Backend: no region, or not ours.
	BackendNone Backend = iota
	// BackendSecret is memory from memfd_secret(2): out of the kernel direct
	// map, unreadable by other processes.
	BackendSecret
	// BackendLocked is anonymous memory locked with mlock2(2) and marked
	// MADV_DONTDUMP and MADV_WIPEONFORK: never swapped, not in core dumps, but
	// still in the direct map. The fallback when memfd_secret is unavailable.
	BackendLocked
)

// String returns "none", "secret" or "locked".
func (b Backend) String() string {
	switch b {
	case BackendNone:
		return "none"
	case BackendSecret:
		return "secret"
	case BackendLocked:
		return "locked"
	}
	return fmt.Sprintf("Backend(%d)", uint8(b))
}

// Policy chooses the backend MapAt uses.
type Policy uint8

const (
	// PolicyAuto (the default) uses memfd_secret and falls back to the locked
	// backend when memfd_secret is unavailable (ENOSYS or EPERM). The region
	// reports the backend that served it and, after a fallback, the reason.
	PolicyAuto Policy = iota
	// PolicySecret uses memfd_secret only and fails with ErrUnsupported where
	// it is unavailable.
	PolicySecret
	// PolicyLocked uses the locked backend only.
	PolicyLocked
)

// String returns "auto", "secret" or "locked": the values ParsePolicy accepts.
func (p Policy) String() string {
	switch p {
	case PolicyAuto:
		return "auto"
	case PolicySecret:
		return "secret"
	case PolicyLocked:
		return "locked"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy parses "auto", "secret" or "locked" (case and surrounding
// spaces ignored; "" means auto, the default).
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return PolicyAuto, nil
	case "secret":
		return PolicySecret, nil
	case "locked":
		return PolicyLocked, nil
	}
	return 0, fmt.Errorf("secretmem: invalid backend policy %q: want auto, secret or locked", s)
}
