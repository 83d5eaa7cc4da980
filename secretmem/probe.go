package secretmem

import (
	"errors"
	"fmt"
)

// Probe reports whether memfd_secret works here: it maps one OS page, commits
// it, and unmaps it. It returns nil, or a *ProbeError whose message says what
// is wrong and what to do; it matches ErrUnsupported (ENOSYS, EPERM, …) or
// ErrMemlock (no RLIMIT_MEMLOCK headroom for even one OS page), and the errno,
// with errors.Is. Probe does not cache its answer.
func Probe() error {
	r, err := mapSecret(nil, pageSize)
	if err != nil {
		return asProbeError("mmap", err)
	}
	cerr := r.Commit(0, pageSize)
	if err := r.Close(); err != nil && cerr == nil {
		cerr = err
	}
	if cerr != nil {
		return asProbeError("commit", cerr)
	}
	return nil
}

// asProbeError turns a mapping error into a *ProbeError.
func asProbeError(op string, err error) error {
	var pe *ProbeError
	if errors.As(err, &pe) {
		return pe
	}
	var me *MemlockError
	if errors.As(err, &me) {
		return newProbeError(me.Op, me.Errno, me.Asked)
	}
	if en := errnoOf(err); en != 0 {
		return newProbeError(op, en, uint64(pageSize))
	}
	return fmt.Errorf("secretmem: probe: %w", err)
}
