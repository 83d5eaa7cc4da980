package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// inspectReport is what inspect finds out about a process from /proc alone:
// nothing here needs the library's cooperation or ptrace.
type inspectReport struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`

	Library       string `json:"library,omitempty"` // path of libsecretheap.so mapped in, "" if not
	Libcrypto     string `json:"libcrypto,omitempty"`
	SecretMaps    int    `json:"secretmem_mappings"`
	SecretBytes   uint64 `json:"secretmem_bytes"`
	SecretRss     uint64 `json:"secretmem_committed_bytes"` // resident OS pages; 0 when smaps is unreadable
	SmapsReadable bool   `json:"smaps_readable"`
	LockedMaps    int    `json:"locked_mappings"` // anonymous, mlocked, dontdump
	LockedBytes   uint64 `json:"locked_bytes"`

	VmLck       uint64            `json:"vmlck_bytes"`
	MemlockSoft uint64            `json:"memlock_soft"` // MaxUint64 = unlimited
	MemlockHard uint64            `json:"memlock_hard"`
	CapIPCLock  bool              `json:"cap_ipc_lock"`
	Settings    map[string]string `json:"settings,omitempty"` // SECRETHEAP_* from the initial environment
	EnvReadable bool              `json:"environ_readable"`
	OpenSSLHook string            `json:"openssl_hook"` // what can be said from outside
	// Counters are the library's live counters (openssl_hooked, fallbacks,
	// fork_reprivatised, misuse_caught) read from its memory; CountersErr
	// says why they could not be read.
	Counters    map[string]uint64 `json:"counters,omitempty"`
	CountersErr string            `json:"counters_error,omitempty"`
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", "inspect [--json] PID",
		"Shows what a running process keeps in secret memory, from /proc alone: whether\n"+
			"libsecretheap.so and libcrypto are loaded, its memfd_secret mappings (count,\n"+
			"bytes mapped, bytes committed), locked-backend mappings, VmLck against its\n"+
			"RLIMIT_MEMLOCK, and the SECRETHEAP_* settings it was started with; and the\n"+
			"library's live counters (openssl_hooked, fallbacks, fork_reprivatised,\n"+
			"misuse_caught), read from its memory at the addresses its symbol table gives\n"+
			"(not available when the library file was stripped). Needs the same user as the\n"+
			"process, or root. A process caught in its first milliseconds, while ld.so is\n"+
			"still mapping its libraries, shows a partial picture: inspect it again.", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if done, st := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "secretheap inspect: want exactly one PID")
		return exitUsage
	}
	pid, err := strconv.Atoi(fs.Arg(0))
	if err != nil || pid <= 0 {
		fmt.Fprintf(stderr, "secretheap inspect: %q is not a process id\n", fs.Arg(0))
		return exitUsage
	}
	rep, err := inspect(pid)
	if err != nil {
		fmt.Fprintf(stderr, "secretheap inspect: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "secretheap inspect: %v\n", err)
			return 1
		}
		return 0
	}
	printInspect(stdout, rep)
	return 0
}

func inspect(pid int) (inspectReport, error) {
	rep := inspectReport{PID: pid}
	if b, err := readProc(pid, "cmdline"); err == nil {
		rep.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	// smaps gives committed bytes (Rss) and VmFlags; it needs the same
	// access as /proc/PID/mem's owner check, so fall back to maps.
	var maps []mapping
	if b, err := readProc(pid, "smaps"); err == nil {
		if maps, err = parseMaps(b); err != nil {
			return rep, fmt.Errorf("process %d: %w", pid, err)
		}
		rep.SmapsReadable = true
	} else {
		b, err := readProc(pid, "maps")
		if err != nil {
			return rep, fmt.Errorf("process %d: %w", pid, err)
		}
		if maps, err = parseMaps(b); err != nil {
			return rep, fmt.Errorf("process %d: %w", pid, err)
		}
	}
	for _, m := range maps {
		base := filepath.Base(m.Path)
		switch {
		case m.isSecretmem():
			rep.SecretMaps++
			rep.SecretBytes += m.Size()
			rep.SecretRss += m.Rss
		case m.isLocked():
			rep.LockedMaps++
			rep.LockedBytes += m.Size()
		case strings.HasPrefix(base, "libsecretheap.so") && rep.Library == "":
			rep.Library = m.Path
		case strings.HasPrefix(base, "libcrypto.so") && rep.Libcrypto == "":
			rep.Libcrypto = m.Path
		}
	}
	b, err := readProc(pid, "status")
	if err != nil {
		return rep, fmt.Errorf("process %d: %w", pid, err)
	}
	st := parseStatus(b)
	if v, ok := st["VmLck"]; ok {
		rep.VmLck, _ = parseKB(v)
	}
	if v, ok := st["CapEff"]; ok {
		rep.CapIPCLock, _ = hasCap(v, capIPCLock)
	}
	if b, err := readProc(pid, "limits"); err == nil {
		if l, err := parseMemlockLimit(b); err == nil {
			rep.MemlockSoft, rep.MemlockHard = l.Soft, l.Hard
		}
	}
	if b, err := readProc(pid, "environ"); err == nil {
		rep.EnvReadable = true
		rep.Settings = make(map[string]string)
		for k, v := range parseEnviron(b) {
			if strings.HasPrefix(k, "SECRETHEAP_") || k == "LD_PRELOAD" {
				rep.Settings[k] = v
			}
		}
	}
	if rep.Library != "" {
		c, err := readLiveCounters(pid, rep.Library, maps)
		if err != nil {
			rep.CountersErr = err.Error()
		} else {
			rep.Counters = c
		}
	}
	rep.OpenSSLHook = judgeHook(rep)
	return rep, nil
}

// judgeHook says what can be known from outside about OpenSSL's allocations.
// The library records whether CRYPTO_set_mem_functions took effect in its
// stats (openssl_hooked), which are not readable from outside while the
// process runs; /proc shows the preconditions.
func judgeHook(r inspectReport) string {
	mode := r.Settings["SECRETHEAP_OPENSSL"]
	switch {
	case r.Library == "":
		return "no: libsecretheap.so is not loaded"
	case r.Libcrypto == "":
		return "no OpenSSL in this process (libcrypto not loaded)"
	case mode == "off":
		return "no: SECRETHEAP_OPENSSL=off"
	}
	if h, ok := r.Counters["openssl_hooked"]; ok {
		switch h {
		case 1:
			if fb := r.Counters["fallbacks"]; fb > 0 {
				return fmt.Sprintf("yes, but %d allocations fell back to ordinary memory (secret memory ran out: raise SECRETHEAP_LIMIT or RLIMIT_MEMLOCK)", fb)
			}
			if mode == "secure" {
				return "yes: every OpenSSL allocation goes to secret memory (SECRETHEAP_OPENSSL=secure fell back to the general hooks: this libcrypto binds CRYPTO_secure_* internally; openssl_hooked 1, read from the library)"
			}
			return "yes: every OpenSSL allocation goes to secret memory (openssl_hooked 1, read from the library)"
		case 2:
			return "no: OpenSSL refused the hooks, it had allocated before the library was loaded (openssl_hooked 2)"
		}
		if mode == "secure" {
			return "only CRYPTO_secure_* allocations (SECRETHEAP_OPENSSL=secure; openssl_hooked 0)"
		}
		return "not yet: the library has not hooked this libcrypto (openssl_hooked 0)"
	}
	switch {
	case r.SecretMaps == 0 && r.LockedMaps == 0:
		return "probably not: the library and libcrypto are loaded but no secret memory is mapped yet"
	}
	if mode == "" {
		mode = "all"
	}
	return fmt.Sprintf("likely (mode %s): the library and libcrypto are loaded and secret memory is mapped; run `secretheap doctor` for the library's own verdict on this libcrypto", mode)
}

func printInspect(w io.Writer, r inspectReport) {
	fmt.Fprintf(w, "process        %d  %s\n", r.PID, r.Command)
	if r.Library != "" {
		fmt.Fprintf(w, "library        loaded: %s\n", r.Library)
	} else {
		fmt.Fprintln(w, "library        not loaded (start the program with `secretheap run -- …`)")
	}
	if r.Libcrypto != "" {
		fmt.Fprintf(w, "libcrypto      loaded: %s\n", r.Libcrypto)
	} else {
		fmt.Fprintln(w, "libcrypto      not loaded")
	}
	fmt.Fprintf(w, "openssl hook   %s\n", r.OpenSSLHook)
	committed := "committed: smaps unreadable"
	if r.SmapsReadable {
		committed = formatBytes(r.SecretRss) + " committed"
	}
	fmt.Fprintf(w, "secretmem      %d mappings, %s mapped, %s\n", r.SecretMaps, formatBytes(r.SecretBytes), committed)
	if r.LockedMaps > 0 || r.SmapsReadable {
		fmt.Fprintf(w, "locked memory  %d mappings, %s (anonymous, mlocked, not dumped: the locked backend, or another locked heap)\n", r.LockedMaps, formatBytes(r.LockedBytes))
	}
	lim := fmt.Sprintf("limit %s soft / %s hard", formatBytes(r.MemlockSoft), formatBytes(r.MemlockHard))
	if r.CapIPCLock {
		lim += ", CAP_IPC_LOCK (limit does not apply)"
	}
	fmt.Fprintf(w, "memlock        VmLck %s, %s\n", formatBytes(r.VmLck), lim)
	if r.EnvReadable {
		keys := make([]string, 0, len(r.Settings))
		for k := range r.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) == 0 {
			fmt.Fprintln(w, "settings       no SECRETHEAP_* variables (defaults)")
		}
		for i, k := range keys {
			label := "settings"
			if i > 0 {
				label = ""
			}
			fmt.Fprintf(w, "%-14s %s=%s\n", label, k, r.Settings[k])
		}
	} else {
		fmt.Fprintln(w, "settings       environ unreadable (another user's process?)")
	}
	switch {
	case r.Counters != nil:
		fmt.Fprintf(w, "counters       %s (live, from the library's memory; the full report comes at exit with SECRETHEAP_STATS)\n", formatCounters(r.Counters))
	case r.CountersErr != "":
		fmt.Fprintf(w, "counters       unreadable: %s\n", r.CountersErr)
	}
}
