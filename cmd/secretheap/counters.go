package main

// Live counters of a running process, read from outside.
//
// The library keeps a few counters in ordinary global variables of
// libsecretheap.so (cshim/stats.c: sh_stat_openssl_hooked, sh_stat_fallbacks,
// sh_stat_reprivatised, sh_stat_misuse) — not in secret memory, so a reader
// with ptrace access to the process (its uid, or root) can read them with
// /proc/PID/mem. Their addresses come from the library's exported
// secretheap_ident (ident.go), relocated by ld.so: no symbol table and no
// file is needed. This is what "live stats" can be without the library's
// help; chunk and byte totals come from /proc/PID/smaps instead.

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/secretheap/secretheap/internal/procfs"
)

// liveCounter names one counter: the C symbol (index: element of an
// array of uint64) and the stats field.
type liveCounter struct {
	symbol, field string
	index         int
}

// liveCounters are read in this order (the order of sh_ident.counters) and
// printed with these names (the names of struct secretheap_stats).
var liveCounters = []liveCounter{
	{"sh_stat_openssl_hooked", "openssl_hooked", 0},
	{"sh_stat_fallbacks", "fallbacks", 0},
	{"sh_stat_reprivatised", "fork_reprivatised", 0},
	{"sh_stat_misuse", "misuse_caught", 0},
	// sh_stat_failures[SECRETHEAP_CAUSE_*]: refusals by cause (stats.c's
	// failures_<cause> keys); printed only when non-zero.
	{"sh_stat_failures", "failures_no_support", 1},
	{"sh_stat_failures", "failures_denied", 2},
	{"sh_stat_failures", "failures_memlock", 3},
	{"sh_stat_failures", "failures_limit", 4},
	{"sh_stat_failures", "failures_descriptors", 5},
	{"sh_stat_failures", "failures_memory", 6},
	{"sh_stat_failures", "failures_bad_fd", 7},
	{"sh_stat_failures", "failures_arena", 8},
	{"sh_stat_failures", "failures_other", 9},
}

// readLiveCounters reads the counters the ident points at. maps must be the
// process's mappings.
func readLiveCounters(r memReader, id libraryIdent, maps []procfs.Mapping) (map[string]uint64, error) {
	if len(id.counters) < len(liveCounters) {
		return nil, fmt.Errorf("the library (version %s) names %d counters, want %d", escape(id.Version), len(id.counters), len(liveCounters))
	}
	out := map[string]uint64{}
	for i, c := range liveCounters {
		addr := id.counters[i]
		// While ld.so is still loading the library its pointers are not
		// relocated yet: trust only an address in a writable mapping (the
		// library's data segment or .bss).
		if !inWritableMapping(maps, addr) {
			return nil, fmt.Errorf("the library is still being loaded (its counters are not mapped yet)")
		}
		b, err := r.read(addr, 8)
		if err != nil {
			return nil, err
		}
		if len(b) != 8 {
			return nil, fmt.Errorf("short read of %s", c.field)
		}
		out[c.field] = binary.NativeEndian.Uint64(b)
	}
	return out, nil
}

// inWritableMapping reports whether addr lies in a mapping that is readable
// and writable (the library's data segment or its .bss).
func inWritableMapping(maps []procfs.Mapping, addr uint64) bool {
	for _, m := range maps {
		if addr >= m.Start && addr < m.End {
			return len(m.Perms) >= 2 && m.Perms[:2] == "rw"
		}
	}
	return false
}

// formatCounters prints the counters in liveCounters order (refusals by
// cause only when non-zero).
func formatCounters(c map[string]uint64) string {
	s := ""
	for _, lc := range liveCounters {
		if lc.symbol == "sh_stat_failures" && c[lc.field] == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += lc.field + " " + strconv.FormatUint(c[lc.field], 10)
	}
	return s
}
