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
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	maps, err := os.ReadFile(dir + "/maps")
	if err != nil {
		return f, err
	}
	pm, err := os.Open(dir + "/pagemap")
	if err != nil {
		return f, err
	}
	defer pm.Close()
	frames := map[uint64]bool{}
	hidden := false
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/secretmem") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return f, fmt.Errorf("directmap: bad maps line %q", sc.Text())
		}
		n := (end - start) / 4096
		buf := make([]byte, 8*n)
		if _, err := pm.ReadAt(buf, int64(start/4096*8)); err != nil {
			return f, fmt.Errorf("directmap: reading pagemap: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			e := binary.LittleEndian.Uint64(buf[8*i:])
			if e>>63 == 0 { // not present
				continue
			}
			f.Pages++
			pfn := e & (1<<55 - 1)
			if pfn == 0 {
				hidden = true
				continue
			}
			frames[pfn>>9] = true
		}
	}
	f.Frames = len(frames)
	if hidden {
		return f, ErrNoFrames
	}
	return f, nil
}
