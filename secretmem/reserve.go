package secretmem

import (
	"fmt"
	"math"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
)

// pageSize is the OS page size (4 KiB on x86_64).
var pageSize = uintptr(os.Getpagesize())

// PageSize returns the OS page size: the unit of Commit and of region sizes.
func PageSize() uintptr { return pageSize }

// Reservation is a range of address space mapped PROT_NONE with MAP_NORESERVE:
// it costs no memory and no RLIMIT_MEMLOCK. Regions are mapped inside it with
// MapAt, and whatever is not mapped stays an inaccessible guard.
type Reservation struct {
	p          unsafe.Pointer // the first address, derived from mmap's pointer
	base, size uintptr
	mu         sync.Mutex // guards released
	released   bool
}

// reservations lists the live reservations so MapAt can refuse a MAP_FIXED
// mapping that would clobber memory it does not own.
var reservations struct {
	mu   sync.Mutex
	list []*Reservation // guarded by mu
}

// Reserve moves [addr, addr+size) from None to Reserved: it maps size bytes
// (rounded up to OS pages) PROT_NONE, aligned to align (a power of two; 0 or
// less than an OS page means OS-page aligned).
func Reserve(size, align uintptr) (*Reservation, error) {
	if size == 0 {
		return nil, fmt.Errorf("secretmem: Reserve of 0 bytes: %w", unix.EINVAL)
	}
	if align < pageSize {
		align = pageSize
	}
	if align&(align-1) != 0 {
		return nil, fmt.Errorf("secretmem: Reserve alignment %d is not a power of two: %w", align, unix.EINVAL)
	}
	size = roundUp(size, pageSize)
	// Over-map by align and trim both ends: mmap only promises OS-page alignment.
	total := size + align - pageSize
	if total < size {
		return nil, fmt.Errorf("secretmem: Reserve of %d bytes aligned to %d overflows: %w", size, align, unix.EINVAL)
	}
	p, err := unix.MmapPtr(-1, 0, nil, total, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("secretmem: reserving %d bytes of address space: %w", total, err)
	}
	start := uintptr(p)
	base := roundUp(start, align)
	head := base - start
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			return nil, fmt.Errorf("secretmem: trimming reservation: %w", err)
		}
	}
	if tail := total - head - size; tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(p, head+size), tail); err != nil {
			return nil, fmt.Errorf("secretmem: trimming reservation: %w", err)
		}
	}
	// Without MADV_DONTDUMP a core dump writer that copies PROT_NONE ranges
	// (gdb's gcore does: it writes zeros for them) would emit the whole
	// reservation — 64 GiB for pmdcache's arena.
	if err := madvise(unsafe.Add(p, head), size, unix.MADV_DONTDUMP); err != nil {
		_ = unix.MunmapPtr(unsafe.Add(p, head), size)
		return nil, fmt.Errorf("secretmem: madvise(MADV_DONTDUMP) on reservation: %w", err)
	}
	r := &Reservation{p: unsafe.Add(p, head), base: base, size: size}
	reservations.mu.Lock()
	reservations.list = append(reservations.list, r)
	reservations.mu.Unlock()
	return r, nil
}

// Base returns the first address of the reservation (aligned as asked).
func (r *Reservation) Base() unsafe.Pointer { return r.p }

// Size returns the reservation's length in bytes.
func (r *Reservation) Size() uintptr { return r.size }

// Contains reports whether [addr, addr+size) lies inside the reservation.
func (r *Reservation) Contains(addr unsafe.Pointer, size uintptr) bool {
	a := uintptr(addr)
	return a >= r.base && size <= r.size && a-r.base <= r.size-size
}

// Release moves the whole range back to None: it unmaps the reservation and
// every region still mapped inside it (close those first: Release does not
// wipe them). A second Release is a no-op.
func (r *Reservation) Release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return nil
	}
	reservations.mu.Lock()
	for i, x := range reservations.list {
		if x == r {
			reservations.list = append(reservations.list[:i], reservations.list[i+1:]...)
			break
		}
	}
	reservations.mu.Unlock()
	r.released = true
	if err := unix.MunmapPtr(r.p, r.size); err != nil {
		return fmt.Errorf("secretmem: releasing reservation: %w", err)
	}
	return nil
}

// inReservation reports whether [addr, addr+size) lies in a live reservation.
func inReservation(addr unsafe.Pointer, size uintptr) bool {
	reservations.mu.Lock()
	defer reservations.mu.Unlock()
	for _, r := range reservations.list {
		if r.Contains(addr, size) {
			return true
		}
	}
	return false
}

// guard moves [addr, addr+size) back to Reserved: a fresh PROT_NONE,
// MAP_NORESERVE anonymous mapping replaces whatever was there (and with it the
// memlock charge), so no other mmap can land in the hole.
func guard(addr unsafe.Pointer, size uintptr) error {
	_, err := unix.MmapPtr(-1, 0, addr, size, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED)
	if err != nil {
		return fmt.Errorf("secretmem: restoring guard at %p: %w", addr, err)
	}
	// The fresh mapping lost the reservation's MADV_DONTDUMP (see Reserve).
	if err := madvise(addr, size, unix.MADV_DONTDUMP); err != nil {
		return fmt.Errorf("secretmem: madvise(MADV_DONTDUMP) on guard at %p: %w", addr, err)
	}
	return nil
}

func roundUp(n, to uintptr) uintptr { return (n + to - 1) &^ (to - 1) }

// Every pointer handed out is derived from the pointer mmap returned, never
// rebuilt from a uintptr: besides keeping vet and checkptr quiet, go1.26.8's
// compiler crashes (ICE in isInlinableMemmove/disjointTypes) compiling a
// copy(dst, "const") whose dst comes from unsafe.Add(nil, addr).

// AddressSpaceRoom returns the address space left under RLIMIT_AS (the
// limit less VmSize), math.MaxUint64 when RLIMIT_AS is unlimited.
// Reservations are address space the program may need too: pmdcache sizes
// its arena from this.
func AddressSpaceRoom() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return math.MaxUint64
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return rl.Cur
	}
	if size, err := procfs.StatusKB(status, "VmSize"); err == nil {
		if size < rl.Cur {
			return rl.Cur - size
		}
		return 0
	}
	return rl.Cur
}
