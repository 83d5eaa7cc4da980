package secretmem

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is a page-aligned range of secret memory served by one backend.
// Commit, Wipe and Close may be called from several goroutines; the bytes
// themselves are the caller's to synchronise.
type Region struct {
	p        unsafe.Pointer // the mapping, as mmap returned it
	base     uintptr        // uintptr(p)
	size     uintptr
	backend  Backend
	fixed    bool  // mapped inside a Reservation: Close leaves PROT_NONE behind
	fallback error // why PolicyAuto fell back to BackendLocked; nil otherwise

	mu        sync.Mutex
	committed spans // committed OS-page ranges, offsets from base; guarded by mu
	lazy      bool  // CommitLazy: the whole region usable, OS pages fault in on touch; guarded by mu
	closed    bool  // guarded by mu
}

// testHookFD, set only by tests, sees each memfd_secret descriptor before it
// is closed (a test dups it to look at the file after the region is gone).
var testHookFD func(fd int)

// unsupported remembers the first ENOSYS/EPERM from memfd_secret: neither
// goes away while the process lives (a seccomp filter cannot be removed), so
// PolicyAuto goes straight to the locked backend afterwards.
var unsupported atomic.Pointer[ProbeError]

// MapAt moves [addr, addr+size) from Reserved to Mapped: it maps size bytes
// (rounded up to OS pages) of secret memory chosen by p and charges them to
// RLIMIT_MEMLOCK; no OS page is committed yet (see Commit).
//
// A non-nil addr must be OS-page aligned with the whole range inside a live
// Reservation (else EINVAL): the mapping replaces the guard there
// (MAP_FIXED). A nil addr lets the kernel choose.
//
// Errors: ErrUnsupported (a *ProbeError) when PolicySecret finds no
// memfd_secret (ENOSYS or EPERM: PolicyAuto falls back on exactly these);
// ErrMemlock (a *MemlockError) past RLIMIT_MEMLOCK; anything else wrapped
// with its errno. On error the range is left Reserved.
func MapAt(addr unsafe.Pointer, size uintptr, p Policy) (*Region, error) {
	if size == 0 {
		return nil, fmt.Errorf("secretmem: MapAt of 0 bytes: %w", unix.EINVAL)
	}
	size = roundUp(size, pageSize)
	if addr != nil {
		if uintptr(addr)%pageSize != 0 {
			return nil, fmt.Errorf("secretmem: MapAt address %p is not OS-page aligned: %w", addr, unix.EINVAL)
		}
		if !inReservation(addr, size) {
			return nil, fmt.Errorf("secretmem: MapAt [%p, +%d) is not inside a live Reservation: %w", addr, size, unix.EINVAL)
		}
	}
	switch p {
	case PolicySecret:
		return mapSecret(addr, size)
	case PolicyLocked:
		return mapLocked(addr, size, nil)
	case PolicyAuto:
		if pe := unsupported.Load(); pe != nil {
			return mapLocked(addr, size, pe)
		}
		r, err := mapSecret(addr, size)
		var pe *ProbeError
		if errors.As(err, &pe) {
			return mapLocked(addr, size, pe)
		}
		return r, err
	}
	return nil, fmt.Errorf("secretmem: unknown %v: %w", p, unix.EINVAL)
}

// mapSecret maps a memfd_secret file: create, size once, map shared, close.
func mapSecret(addr unsafe.Pointer, size uintptr) (*Region, error) {
	fd, err := unix.MemfdSecret(unix.O_CLOEXEC)
	if err != nil {
		en := errnoOf(err)
		if en == unix.ENOSYS || en == unix.EPERM {
			// Permanent for this process: the only cases PolicyAuto falls
			// back on. A transient failure (EMFILE, ENOMEM) is returned as it
			// is, not papered over with weaker memory.
			pe := newProbeError("memfd_secret", en, uint64(size))
			unsupported.CompareAndSwap(nil, pe)
			return nil, pe
		}
		return nil, fmt.Errorf("secretmem: memfd_secret: %w", err)
	}
	// The mapping keeps the file alive; the descriptor is not needed after mmap.
	defer unix.Close(fd)
	if testHookFD != nil {
		testHookFD(fd)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("secretmem: ftruncate of memfd_secret to %d bytes: %w", size, err)
	}
	flags := unix.MAP_SHARED // memfd_secret refuses MAP_PRIVATE (EINVAL)
	if addr != nil {
		flags |= unix.MAP_FIXED
	}
	p, err := unix.MmapPtr(fd, 0, addr, size, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, mapFailed(addr, size, BackendSecret, "mmap", err)
	}
	return &Region{p: p, base: uintptr(p), size: size, backend: BackendSecret, fixed: addr != nil}, nil
}

