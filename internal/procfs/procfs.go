// Package procfs is secretheap's one reader of the /proc files its tools
// parse: maps and smaps, status, limits, environ and pagemap. The parsers
// take bytes (or lines) so that the formats are tested directly; the readers
// (Dir) are hardened for processes that may be hostile, since the secretheap
// command runs them as root: see read.go.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CapIPCLock is the bit of CAP_IPC_LOCK in the Cap* masks of
// /proc/PID/status (linux/capability.h). It lets a process lock memory past
// RLIMIT_MEMLOCK, which includes memfd_secret mappings on the old
// accounting model.
const CapIPCLock = 14

// Mapping is one mapping of /proc/PID/maps, with the two smaps fields the
// tools need when it was read from smaps.
type Mapping struct {
	Start, End uint64 // the address range [Start, End)
	Perms      string // "rw-s"
	Offset     uint64 // file offset of Start
	Inode      uint64 // inode of the mapped file, 0 for anonymous memory
	// Path is the name as the kernel wrote it (it may hold spaces): a path,
	// "[heap]", "/secretmem (deleted)", or "" for anonymous memory.
	Path string
	// From smaps only (zero when read from maps):
	Rss     uint64   // bytes resident: for a secretmem mapping, its committed OS pages
	VmFlags []string // two-letter flags: "lo" locked, "dd" dontdump, "wf" wipeonfork
}

// Size is the length of the mapping in bytes.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// Readable reports whether the mapping's permissions include read.
func (m Mapping) Readable() bool { return strings.HasPrefix(m.Perms, "r") }

// Secretmem reports whether the mapping comes from memfd_secret; the kernel
// names every such file "secretmem" on its internal mount.
func (m Mapping) Secretmem() bool { return strings.HasPrefix(m.Path, "/secretmem") }

// HasFlag reports whether smaps listed the two-letter VmFlag f.
func (m Mapping) HasFlag(f string) bool {
	for _, g := range m.VmFlags {
		if g == f {
			return true
		}
	}
	return false
}

// ParseMaps parses /proc/PID/maps or /proc/PID/smaps; with smaps the Rss and
// VmFlags lines that follow each mapping's header are attached to it.
func ParseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	p := MapsParser{Emit: func(m Mapping) { out = append(out, m) }}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		if err := p.Line(sc.Text()); err != nil {
			return nil, err
		}
	}
	p.Flush()
	return out, sc.Err()
}

// MapsParser parses maps or smaps a line at a time and hands each mapping to
// Emit once its smaps fields are in, so that a caller streaming a large file
// keeps only what it needs. Call Flush after the last line.
type MapsParser struct {
	Emit func(Mapping)
	cur  *Mapping
}

// Line parses one line of maps or smaps.
func (p *MapsParser) Line(line string) error {
	if line == "" {
		return nil
	}
	if k, v, ok := smapsField(line); ok {
		if p.cur == nil {
			return fmt.Errorf("smaps field %q before any mapping", k)
		}
		switch k {
		case "Rss":
			n, err := ParseKB(v)
			if err != nil {
				return fmt.Errorf("smaps Rss %q: %w", v, err)
			}
			p.cur.Rss = n
		case "VmFlags":
			p.cur.VmFlags = strings.Fields(v)
		}
		return nil
	}
	m, err := ParseMapsLine(line)
	if err != nil {
		return err
	}
	p.Flush()
	p.cur = &m
	return nil
}

// Flush emits the mapping being parsed.
func (p *MapsParser) Flush() {
	if p.cur != nil {
		p.Emit(*p.cur)
		p.cur = nil
	}
}

// smapsField recognises "Name:   value" lines of smaps. A maps header line
// starts with a hex address range, never with a capitalised word and colon.
func smapsField(line string) (key, value string, ok bool) {
	i := strings.IndexByte(line, ':')
	if i <= 0 || strings.ContainsAny(line[:i], " -") {
		return "", "", false
	}
	if c := line[0]; c < 'A' || c > 'Z' {
		return "", "", false
	}
	return line[:i], strings.TrimSpace(line[i+1:]), true
}

