package main

// Readers for the /proc files the subcommands parse. They take the proc root
// as a parameter only through procPath so tests can point at a real process;
// parsing is kept apart from reading so that the formats are tested directly.

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// capIPCLock is the bit of CAP_IPC_LOCK in the Cap* masks of
// /proc/PID/status (linux/capability.h). It lets a process lock memory past
// RLIMIT_MEMLOCK, which includes memfd_secret mappings.
const capIPCLock = 14

// mapping is one line of /proc/PID/maps, with the two smaps fields inspect
// needs when they were read.
type mapping struct {
	Start, End uint64
	Perms      string
	Offset     uint64 // file offset of Start
	Path       string
	// From smaps only (zero when read from maps):
	Rss     uint64   // bytes resident: for a secretmem mapping, its committed OS pages
	VmFlags []string // two-letter flags: "lo" locked, "dd" dontdump, "wf" wipeonfork
}

// Size is the length of the mapping in bytes.
func (m mapping) Size() uint64 { return m.End - m.Start }

// isSecretmem reports whether the mapping comes from memfd_secret; the
// kernel names every such file "secretmem" on its internal mount.
func (m mapping) isSecretmem() bool {
	return strings.HasPrefix(m.Path, "/secretmem")
}

// isLocked reports whether the mapping looks like secretheap's locked
// backend: anonymous, mlocked and left out of core dumps (VmFlags lo, dd).
// The Go backend also sets wipe-on-fork (wf); the C library does not under
// SECRETHEAP_FORK=copy, and mlocks only the OS pages it has committed, so
// only those show. Another locked heap (OpenSSL's own secure heap) looks the
// same, which is why inspect words it as it does.
func (m mapping) isLocked() bool {
	return m.Path == "" && m.hasFlag("lo") && m.hasFlag("dd")
}

func (m mapping) hasFlag(f string) bool {
	for _, g := range m.VmFlags {
		if g == f {
			return true
		}
	}
	return false
}

// parseMaps parses /proc/PID/maps or /proc/PID/smaps; with smaps the Rss and
// VmFlags lines that follow each mapping's header are attached to it.
func parseMaps(data []byte) ([]mapping, error) {
	var out []mapping
	p := mapsParser{emit: func(m mapping) { out = append(out, m) }}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		if err := p.line(sc.Text()); err != nil {
			return nil, err
		}
	}
	p.done()
	return out, sc.Err()
}

// mapsParser parses maps or smaps a line at a time and hands each mapping to
// emit once its smaps fields are in, so that a caller streaming a large file
// keeps only what it needs.
type mapsParser struct {
	cur  *mapping
	emit func(mapping)
}

func (p *mapsParser) line(line string) error {
	if line == "" {
		return nil
	}
	if k, v, ok := smapsField(line); ok {
		if p.cur == nil {
			return fmt.Errorf("smaps field %q before any mapping", k)
		}
		switch k {
		case "Rss":
			n, err := parseKB(v)
			if err != nil {
				return fmt.Errorf("smaps Rss %q: %w", v, err)
			}
			p.cur.Rss = n
		case "VmFlags":
			p.cur.VmFlags = strings.Fields(v)
		}
		return nil
	}
	m, err := parseMapsLine(line)
	if err != nil {
		return err
	}
	p.done()
	p.cur = &m
	return nil
}

// done emits the mapping being parsed.
func (p *mapsParser) done() {
	if p.cur != nil {
		p.emit(*p.cur)
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

// parseMapsLine parses "start-end perms offset dev inode   path".
func parseMapsLine(line string) (mapping, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return mapping{}, fmt.Errorf("maps line %q: too few fields", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return mapping{}, fmt.Errorf("maps line %q: no address range", line)
	}
	start, err := strconv.ParseUint(lo, 16, 64)
	if err != nil {
		return mapping{}, fmt.Errorf("maps line %q: %w", line, err)
	}
	end, err := strconv.ParseUint(hi, 16, 64)
	if err != nil {
		return mapping{}, fmt.Errorf("maps line %q: %w", line, err)
	}
	off, err := strconv.ParseUint(f[2], 16, 64)
	if err != nil {
		return mapping{}, fmt.Errorf("maps line %q: %w", line, err)
	}
	m := mapping{Start: start, End: end, Perms: f[1], Offset: off}
	if len(f) > 5 {
		// The path is everything after the inode, and may hold spaces
		// ("/secretmem (deleted)").
		m.Path = strings.Join(f[5:], " ")
	}
	return m, nil
}

func parseKB(v string) (uint64, error) {
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

// parseStatus parses /proc/PID/status into its fields.
func parseStatus(data []byte) map[string]string {
	out := make(map[string]string)
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// hasCap reports whether the hex capability mask (CapEff etc.) holds bit.
func hasCap(mask string, bit uint) (bool, error) {
	v, err := strconv.ParseUint(mask, 16, 64)
	if err != nil {
		return false, fmt.Errorf("capability mask %q: %w", mask, err)
	}
	return v&(1<<bit) != 0, nil
}

// limit is one row of /proc/PID/limits; Unlimited stands for RLIM_INFINITY.
type limit struct {
	Soft, Hard       uint64
	SoftInf, HardInf bool
}

// parseMemlockLimit finds "Max locked memory" in /proc/PID/limits.
func parseMemlockLimit(data []byte) (limit, error) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "Max locked memory")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return limit{}, fmt.Errorf("limits line %q: too few fields", line)
		}
		var l limit
		var err error
		if l.Soft, l.SoftInf, err = parseLimitValue(f[0]); err != nil {
			return limit{}, err
		}
		if l.Hard, l.HardInf, err = parseLimitValue(f[1]); err != nil {
			return limit{}, err
		}
		return l, nil
	}
	return limit{}, fmt.Errorf("no \"Max locked memory\" line in limits")
}

func parseLimitValue(s string) (uint64, bool, error) {
	if s == "unlimited" {
		return math.MaxUint64, true, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, false, err
}

// parseEnviron splits /proc/PID/environ (NUL-separated KEY=VALUE).
func parseEnviron(data []byte) map[string]string {
	out := make(map[string]string)
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok {
			out[k] = v
		}
	}
	return out
}

// formatBytes prints a byte count the way the kernel's limits are usually
// written: exact KiB/MiB/GiB when it divides, else one decimal.
func formatBytes(n uint64) string {
	const (
		ki = 1 << 10
		mi = 1 << 20
		gi = 1 << 30
	)
	switch {
	case n == math.MaxUint64:
		return "unlimited"
	case n >= gi:
		return trimUnit(float64(n)/gi, n%gi == 0, "GiB")
	case n >= mi:
		return trimUnit(float64(n)/mi, n%mi == 0, "MiB")
	case n >= ki:
		return trimUnit(float64(n)/ki, n%ki == 0, "KiB")
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func trimUnit(v float64, exact bool, unit string) string {
	if exact {
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