// mapLocked maps anonymous memory, locks it on fault and keeps it out of core
// dumps and forked children.
func mapLocked(addr unsafe.Pointer, size uintptr, fallback error) (*Region, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if addr != nil {
		flags |= unix.MAP_FIXED
	}
	p, err := unix.MmapPtr(-1, 0, addr, size, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, mapFailed(addr, size, BackendLocked, "mmap", err)
	}
	undo := func(op string, err error) error {
		if addr != nil {
			_ = guard(p, size)
		} else {
			_ = unix.MunmapPtr(p, size)
		}
		return mapFailedNoUndo(size, BackendLocked, op, err)
	}
	// MLOCK_ONFAULT charges the limit now but faults OS pages in only when
	// committed, like memfd_secret; plain mlock would populate everything.
	_, _, e := unix.Syscall(unix.SYS_MLOCK2, uintptr(p), size, unix.MLOCK_ONFAULT)
	if e == unix.EINVAL || e == unix.ENOSYS { // kernel < 4.4
		_, _, e = unix.Syscall(unix.SYS_MLOCK, uintptr(p), size, 0)
	}
	if e != 0 {
		return nil, undo("mlock2", e)
	}
	if err := madvise(p, size, unix.MADV_DONTDUMP); err != nil {
		return nil, undo("madvise(MADV_DONTDUMP)", err)
	}
	if err := madvise(p, size, unix.MADV_WIPEONFORK); err != nil {
		return nil, undo("madvise(MADV_WIPEONFORK)", err)
	}
	return &Region{p: p, base: uintptr(p), size: size, backend: BackendLocked, fixed: addr != nil, fallback: fallback}, nil
}

// mapFailed restores the guard after a failed MAP_FIXED (a failed mmap may
// already have unmapped what was there) and classifies the error.
func mapFailed(addr unsafe.Pointer, size uintptr, b Backend, op string, err error) error {
	if addr != nil {
		_ = guard(addr, size)
	}
	return mapFailedNoUndo(size, b, op, err)
}

func mapFailedNoUndo(size uintptr, b Backend, op string, err error) error {
	en := errnoOf(err)
	if en == unix.EAGAIN || (op == "mlock2" && en == unix.ENOMEM) || (b == BackendSecret && op == "mmap" && en == unix.ENOMEM) {
		return newMemlockError(op, b, size, en)
	}
	return fmt.Errorf("secretmem: %s of %d bytes (%s backend): %w", op, size, b, err)
}

// Base returns the region's first address.
func (r *Region) Base() unsafe.Pointer { return r.p }

// Size returns the region's length in bytes (a multiple of the OS page size).
func (r *Region) Size() uintptr { return r.size }

// Backend returns the backend that serves the region.
func (r *Region) Backend() Backend { return r.backend }

// FallbackReason returns why PolicyAuto served this region from the locked
// backend (a *ProbeError matching ErrUnsupported), or nil when it did not
// fall back.
func (r *Region) FallbackReason() error { return r.fallback }

// Committed returns how many bytes of the region are committed.
func (r *Region) Committed() uintptr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed.total()
}

