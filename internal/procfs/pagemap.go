package procfs

import (
	"encoding/binary"
	"fmt"
	"os"
)

// PageSize is the OS page pagemap has one entry for (x86-64).
const PageSize = 4096

// PagemapEntry is one 64-bit entry of /proc/PID/pagemap
// (Documentation/admin-guide/mm/pagemap.rst).
type PagemapEntry uint64

// Present reports bit 63: the page is in RAM.
func (e PagemapEntry) Present() bool { return e>>63 != 0 }

// Swapped reports bit 62: the page is in swap.
func (e PagemapEntry) Swapped() bool { return e>>62&1 != 0 }

// PFN is the page frame number of a present page (bits 0–54). Only a
// process with CAP_SYS_ADMIN sees it; for anyone else it reads as 0.
func (e PagemapEntry) PFN() uint64 { return uint64(e) & (1<<55 - 1) }

// Pagemap is an open /proc/PID/pagemap.
type Pagemap struct{ f *os.File }

// OpenPagemap opens the pagemap of process pid (0: this process).
func OpenPagemap(pid int) (*Pagemap, error) {
	d, err := OpenDir(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.Open("pagemap")
	if err != nil {
		return nil, err
	}
	return &Pagemap{f}, nil
}

// Close closes the file.
func (p *Pagemap) Close() error { return p.f.Close() }

// Entries returns the entries of the OS pages of [start, end).
func (p *Pagemap) Entries(start, end uint64) ([]PagemapEntry, error) {
	n := (end - start) / PageSize
	buf := make([]byte, 8*n)
	k, err := p.f.ReadAt(buf, int64(start/PageSize*8))
	if err != nil {
		return nil, fmt.Errorf("reading pagemap: %w", err)
	}
	if k != len(buf) {
		return nil, fmt.Errorf("reading pagemap: %d of %d bytes", k, len(buf))
	}
	out := make([]PagemapEntry, n)
	for i := range out {
		out[i] = PagemapEntry(binary.LittleEndian.Uint64(buf[8*i:]))
	}
	return out, nil
}
