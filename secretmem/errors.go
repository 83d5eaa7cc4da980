package secretmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrUnsupported reports that memfd_secret(2) is unavailable: the kernel
// returned ENOSYS (too old, CONFIG_SECRETMEM=n, or secretmem.enable=0) or
// EPERM (a seccomp filter). Errors that match it also match the errno with
// errors.Is.
var ErrUnsupported = errors.New("secretmem: memfd_secret unavailable")

// ErrMemlock reports that the kernel refused memory past RLIMIT_MEMLOCK:
// EAGAIN from mmap of a memfd_secret region, ENOMEM from mlock2, or EFAULT
// while committing OS pages. Errors that match it are *MemlockError values
// that also match the errno.
var ErrMemlock = errors.New("secretmem: RLIMIT_MEMLOCK exceeded")

// memlockFix is the advice every memlock error carries.
const memlockFix = "raise RLIMIT_MEMLOCK: `ulimit -l <KiB>` in the shell, LimitMEMLOCK= in a systemd unit, " +
	"or `docker run --ulimit memlock=<bytes>:<bytes>`; or set SECRETHEAP_LIMIT below it"

// ProbeError says why memfd_secret does not work here and what to do. It
// matches ErrUnsupported (ENOSYS, EPERM and other failures of the call) or
// ErrMemlock (EAGAIN or ENOMEM at mmap, EFAULT at first touch), and its Errno,
// with errors.Is.
type ProbeError struct {
	Errno  unix.Errno // the errno the kernel returned
	Op     string     // the call that failed: memfd_secret, ftruncate, mmap or commit
	Reason string     // what is wrong, in words
	Fix    string     // what to do about it
	kind   error      // ErrUnsupported or ErrMemlock
}

// Error returns one line: the failed call, the errno name, the reason and the fix.
func (e *ProbeError) Error() string {
	return fmt.Sprintf("secretmem: memfd_secret unavailable: %s failed with %s: %s; %s",
		e.Op, unix.ErrnoName(e.Errno), e.Reason, e.Fix)
}

// Unwrap returns the sentinel (ErrUnsupported or ErrMemlock) and the errno,
// so errors.Is matches both.
func (e *ProbeError) Unwrap() []error { return []error{e.kind, e.Errno} }

// newProbeError classifies a failure of op with errno en.
func newProbeError(op string, en unix.Errno, asked uint64) *ProbeError {
	e := &ProbeError{Errno: en, Op: op, kind: ErrUnsupported}
	switch {
	case op == "memfd_secret" && en == unix.ENOSYS:
		e.Reason = "the kernel has no memfd_secret: older than 5.14, built with CONFIG_SECRETMEM=n, " +
			"or booted with secretmem.enable=0 (the default before 6.5)"
		e.Fix = "boot with secretmem.enable=1 on a kernel ≥ 5.14 built with CONFIG_SECRETMEM=y, " +
			"or use SECRETHEAP_BACKEND=locked"
	case op == "memfd_secret" && en == unix.EPERM:
		e.Reason = "a seccomp filter forbids the memfd_secret syscall (447), e.g. Docker's default profile"
		e.Fix = "run with a seccomp profile that allows memfd_secret (docker run --security-opt seccomp=<profile>), " +
			"or use SECRETHEAP_BACKEND=locked"
	case en == unix.EAGAIN || (en == unix.ENOMEM && op == "mmap") || (en == unix.EFAULT && op == "commit"):
		e.kind = ErrMemlock
		m, _ := ReadMemlock()
		e.Reason = fmt.Sprintf("RLIMIT_MEMLOCK refuses the memory (%s; asked %d B)", m, asked)
		e.Fix = memlockFix
	case en == unix.EMFILE || en == unix.ENFILE:
		e.Reason = "no file descriptor left for the memfd_secret file"
		e.Fix = "raise the open-files limit (`ulimit -n`) or close descriptors"
	default:
		e.Reason = "unexpected error"
		e.Fix = "report this with the kernel version (uname -r); SECRETHEAP_BACKEND=locked works around it"
	}
	return e
}

// MemlockError is a refusal past RLIMIT_MEMLOCK, with the numbers that explain
// it. It matches ErrMemlock and Errno with errors.Is.
type MemlockError struct {
	Op      string     // mmap, mlock2 or commit
	Backend Backend    // the backend that was refused
	Asked   uint64     // bytes asked for in the refused call
	Memlock Memlock    // the limit and what was locked when it was refused
	Errno   unix.Errno // EAGAIN (mmap), ENOMEM (mlock2) or EFAULT (commit)
}

// Error says what was asked, the limit, what was locked and how to raise it.
func (e *MemlockError) Error() string {
	return fmt.Sprintf("secretmem: %s of %d B (%s backend) refused by RLIMIT_MEMLOCK (%s): %s, asked %d B; %s",
		e.Op, e.Asked, e.Backend, unix.ErrnoName(e.Errno), e.Memlock, e.Asked, memlockFix)
}

// Unwrap returns ErrMemlock and the errno, so errors.Is matches both.
func (e *MemlockError) Unwrap() []error { return []error{ErrMemlock, e.Errno} }

func newMemlockError(op string, b Backend, asked uintptr, en unix.Errno) *MemlockError {
	m, _ := ReadMemlock() // best effort: the error is about the refusal, not the read
	return &MemlockError{Op: op, Backend: b, Asked: uint64(asked), Memlock: m, Errno: en}
}

// Cause names why secret memory was refused. The numbering matches the C
// API's SECRETHEAP_CAUSE_* constants and String the C stats' names.
type Cause uint8

const (
	CauseNone      Cause = iota // no failure
	CauseNoSupport              // memfd_secret ENOSYS: no kernel support (secretmem.enable=1 on Debian 12's 6.1)
	CauseDenied                 // EPERM/EACCES: a seccomp profile or an LSM denied the call
	CauseMemlock                // RLIMIT_MEMLOCK: EAGAIN at mmap (old model), EFAULT at commit (new model)
	CauseLimit                  // a configured limit (pmdcache Config.Limit, SECRETHEAP_LIMIT)
	CauseFDs                    // EMFILE/ENFILE: descriptor limit
	CauseMemory                 // ENOMEM: vm.max_map_count, address space or RAM
	CauseBadFD                  // EBADF
	CauseArena                  // the arena's address space is full
	CauseOther                  // any other error
)

var causeNames = [...]string{"none", "no-support", "denied", "memlock", "limit", "descriptors", "memory", "bad-fd", "arena", "other"}

// String returns the cause's short name ("memlock", "no-support", …).
func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// causer is implemented by errors that know their cause (pmdcache's
// ExhaustedError).
type causer interface{ Cause() Cause }

// CauseOf classifies an error from this package (or one wrapping it):
// CauseNone for nil, CauseOther when nothing is recognised.
func CauseOf(err error) Cause {
	if err == nil {
		return CauseNone
	}
	var c causer
	if errors.As(err, &c) {
		return c.Cause()
	}
	if errors.Is(err, ErrMemlock) {
		return CauseMemlock
	}
	var pe *ProbeError
	if errors.As(err, &pe) && pe.Op == "memfd_secret" && pe.Errno == unix.ENOSYS {
		return CauseNoSupport
	}
	switch errnoOf(err) {
	case unix.ENOSYS:
		return CauseNoSupport
	case unix.EPERM, unix.EACCES:
		return CauseDenied
	case unix.EMFILE, unix.ENFILE:
		return CauseFDs
	case unix.ENOMEM, unix.EFAULT:
		return CauseMemory
	case unix.EBADF:
		return CauseBadFD
	}
	return CauseOther
}