// ParseMapsLine parses "start-end perms offset dev inode   path".
func ParseMapsLine(line string) (Mapping, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return Mapping{}, fmt.Errorf("maps line %q: too few fields", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return Mapping{}, fmt.Errorf("maps line %q: no address range", line)
	}
	var m Mapping
	var err error
	for _, x := range []struct {
		dst  *uint64
		s    string
		base int
	}{{&m.Start, lo, 16}, {&m.End, hi, 16}, {&m.Offset, f[2], 16}, {&m.Inode, f[4], 10}} {
		if *x.dst, err = strconv.ParseUint(x.s, x.base, 64); err != nil {
			return Mapping{}, fmt.Errorf("maps line %q: %w", line, err)
		}
	}
	m.Perms = f[1]
	if len(f) > 5 {
		// Everything after the inode column, as the kernel wrote it (a
		// path may hold spaces): skip five fields and their blanks.
		rest := line
		for range 5 {
			rest = strings.TrimLeft(rest, " ")
			rest = rest[strings.IndexByte(rest, ' ')+1:]
		}
		m.Path = strings.TrimSpace(rest)
	}
	return m, nil
}

// ParseKB parses a "1234 kB" value of status or smaps into bytes.
func ParseKB(v string) (uint64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, err
	}
	if unit != "" && unit != "kB" {
		return 0, fmt.Errorf("unit %q, want kB", unit)
	}
	return n * 1024, nil
}

// ParseStatus parses /proc/PID/status into its fields.
func ParseStatus(data []byte) map[string]string {
	out := make(map[string]string)
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// StatusKB returns the field key of /proc/PID/status (VmLck, VmSize, …) in
// bytes.
func StatusKB(data []byte, key string) (uint64, error) {
	v, ok := ParseStatus(data)[key]
	if !ok {
		return 0, fmt.Errorf("no %s in status", key)
	}
	n, err := ParseKB(v)
	if err != nil {
		return 0, fmt.Errorf("status %s %q: %w", key, v, err)
	}
	return n, nil
}

// HasCap reports whether the hex capability mask (CapEff etc.) holds bit.
func HasCap(mask string, bit uint) (bool, error) {
	v, err := strconv.ParseUint(mask, 16, 64)
	if err != nil {
		return false, fmt.Errorf("capability mask %q: %w", mask, err)
	}
	return v&(1<<bit) != 0, nil
}

// Limit is one row of /proc/PID/limits; SoftInf and HardInf stand for
// RLIM_INFINITY (the value is then math.MaxUint64).
type Limit struct {
	Soft, Hard       uint64
	SoftInf, HardInf bool
}

// ParseMemlockLimit finds "Max locked memory" in /proc/PID/limits.
func ParseMemlockLimit(data []byte) (Limit, error) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "Max locked memory")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return Limit{}, fmt.Errorf("limits line %q: too few fields", line)
		}
		var l Limit
		var err error
		if l.Soft, l.SoftInf, err = parseLimitValue(f[0]); err != nil {
			return Limit{}, err
		}
		if l.Hard, l.HardInf, err = parseLimitValue(f[1]); err != nil {
			return Limit{}, err
		}
		return l, nil
	}
	return Limit{}, fmt.Errorf("no \"Max locked memory\" line in limits")
}

func parseLimitValue(s string) (uint64, bool, error) {
	if s == "unlimited" {
		return math.MaxUint64, true, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, false, err
}

// ParseEnviron splits /proc/PID/environ (NUL-separated KEY=VALUE).
func ParseEnviron(data []byte) map[string]string {
	out := make(map[string]string)
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok {
			out[k] = v
		}
	}
	return out
}

// String formats the mapping like a line of maps, without the device
// column: "start-end perms offset inode path".
func (m Mapping) String() string {
	return strings.TrimRight(fmt.Sprintf("%x-%x %s %08x %d %s", m.Start, m.End, m.Perms, m.Offset, m.Inode, m.Path), " ")
}

// MappingAt returns the mapping of maps that holds addr.
func MappingAt(maps []Mapping, addr uint64) (Mapping, bool) {
	for _, m := range maps {
		if addr >= m.Start && addr < m.End {
			return m, true
		}
	}
	return Mapping{}, false
}