// Commit moves the OS pages overlapping [off, off+n) from Mapped to
// Committed, so that touching them can no longer fault with SIGBUS. Already
// committed OS pages are skipped: their bytes never change. The secret backend
// commits with a kernel-side write into each OS page (a raw clock_gettime:
// no descriptor the host program could close), which the kernel answers with
// EFAULT (never a signal) when it refuses a page; the locked backend with
// MADV_POPULATE_WRITE. A memlock refusal (new model) returns an error
// matching ErrMemlock; the OS pages committed before it stay committed.
//
// Writing to an OS page before committing it is a bug: the write faults the
// page in (SIGBUS if the kernel refuses it) and a later Commit zeroes it.
func (r *Region) Commit(off, n uintptr) error {
	if n == 0 {
		return nil
	}
	if off >= r.size || n > r.size-off {
		return fmt.Errorf("secretmem: Commit [%d, +%d) outside region of %d bytes: %w", off, n, r.size, unix.EINVAL)
	}
	lo, hi := off&^(pageSize-1), roundUp(off+n, pageSize)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("secretmem: Commit on a closed region: %w", unix.EINVAL)
	}
	for _, g := range r.committed.gaps(lo, hi) {
		done, err := r.commitRun(g.lo, g.hi-g.lo)
		if done > 0 {
			r.committed.add(g.lo, g.lo+done)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commitRun commits [off, off+n) and returns how many bytes (whole OS pages)
// it committed before an error.
func (r *Region) commitRun(off, n uintptr) (uintptr, error) {
	p := unsafe.Add(r.p, off)
	if r.backend == BackendLocked {
		err := madvise(p, n, unix.MADV_POPULATE_WRITE)
		switch {
		case err == nil:
			return n, nil
		case errnoOf(err) == unix.EINVAL: // kernel < 5.14: fall through to pread
		case errnoOf(err) == unix.ENOMEM || errnoOf(err) == unix.EFAULT:
			return 0, newMemlockError("commit", r.backend, n, errnoOf(err))
		default:
			return 0, fmt.Errorf("secretmem: committing %d bytes: %w", n, err)
		}
	}
	// A kernel-side write into each OS page, with no descriptor: the kernel
	// copies clock_gettime's result out with copy_to_user, which faults a
	// memfd_secret OS page in (on the new model: charges it) and turns a
	// refused fault into EFAULT where a user-space store would get SIGBUS.
	// The raw system call, not the vDSO (which writes from user space). The
	// 16 bytes are zeroed again at once. A /dev/zero descriptor kept for the
	// process's life was closed by daemons (close_range) and, reused, made
	// freshly committed memory hold an unrelated file's bytes. Per OS page
	// it costs the same within noise (~15 µs: the fault dominates).
	for done := uintptr(0); done < n; done += pageSize {
		ts := (*unix.Timespec)(unsafe.Add(p, done))
		if _, _, e := unix.Syscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(ts)), 0); e != 0 {
			return done, commitFailed(r.backend, n-done, e)
		}
		*ts = unix.Timespec{}
	}
	return n, nil
}

// commitFailed classifies a refused commit: EFAULT is the memlock refusal on
// the new model (the charge is taken at fault); on the old model the charge
// was taken at mmap and only memory can be short.
func commitFailed(b Backend, n uintptr, en unix.Errno) error {
	if en == unix.EFAULT && b == BackendSecret && Detect().Model != ModelOld {
		return newMemlockError("commit", b, n, en)
	}
	return fmt.Errorf("secretmem: commit of %d bytes (%s backend): %w", n, b, en)
}

// CommitLazy makes the whole region usable without faulting its OS pages
// in, where no fault can be refused for memlock (Kernel.FaultsGuaranteed:
// the old model charged the mapping at mmap; the locked backend was charged
// by mlock2 at map time), and reports whether it did. Pages then fault in
// as the program touches them, and only those leave the direct map. On the
// new model it does nothing and returns false: the caller must Commit.
func (r *Region) CommitLazy() bool {
	if !Detect().FaultsGuaranteed(r.backend) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.lazy = true
	return true
}

// Lazy reports whether CommitLazy made the region usable.
func (r *Region) Lazy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lazy
}

