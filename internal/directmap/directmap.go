// Package directmap measures how much of the kernel's direct map a process's
// secret memory has split: every memfd_secret OS page is removed from the
// direct map when it is faulted in, which splits the 2 MiB (or 1 GiB) entry
// covering its physical frame for good. The kernel hands secretmem pages
// out one by one from the page allocator, so the OS pages of one 2 MiB
// chunk of address space land in many 2 MiB physical frames (512 pages of
// one mapping touched 19–23 frames here): a user-space chunk is not one
// split. What the library reduces is the number of secret OS pages, and
// with them the splits, faults, system calls and TLB flushes.
//
// Frames come from /proc/PID/pagemap, whose frame numbers only root
// (CAP_SYS_ADMIN) may read; for anyone else they read as zero and Measure
// says so.
package directmap

import (
	"errors"
	"fmt"

	"github.com/secretheap/secretheap/internal/procfs"
)

// ErrNoFrames reports that pagemap hid the frame numbers (not root).
var ErrNoFrames = errors.New("directmap: frame numbers unreadable (pagemap shows them to root only)")

// Frames is the direct-map footprint of a process's secret memory.
type Frames struct {
	Pages  int // memfd_secret OS pages present (committed)
	Frames int // distinct 2 MiB physical frames they occupy: the direct-map entries split
}

// Ideal returns the fewest 2 MiB frames that many OS pages could occupy.
func (f Frames) Ideal() int { return (f.Pages + 511) / 512 }

// Measure reads the secretmem mappings of process pid (0: this process) from
// /proc/PID/maps and the frame of each present OS page from pagemap.
func Measure(pid int) (Frames, error) {
	var f Frames
	maps, err := procfs.Maps(pid)
	if err != nil {
		return f, err
	}
	pm, err := procfs.OpenPagemap(pid)
	if err != nil {
		return f, err
	}
	defer pm.Close()
	frames := map[uint64]bool{}
	hidden := false
	for _, m := range maps {
		if !m.Secretmem() {
			continue
		}
		if m.End <= m.Start {
			return f, fmt.Errorf("directmap: bad mapping %x-%x", m.Start, m.End)
		}
		es, err := pm.Entries(m.Start, m.End)
		if err != nil {
			return f, fmt.Errorf("directmap: %w", err)
		}
		for _, e := range es {
			if !e.Present() {
				continue
			}
			f.Pages++
			if e.PFN() == 0 {
				hidden = true
				continue
			}
			frames[e.PFN()>>9] = true
		}
	}
	f.Frames = len(frames)
	if hidden {
		return f, ErrNoFrames
	}
	return f, nil
}
