package main

// Live counters of a running process, read from outside.
//
// The library keeps a few counters in ordinary global variables of
// libsecretheap.so (cshim/stats.c: sh_stat_openssl_hooked, sh_stat_fallbacks,
// sh_stat_reprivatised, sh_stat_misuse) — not in secret memory, so a reader
// with ptrace access to the process (its uid, or root) can read them with
// /proc/PID/mem. Their addresses come from the library's own symbol table
// (.symtab: the library is built with -fvisibility=hidden, so they are local
// symbols, present unless the file was stripped) plus the address the
// library was loaded at. This is what "live stats" can be without the
// library's help; chunk and byte totals come from /proc/PID/smaps instead.

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/secretheap/secretheap/internal/attack"
)

// liveCounter names one counter: the C symbol (index: element of an
// array of uint64) and the stats field.
type liveCounter struct {
	symbol, field string
	index         int
}

// liveCounters are read in this order and printed with these names (the
// names of struct secretheap_stats).
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

// readLiveCounters reads the counters of the libsecretheap.so mapped at
// libPath in process pid. maps must be the process's mappings.
func readLiveCounters(pid int, libPath string, maps []mapping) (map[string]uint64, error) {
	// The file as the process sees it: through its root, so a process in
	// another mount namespace (a container) is read correctly.
	f, err := elf.Open(filepath.Join(procPath(pid, "root"), libPath))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s has no symbol table (stripped?): %w", libPath, err)
	}
	want := map[string]elf.Symbol{}
	for _, s := range syms {
		for _, c := range liveCounters {
			if s.Name == c.symbol && s.Size >= 8*uint64(c.index+1) {
				want[c.symbol] = s
			}
		}
	}
	// Load base: where the file's first PT_LOAD (file offset 0) is mapped,
	// less that segment's page-aligned virtual address.
	var firstLoad *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			firstLoad = p
			break
		}
	}
	if firstLoad == nil {
		return nil, fmt.Errorf("%s: no PT_LOAD segment", libPath)
	}
	var base uint64
	found := false
	for _, m := range maps {
		if m.Path == libPath && m.Offset == 0 {
			base = m.Start - (firstLoad.Vaddr &^ 0xfff)
			found = true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%s is not mapped from offset 0 in process %d", libPath, pid)
	}
	out := map[string]uint64{}
	for _, c := range liveCounters {
		s, ok := want[c.symbol]
		if !ok {
			return nil, fmt.Errorf("%s: no symbol %s (a library of another version?)", libPath, c.symbol)
		}
		addr := base + s.Value + 8*uint64(c.index)
		// While ld.so is still loading the library, the counters' addresses
		// lie in its first read-only mapping of the file, and a read there
		// returns file bytes, not counters: trust only a writable mapping.
		if !inWritableMapping(maps, addr) {
			return nil, fmt.Errorf("%s is still being loaded in process %d (its data segment is not mapped yet)", libPath, pid)
		}
		b, err := attack.Read(pid, uintptr(addr), 8, attack.ProcMem)
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
func inWritableMapping(maps []mapping, addr uint64) bool {
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
