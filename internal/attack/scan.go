package attack

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/secretheap/secretheap/internal/procfs"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uintptr // the address range [Start, End)
	Perms      string  // "rw-s"
	Offset     uint64  // offset into the mapped file
	Inode      uint64  // inode of the mapped file, 0 for anonymous memory
	Name       string  // path, "[heap]", "/secretmem (deleted)", or "" for anonymous
}

// Readable reports whether the mapping's permissions include read.
func (m Mapping) Readable() bool { return strings.HasPrefix(m.Perms, "r") }

// Size returns End - Start.
func (m Mapping) Size() uintptr { return m.End - m.Start }

// Secret reports whether the mapping is a memfd_secret file.
func (m Mapping) Secret() bool { return strings.HasPrefix(m.Name, "/secretmem") }

// String formats the mapping like /proc/PID/maps does (address range, perms, name).
func (m Mapping) String() string {
	return fmt.Sprintf("%x-%x %s %s", m.Start, m.End, m.Perms, m.Name)
}

// Maps reads /proc/PID/maps (through internal/procfs, the one parser).
func Maps(pid int) ([]Mapping, error) {
	ms, err := procfs.Maps(pid)
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	out := make([]Mapping, len(ms))
	for i, m := range ms {
		out[i] = Mapping{Start: uintptr(m.Start), End: uintptr(m.End), Perms: m.Perms, Offset: m.Offset, Inode: m.Inode, Name: m.Path}
	}
	return out, nil
}

// Hit is an occurrence of the needle.
type Hit struct {
	Addr    uintptr // where the needle starts
	Mapping Mapping // the mapping it lies in
}

// MappingError is the first error met reading a mapping; the rest of the
// mapping was skipped.
type MappingError struct {
	Mapping Mapping // the mapping that could not be read
	Err     error   // a *ReadError with the errno
}

// ScanResult is what a scan found and met.
type ScanResult struct {
	Method    Method         // how the memory was read
	Hits      []Hit          // every occurrence of the needle, in address order
	Errors    []MappingError // mappings (or their tails) the method could not read
	Skipped   []Mapping      // readable mappings left out by ScanOptions
	BytesRead uint64         // bytes actually read
}

// ScanOptions bounds a scan.
type ScanOptions struct {
	// MaxMapping skips readable mappings larger than this (0: 1 GiB), such as
	// the race detector's shadow memory, which would take hours to read.
	MaxMapping uintptr
	// Filter, when non-nil, scans only the mappings it accepts.
	Filter func(Mapping) bool
	// Maps, when non-nil, are scanned instead of the mappings read from
	// /proc/PID/maps (a caller that read them with bounds of its own).
	Maps []Mapping
	// Progress, when non-nil, is called after each block read with the
	// bytes read so far.
	Progress func(bytesRead uint64)
}

// skipNames are kernel-provided mappings that are not the target's data.
var skipNames = map[string]bool{"[vvar]": true, "[vvar_vclock]": true, "[vsyscall]": true, "[vdso]": true}

// Scan reads every readable mapping of process pid with method m and reports
// each occurrence of needle, with default ScanOptions.
func Scan(pid int, needle []byte, m Method) (*ScanResult, error) {
	return ScanWith(pid, needle, m, ScanOptions{})
}

// blockSize is how much a scan reads at once.
const blockSize = 1 << 20

// ScanWith is Scan with options.
func ScanWith(pid int, needle []byte, m Method, opt ScanOptions) (*ScanResult, error) {
	if len(needle) == 0 {
		return nil, fmt.Errorf("attack: empty needle")
	}
	maps := opt.Maps
	if maps == nil {
		var err error
		if maps, err = Maps(pid); err != nil {
			return nil, err
		}
	}
	r, err := open(pid, m)
	if err != nil {
		return nil, err
	}
	defer r.close()
	return scan(r, maps, needle, m, opt), nil
}

// scan reads the mappings through r and collects the hits.
func scan(r reader, maps []Mapping, needle []byte, m Method, opt ScanOptions) *ScanResult {
	if opt.MaxMapping == 0 {
		opt.MaxMapping = 1 << 30
	}
	res := &ScanResult{Method: m}
	buf := make([]byte, blockSize+len(needle)-1)
	for _, mp := range maps {
		if !mp.Readable() || skipNames[mp.Name] {
			continue
		}
		if mp.Size() > opt.MaxMapping || (opt.Filter != nil && !opt.Filter(mp)) {
			res.Skipped = append(res.Skipped, mp)
			continue
		}
		// Read block by block; carry the last len(needle)-1 bytes over so a
		// needle straddling two blocks is still found.
		carry := 0
		for addr := mp.Start; addr < mp.End; {
			n := min(uintptr(blockSize), mp.End-addr)
			k, err := r.readAt(buf[carry:carry+int(n)], addr)
			res.BytesRead += uint64(k)
			if opt.Progress != nil {
				opt.Progress(res.BytesRead)
			}
			window := buf[:carry+k]
			base := addr - uintptr(carry)
			for off := 0; ; {
				i := bytes.Index(window[off:], needle)
				if i < 0 {
					break
				}
				res.Hits = append(res.Hits, Hit{Addr: base + uintptr(off+i), Mapping: mp})
				off += i + 1
			}
			if err != nil {
				res.Errors = append(res.Errors, MappingError{Mapping: mp, Err: err})
				break
			}
			carry = min(len(needle)-1, len(window))
			copy(buf, window[len(window)-carry:])
			addr += uintptr(k)
		}
	}
	return res
}
