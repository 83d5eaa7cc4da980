// Package benchgo holds the Go benchmarks that alloc/bench_test.go does not:
// one memfd_secret file per allocation (the naive way to get secret memory),
// Secret creation and Wrap, and memguard under RunParallel and churn. Its
// results are collected by cmd/benchreport together with alloc's.
package benchgo

import (
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/procfs"
)

const osPage = 4096

// memfdBlock is one allocation of the naive allocator: its own memfd_secret
// file, mapped whole.
type memfdBlock struct {
	p    unsafe.Pointer
	size uintptr
}

// memfdAlloc maps a memfd_secret file of n bytes rounded up to OS pages and
// touches every OS page, so that the cost of faulting it in (removal from
// the direct map) is paid here as a real user would pay it.
func memfdAlloc(n int) (memfdBlock, error) {
	size := (uintptr(n) + osPage - 1) &^ (osPage - 1)
	fd, err := unix.MemfdSecret(unix.O_CLOEXEC)
	if err != nil {
		return memfdBlock{}, fmt.Errorf("memfd_secret: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return memfdBlock{}, fmt.Errorf("ftruncate: %w", err)
	}
	p, err := unix.MmapPtr(fd, 0, nil, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return memfdBlock{}, fmt.Errorf("mmap: %w", err)
	}
	b := unsafe.Slice((*byte)(p), size)
	for off := uintptr(0); off < size; off += osPage {
		b[off] = 0
	}
	return memfdBlock{p: p, size: size}, nil
}

// free unmaps the block; the kernel zeroes the pages when the file goes.
func (m memfdBlock) free() error { return unix.MunmapPtr(m.p, m.size) }

// inSecretMem reports whether /proc/self/maps names the mapping holding p
// "secretmem" — the self-check that a naive block really is secret memory.
func inSecretMem(p unsafe.Pointer) (bool, error) {
	maps, err := procfs.Maps(0)
	if err != nil {
		return false, err
	}
	m, _ := procfs.MappingAt(maps, uint64(uintptr(p)))
	return strings.Contains(m.String(), "secretmem"), nil
}
