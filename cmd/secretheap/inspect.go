package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/secretheap/secretheap/internal/directmap"
	"github.com/secretheap/secretheap/internal/procfs"
)

// inspectReport is what inspect finds out about a process from /proc and
// its memory: nothing here needs the library's cooperation or ptrace.
type inspectReport struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`

	// Library is the name maps gives the object that holds the library's
	// secretheap_ident, "" if none; LibraryVersion is the version that
	// ident carries. LibraryEvidence says how the library was recognised:
	// "memory" (its ident read from the process), or "file name" when the
	// process's memory was unreadable and only maps could be read.
	Library         string `json:"library,omitempty"`
	LibraryVersion  string `json:"library_version,omitempty"`
	LibraryEvidence string `json:"library_evidence,omitempty"`
	// Libcrypto is the object that exports CRYPTO_set_mem_functions (the
	// hook the library uses): a libcrypto.so, or the program itself when
	// OpenSSL is linked in statically (OpenSSLStatic).
	Libcrypto     string `json:"libcrypto,omitempty"`
	OpenSSLStatic bool   `json:"openssl_static,omitempty"`
	SecretMaps    int    `json:"secretmem_mappings"`
	SecretBytes   uint64 `json:"secretmem_bytes"`
	SecretRss     uint64 `json:"secretmem_committed_bytes"` // resident OS pages; 0 when smaps is unreadable
	SmapsReadable bool   `json:"smaps_readable"`
	LockedMaps    int    `json:"locked_mappings"` // anonymous, mlocked, dontdump
	LockedBytes   uint64 `json:"locked_bytes"`
	Mappings      int    `json:"mappings"`
	// Partial says why the mappings were read only in part (more than
	// procfs.MapsLimit of them), "" when all were.
	Partial string `json:"partial,omitempty"`

	// Model is the accounting model seen on its secretmem mappings: "old"
	// (VM_LOCKED, "lo" in smaps: charged to the process at mmap, in VmLck),
	// "new" (not locked: charged per OS page to the user, not in VmLck), or
	// "" when it has none or smaps is unreadable.
	Model string `json:"model,omitempty"`
	// SecretPages and Frames: committed memfd_secret OS pages and the 2 MiB
	// physical frames they occupy (direct-map entries split), from pagemap;
	// FramesErr says why frames are unknown (root only).
	SecretPages int    `json:"secretmem_pages"`
	Frames      int    `json:"frames_2m,omitempty"`
	FramesErr   string `json:"frames_error,omitempty"`

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
		"Shows what a running process keeps in secret memory, from /proc and its memory:\n"+
			"whether libsecretheap.so is loaded (recognised by the secretheap_ident it exports,\n"+
			"read from the process's memory, so a renamed or stripped library counts and a\n"+
			"file merely named so does not) and its version, which object is OpenSSL (a\n"+
			"libcrypto, or a program with OpenSSL linked in, such as node), its memfd_secret\n"+
			"mappings (count, bytes mapped, bytes committed, and as root the 2 MiB physical\n"+
			"frames they occupy), the accounting model, locked-backend mappings, VmLck\n"+
			"against its RLIMIT_MEMLOCK, the SECRETHEAP_* settings it was started with, and\n"+
			"the library's live counters (openssl_hooked, fallbacks, fork_reprivatised,\n"+
			"misuse_caught). No file named by the process is opened; /proc files are read\n"+
			"without following links, at most 64 MiB of smaps and 20 s per read; text from\n"+
			"the process is printed with control characters as \\xNN. Needs the same user\n"+
			"as the process, or root (else only file names are seen). A process caught while\n"+
			"ld.so is still mapping its libraries shows a partial picture: inspect it again.", stderr)
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
	d, err := procfs.OpenDir(pid)
	if err != nil {
		return rep, err
	}
	defer d.Close()
	if b, err := d.Read("cmdline", procfs.SmallLimit); err == nil {
		rep.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	// smaps gives committed bytes (Rss) and VmFlags; it needs the same
	// access as /proc/PID/mem's owner check, so fall back to maps. Both are
	// streamed: a process may have 65530 mappings with 4 KiB names each,
	// and only the names of the objects' first mappings are kept.
	var maps []procfs.Mapping
	var libByName, cryptoByName string
	named := 0
	keep := func(m procfs.Mapping) {
		rep.Mappings++
		switch {
		case m.Secretmem():
			rep.SecretMaps++
			rep.SecretBytes += m.Size()
			rep.SecretRss += m.Rss
			// Only smaps has VmFlags (maps, the fallback, has none).
			if m.VmFlags != nil && rep.Model == "" {
				rep.Model = "new"
				if m.HasFlag("lo") {
					rep.Model = "old"
				}
			}
		case isLocked(m):
			rep.LockedMaps++
			rep.LockedBytes += m.Size()
		}
		base := filepath.Base(m.Path)
		if strings.HasPrefix(base, "libsecretheap.so") && libByName == "" {
			libByName = m.Path
		}
		if strings.HasPrefix(base, "libcrypto.so") && cryptoByName == "" {
			cryptoByName = m.Path
		}
		if m.Offset != 0 || named >= maxObjects {
			m.Path = ""
		} else if m.Path != "" {
			named++
		}
		m.VmFlags = nil
		maps = append(maps, m)
	}
	readMaps := func(name string) error {
		maps, rep.Mappings, rep.SecretMaps, rep.SecretBytes, rep.SecretRss, rep.LockedMaps, rep.LockedBytes = nil, 0, 0, 0, 0, 0, 0
		libByName, cryptoByName, named = "", "", 0
		partial, err := d.Mappings(name, keep)
		if err != nil {
			return err
		}
		if partial != nil {
			rep.Partial = partial.Error()
		}
		return nil
	}
	if err := readMaps("smaps"); err == nil {
		rep.SmapsReadable = true
	} else if errors.Is(err, procfs.ErrTimeout) {
		// Its reader may still be running: touch none of its state.
		return inspectReport{PID: pid}, fmt.Errorf("process %d: %w", pid, err)
	} else if err := readMaps("maps"); err != nil {
		return rep, fmt.Errorf("process %d: %w", pid, err)
	}
	if rep.SecretMaps > 0 {
		f, err := directmap.Measure(pid)
		rep.SecretPages, rep.Frames = f.Pages, f.Frames
		if err != nil {
			rep.FramesErr = err.Error()
		}
	}
	b, err := d.Read("status", procfs.SmallLimit)
	if err != nil {
		return rep, fmt.Errorf("process %d: %w", pid, err)
	}
	st := procfs.ParseStatus(b)
	if v, ok := st["VmLck"]; ok {
		rep.VmLck, _ = procfs.ParseKB(v)
	}
	if v, ok := st["CapEff"]; ok {
		rep.CapIPCLock, _ = procfs.HasCap(v, procfs.CapIPCLock)
	}
	if b, err := d.Read("limits", procfs.SmallLimit); err == nil {
		if l, err := procfs.ParseMemlockLimit(b); err == nil {
			rep.MemlockSoft, rep.MemlockHard = l.Soft, l.Hard
		}
	}
	if b, err := d.Read("environ", procfs.SmallLimit); err == nil {
		rep.EnvReadable = true
		rep.Settings = make(map[string]string)
		for k, v := range procfs.ParseEnviron(b) {
			if strings.HasPrefix(k, "SECRETHEAP_") || k == "LD_PRELOAD" {
				rep.Settings[k] = v
			}
		}
	}
	inspectObjects(d, &rep, maps, libByName, cryptoByName)
	rep.OpenSSLHook = judgeHook(rep)
	return rep, nil
}

// inspectObjects fills in the library, OpenSSL and the counters from the
// process's memory; when that is unreadable, from the file names in maps,
// saying so.
func inspectObjects(d *procfs.Dir, rep *inspectReport, maps []procfs.Mapping, libByName, cryptoByName string) {
	f, err := d.Open("mem")
	if err == nil {
		defer f.Close()
		r := memReader{f}
		type found struct {
			lib   *objectReport
			id    libraryIdent
			idErr error
			ossl  []objectReport
		}
		ch := make(chan found, 1)
		err = procfs.WithTimeout(func() error {
			var f found
			f.lib, f.id, f.idErr, f.ossl, _ = findObjects(r, maps)
			ch <- f
			return nil
		})
		if err == nil {
			f := <-ch
			lib, id, idErr, ossl := f.lib, f.id, f.idErr, f.ossl
			if lib != nil {
				rep.Library, rep.LibraryEvidence = lib.Path, "memory"
				if idErr != nil {
					rep.CountersErr = idErr.Error()
				} else {
					rep.LibraryVersion = id.Version
					// The goroutine of a timed-out read is left behind:
					// it writes only to its own channel.
					type res struct {
						c   map[string]uint64
						err error
					}
					ch := make(chan res, 1)
					err := procfs.WithTimeout(func() error {
						c, err := readLiveCounters(r, id, maps)
						ch <- res{c, err}
						return err
					})
					if err != nil {
						rep.CountersErr = err.Error()
					} else {
						rep.Counters = (<-ch).c
					}
				}
			}
			if lib == nil && libByName != "" {
				// A file named like the library that exports none of its
				// symbols: not the library.
				rep.CountersErr = fmt.Sprintf("%s is mapped but exports no %s: not the library", escape(libByName), versionSymbol)
			}
			if len(ossl) > 0 {
				rep.Libcrypto = ossl[0].Path
				rep.OpenSSLStatic = !strings.HasPrefix(filepath.Base(ossl[0].Path), "libcrypto")
			}
			return
		}
	}
	// Memory unreadable (another user's process without root, or a
	// non-dumpable one): file names are all there is.
	why := "its memory is unreadable"
	if err != nil {
		why += ": " + err.Error()
	}
	if libByName != "" {
		rep.Library, rep.LibraryEvidence = libByName, "file name"
		rep.CountersErr = why
	}
	rep.Libcrypto = cryptoByName
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
		return "no OpenSSL in this process (nothing exports CRYPTO_set_mem_functions)"
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
	fmt.Fprintf(w, "process        %d  %s\n", r.PID, escape(r.Command))
	switch {
	case r.Library != "" && r.LibraryEvidence == "memory":
		v := r.LibraryVersion
		if v == "" {
			v = "unknown"
		}
		fmt.Fprintf(w, "library        loaded: %s (version %s, recognised in its memory)\n", escape(r.Library), escape(v))
	case r.Library != "":
		fmt.Fprintf(w, "library        a file named %s is mapped (not confirmed from its memory: see counters)\n", escape(r.Library))
	default:
		fmt.Fprintln(w, "library        not loaded (start the program with `secretheap run -- …`)")
	}
	switch {
	case r.Libcrypto != "" && r.OpenSSLStatic:
		fmt.Fprintf(w, "libcrypto      linked into %s (it exports CRYPTO_set_mem_functions)\n", escape(r.Libcrypto))
	case r.Libcrypto != "":
		fmt.Fprintf(w, "libcrypto      loaded: %s\n", escape(r.Libcrypto))
	default:
		fmt.Fprintln(w, "libcrypto      not loaded")
	}
	if r.Partial != "" {
		fmt.Fprintf(w, "mappings       %d read, partial: %s\n", r.Mappings, escape(r.Partial))
	}
	fmt.Fprintf(w, "openssl hook   %s\n", escape(r.OpenSSLHook))
	committed := "committed: smaps unreadable"
	if r.SmapsReadable {
		committed = formatBytes(r.SecretRss) + " committed"
	}
	fmt.Fprintf(w, "secretmem      %d mappings, %s mapped, %s\n", r.SecretMaps, formatBytes(r.SecretBytes), committed)
	switch {
	case r.SecretMaps == 0:
	case r.FramesErr != "":
		fmt.Fprintf(w, "direct map     %d OS pages committed; 2 MiB frames unknown: %s\n", r.SecretPages, r.FramesErr)
	default:
		fmt.Fprintf(w, "direct map     %d OS pages committed in %d 2 MiB frames (direct-map entries split; ideal %d)\n",
			r.SecretPages, r.Frames, (r.SecretPages+511)/512)
	}
	switch r.Model {
	case "old":
		fmt.Fprintln(w, "accounting     old model: secret memory is charged to this process at mmap (VmLck shows it); CAP_IPC_LOCK bypasses the limit")
	case "new":
		fmt.Fprintln(w, "accounting     new model: each OS page is charged at first use to the user, shared by its processes; VmLck does not show it, CAP_IPC_LOCK does not lift the limit")
	}
	if r.LockedMaps > 0 || r.SmapsReadable {
		fmt.Fprintf(w, "locked memory  %d mappings, %s (anonymous, mlocked, not dumped: the locked backend, or another locked heap)\n", r.LockedMaps, formatBytes(r.LockedBytes))
	}
	lim := fmt.Sprintf("limit %s soft / %s hard", formatBytes(r.MemlockSoft), formatBytes(r.MemlockHard))
	if r.CapIPCLock && r.Model != "new" {
		lim += ", CAP_IPC_LOCK (limit does not apply)"
	} else if r.CapIPCLock {
		lim += ", CAP_IPC_LOCK (lifts it for mlock only)"
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
			fmt.Fprintf(w, "%-14s %s=%s\n", label, escape(k), escape(r.Settings[k]))
		}
	} else {
		fmt.Fprintln(w, "settings       environ unreadable (another user's process?)")
	}
	switch {
	case r.Counters != nil:
		fmt.Fprintf(w, "counters       %s (live, from the library's memory; the full report comes at exit with SECRETHEAP_STATS)\n", formatCounters(r.Counters))
	case r.CountersErr != "":
		fmt.Fprintf(w, "counters       unreadable: %s\n", escape(r.CountersErr))
	}
}