// Wipe zeroes the committed OS pages of [off, off+n) (uncommitted ones read
// as zero when committed; touching them here would commit them). The region
// escapes to the kernel and to other goroutines through its address, so the
// compiler cannot prove the stores dead and never drops them.
func (r *Region) Wipe(off, n uintptr) {
	if n == 0 || off >= r.size {
		return
	}
	if n > r.size-off {
		n = r.size - off
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wipeLocked(off, off+n)
}

func (r *Region) wipeLocked(lo, hi uintptr) {
	if r.lazy {
		r.wipeResident(lo, hi)
		return
	}
	for _, s := range r.committed {
		a, b := max(s.lo, lo), min(s.hi, hi)
		if a < b {
			clear(unsafe.Slice((*byte)(unsafe.Add(r.p, a)), b-a))
		}
	}
}

// Close moves the region back to Reserved (inside a Reservation: wiped, then
// replaced by a PROT_NONE guard) or to None (unmapped). The memlock charge
// goes with the mapping. A second Close is a no-op.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	// memfd_secret pages are zeroed by the kernel on release, but locked
	// anonymous pages are freed as they are: wipe both, it costs little next
	// to faulting them in.
	r.wipeLocked(0, r.size)
	r.committed = nil
	if r.fixed {
		return guard(r.p, r.size)
	}
	if err := unix.MunmapPtr(r.p, r.size); err != nil {
		return fmt.Errorf("secretmem: unmapping region: %w", err)
	}
	return nil
}

// wipeResident zeroes the OS pages of [lo, hi) that are resident (mincore):
// touching the others would fault them in only to zero them.
func (r *Region) wipeResident(lo, hi uintptr) {
	lo &^= pageSize - 1
	var vec [512]byte
	for lo < hi {
		pages := min((hi-lo+pageSize-1)/pageSize, uintptr(len(vec)))
		_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Add(r.p, lo)), pages*pageSize, uintptr(unsafe.Pointer(&vec[0])))
		for i := uintptr(0); i < pages; i++ {
			if e != 0 || vec[i]&1 != 0 {
				a := lo + i*pageSize
				clear(unsafe.Slice((*byte)(unsafe.Add(r.p, a)), min(pageSize, hi-a)))
			}
		}
		lo += pages * pageSize
	}
}

func madvise(p unsafe.Pointer, n uintptr, advice int) error {
	_, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(p), n, uintptr(advice))
	if e != 0 {
		return e
	}
	return nil
}

// errnoOf extracts the errno from err, or 0.
func errnoOf(err error) unix.Errno {
	var en unix.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

// span is a half-open range of offsets [lo, hi).
type span struct{ lo, hi uintptr }

// spans is a sorted set of disjoint, non-adjacent spans. Committing grows a
// region from its start in practice, so the set stays one span long.
type spans []span

func (s spans) total() uintptr {
	var t uintptr
	for _, x := range s {
		t += x.hi - x.lo
	}
	return t
}

// gaps returns the parts of [lo, hi) not covered by s.
func (s spans) gaps(lo, hi uintptr) []span {
	var out []span
	for _, x := range s {
		if x.hi <= lo {
			continue
		}
		if x.lo >= hi {
			break
		}
		if x.lo > lo {
			out = append(out, span{lo, x.lo})
		}
		lo = max(lo, x.hi)
	}
	if lo < hi {
		out = append(out, span{lo, hi})
	}
	return out
}

// add inserts [lo, hi), merging with overlapping or adjacent spans.
func (s *spans) add(lo, hi uintptr) {
	out := make(spans, 0, len(*s)+1)
	placed := false
	for _, x := range *s {
		switch {
		case x.hi < lo:
			out = append(out, x)
		case x.lo > hi:
			if !placed {
				out = append(out, span{lo, hi})
				placed = true
			}
			out = append(out, x)
		default:
			lo, hi = min(lo, x.lo), max(hi, x.hi)
		}
	}
	if !placed {
		out = append(out, span{lo, hi})
	}
	*s = out
}
