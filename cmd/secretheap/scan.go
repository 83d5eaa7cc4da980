package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/procfs"
)

// needle is one byte string to look for, with the name it is reported under.
type needle struct {
	Label string
	Bytes []byte
}

// needleList collects --hex and --string flags in command-line order.
type needleList struct {
	list *[]needle
	kind string // "hex" or "string"
}

func (n needleList) String() string { return "" }

func (n needleList) Set(v string) error {
	nd, err := parseNeedle(n.kind, v)
	if err != nil {
		return err
	}
	*n.list = append(*n.list, nd)
	return nil
}

// parseNeedle parses a --hex value "[LABEL=]HEX" (hex has no '=', so the
// split is unambiguous; spaces and colons in HEX are ignored, as `openssl
// pkey -text` prints them) or a --string value, which is all text (a label
// would be ambiguous with text holding '=').
func parseNeedle(kind, v string) (needle, error) {
	switch kind {
	case "hex":
		label, h, ok := strings.Cut(v, "=")
		if !ok {
			h, label = v, ""
		}
		h = strings.NewReplacer(" ", "", ":", "", "\t", "").Replace(h)
		b, err := hex.DecodeString(h)
		if err != nil {
			return needle{}, fmt.Errorf("not hex: %v", err)
		}
		if len(b) == 0 {
			return needle{}, errors.New("empty needle")
		}
		if label == "" {
			label = "hex " + shorten(h, 16)
		}
		return needle{Label: label, Bytes: b}, nil
	case "string":
		if v == "" {
			return needle{}, errors.New("empty needle")
		}
		return needle{Label: strconv.Quote(shorten(v, 24)), Bytes: []byte(v)}, nil
	}
	return needle{}, fmt.Errorf("unknown needle kind %q", kind)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// readNeedleFile reads one "[LABEL=]HEX" needle per line; blank lines and
// lines starting with '#' are skipped.
func readNeedleFile(path string) ([]needle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []needle
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		nd, err := parseNeedle("hex", line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, ln, err)
		}
		out = append(out, nd)
	}
	return out, sc.Err()
}

// scanNeedleResult is the outcome for one needle.
type scanNeedleResult struct {
	Label string    `json:"label"`
	Len   int       `json:"length"`
	Hits  []scanHit `json:"hits"`
}

type scanHit struct {
	Addr    string `json:"addr"`
	Mapping string `json:"mapping"` // name, or "anonymous"
}

// unreadable groups the mappings the method could not read by name and errno.
type unreadable struct {
	Mapping string `json:"mapping"`
	Errno   string `json:"errno"`
	Count   int    `json:"count"`
	Bytes   uint64 `json:"bytes"`
	Secret  bool   `json:"secretmem"`
}

// skipped groups the readable mappings scan left out, by name and reason.
type skipped struct {
	Mapping string `json:"mapping"`
	Reason  string `json:"reason"`
	Count   int    `json:"count"`
	Bytes   uint64 `json:"bytes"`
}

type scanReport struct {
	PID        int                `json:"pid"`
	Command    string             `json:"command"`
	Method     string             `json:"method"`
	BytesRead  uint64             `json:"bytes_read"`
	Unreadable []unreadable       `json:"unreadable"`
	Skipped    []skipped          `json:"skipped"`
	Partial    string             `json:"partial,omitempty"` // why only some of the mappings were listed
	Needles    []scanNeedleResult `json:"needles"`
	Found      bool               `json:"found"`
}

// progressAbove is the size of readable memory above which scan reports
// progress; progressEvery is how often.
const (
	progressAbove = 256 << 20
	progressEvery = 2 * time.Second
)

func runScan(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("scan", "scan [options] PID (--hex [LABEL=]HEX | --string TEXT | --file PATH)…",
		"Reads every readable mapping of process PID from outside, the way an attacker\n"+
			"with the same uid (or root) would, and reports where each needle occurs. Also\n"+
			"lists the mappings the read was refused for, and why: memfd_secret mappings\n"+
			"give EIO (/proc/PID/mem, ptrace) or EFAULT (process_vm_readv).\n\n"+
			"Every readable mapping is read, whatever its size, up to --max bytes in all\n"+
			"(default 64G); mappings past the bound are listed as skipped. Progress goes to\n"+
			"stderr every 2 s when there is more than 256 MiB to read. At most 64 MiB of\n"+
			"/proc/PID/maps is read (a process may have 65530 mappings with long names);\n"+
			"a read that makes no progress for 20 s stops the scan with a message. Text from\n"+
			"the process is printed with control characters as \\xNN.\n\n"+
			"Exit status as grep: 0 when a needle was found, 1 when none was, 2 on error.", stderr)
	var needles []needle
	fs.Var(needleList{&needles, "hex"}, "hex", "a needle as hex, optionally labelled: `[LABEL=]HEX` (spaces and colons ignored); repeatable")
	fs.Var(needleList{&needles, "string"}, "string", "a needle as text; repeatable")
	file := fs.String("file", "", "read needles from `PATH`, one [LABEL=]HEX per line (# comments)")
	method := fs.String("method", "procmem", "how to read: procmem (/proc/PID/mem), vmreadv (process_vm_readv), ptrace (PTRACE_PEEKDATA; stops the process while it reads)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	maxStr := fs.String("max", "64G", "read at most `SIZE` bytes of the process per needle (K, M, G suffixes)")
	// Flags may come after the PID as well: parse, take the PID, parse the rest.
	if done, st := parseFlags(fs, args); done {
		return st
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "secretheap scan: no PID given")
		return exitUsage
	}
	pidArg := rest[0]
	if done, st := parseFlags(fs, rest[1:]); done {
		return st
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "secretheap scan: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	pid, err := strconv.Atoi(pidArg)
	if err != nil || pid <= 0 {
		fmt.Fprintf(stderr, "secretheap scan: %q is not a process id\n", pidArg)
		return exitUsage
	}
	if *file != "" {
		more, err := readNeedleFile(*file)
		if err != nil {
			fmt.Fprintf(stderr, "secretheap scan: %v\n", err)
			return exitUsage
		}
		needles = append(needles, more...)
	}
	if len(needles) == 0 {
		fmt.Fprintln(stderr, "secretheap scan: no needle (--hex, --string or --file)")
		return exitUsage
	}
	m, err := attack.ParseMethod(*method)
	if err != nil {
		fmt.Fprintf(stderr, "secretheap scan: %v\n", err)
		return exitUsage
	}
	if pid == os.Getpid() {
		// The needles are in our own memory (arguments, parsed copies):
		// a scan of ourselves always finds them and proves nothing.
		fmt.Fprintln(stderr, "secretheap scan: refusing to scan itself (the needles are in its own memory)")
		return exitUsage
	}
	maxBytes, err := alloc.ParseSize(*maxStr)
	if err != nil || maxBytes == 0 {
		fmt.Fprintf(stderr, "secretheap scan: --max=%q: want a byte count with an optional K, M or G suffix\n", *maxStr)
		return exitUsage
	}
	rep, err := scan(pid, needles, m, maxBytes, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "secretheap scan: %v%s\n", err, accessHint(err))
		return exitUsage
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "secretheap scan: %v\n", err)
			return exitUsage
		}
	} else {
		printScan(stdout, rep)
	}
	if rep.Found {
		return 0
	}
	return 1
}

// scan runs one attack scan per needle. Each pass reads the whole address
// space again; for the few needles a key has (a handful of MiB per server
// process) that is simpler than a multi-needle matcher and fast enough.
// maxBytes bounds each pass; progress goes to progress.
func scan(pid int, needles []needle, m attack.Method, maxBytes uint64, progress io.Writer) (scanReport, error) {
	rep := scanReport{PID: pid, Method: m.Describe()}
	d, err := procfs.OpenDir(pid)
	if err != nil {
		return rep, err
	}
	defer d.Close()
	if b, err := d.Read("cmdline", procfs.SmallLimit); err == nil {
		rep.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	maps, partial, err := scanMaps(d)
	if err != nil {
		return rep, err
	}
	if partial != nil {
		rep.Partial = partial.Error()
	}
	// The bound: readable mappings are taken in address order while they
	// fit in maxBytes; the rest are listed as skipped.
	var todo []attack.Mapping
	var total uint64
	skipIdx := map[string]int{}
	for _, mp := range maps {
		if !mp.Readable() || kernelMappings[mp.Name] {
			continue
		}
		if total+uint64(mp.Size()) > maxBytes {
			name := mappingLabel(mp.Name)
			i, ok := skipIdx[name]
			if !ok {
				i = len(rep.Skipped)
				skipIdx[name] = i
				rep.Skipped = append(rep.Skipped, skipped{Mapping: name, Reason: "past --max " + formatBytes(maxBytes)})
			}
			rep.Skipped[i].Count++
			rep.Skipped[i].Bytes += uint64(mp.Size())
			continue
		}
		total += uint64(mp.Size())
		todo = append(todo, mp)
	}
	for i, nd := range needles {
		res, err := scanOne(pid, nd.Bytes, m, todo, total, fmt.Sprintf("needle %d/%d", i+1, len(needles)), progress)
		if err != nil {
			return rep, err
		}
		if i == 0 {
			rep.BytesRead = res.BytesRead
			rep.Unreadable = groupUnreadable(res.Errors)
		}
		nr := scanNeedleResult{Label: nd.Label, Len: len(nd.Bytes), Hits: []scanHit{}}
		for _, h := range res.Hits {
			nr.Hits = append(nr.Hits, scanHit{Addr: fmt.Sprintf("%#x", h.Addr), Mapping: mappingLabel(h.Mapping.Name)})
		}
		if len(nr.Hits) > 0 {
			rep.Found = true
		}
		rep.Needles = append(rep.Needles, nr)
	}
	return rep, nil
}

// scanOne reads todo (total bytes) for one needle, printing progress when
// there is much to read, and gives up when a read makes no progress for
// procfs.ReadTimeout (a read of a file mapping waits for the file system,
// and a FUSE server run by the process may never answer): the reading
// goroutine is then left behind.
func scanOne(pid int, needle []byte, m attack.Method, todo []attack.Mapping, total uint64, what string, progress io.Writer) (*attack.ScanResult, error) {
	var done atomic.Uint64
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	type result struct {
		res *attack.ScanResult
		err error
	}
	ch := make(chan result, 1)
	go func() {
		res, err := attack.ScanWith(pid, needle, m, attack.ScanOptions{
			MaxMapping: ^uintptr(0),
			Maps:       todo,
			Progress: func(n uint64) {
				done.Store(n)
				last.Store(time.Now().UnixNano())
			},
		})
		ch <- result{res, err}
	}()
	if total > progressAbove {
		fmt.Fprintf(progress, "secretheap scan: %s to read in %d mappings, %s\n", formatBytes(total), len(todo), what)
	}
	tick := time.NewTicker(progressEvery / 4)
	defer tick.Stop()
	lastPrint := time.Now()
	for {
		select {
		case r := <-ch:
			return r.res, r.err
		case now := <-tick.C:
			if now.Sub(time.Unix(0, last.Load())) > procfs.ReadTimeout {
				return nil, fmt.Errorf("process %d: a read of its memory made no progress for %v after %s (a mapping the process controls may be stalling it, such as a file on a FUSE file system whose server does not answer): stopped", pid, procfs.ReadTimeout, formatBytes(done.Load()))
			}
			if total > progressAbove && now.Sub(lastPrint) >= progressEvery {
				lastPrint = now
				fmt.Fprintf(progress, "secretheap scan: %s of %s read (%d%%), %s\n", formatBytes(done.Load()), formatBytes(total), done.Load()*100/total, what)
			}
		}
	}
}

// scanMaps reads the mappings of the process, bounded like inspect's read.
// Names are interned: a file mapped thousands of times is one string.
func scanMaps(d *procfs.Dir) ([]attack.Mapping, error, error) {
	var out []attack.Mapping
	names := map[string]string{}
	partial, err := d.Mappings("maps", func(m procfs.Mapping) {
		name, ok := names[m.Path]
		if !ok {
			names[m.Path], name = m.Path, m.Path
		}
		out = append(out, attack.Mapping{Start: uintptr(m.Start), End: uintptr(m.End), Perms: m.Perms, Offset: m.Offset, Name: name})
	})
	if err != nil {
		return nil, nil, err
	}
	return out, partial, nil
}

// mappingLabel is how a report names a mapping: its name, or "anonymous".
func mappingLabel(name string) string {
	if name == "" {
		return "anonymous"
	}
	return name
}

// kernelMappings are provided by the kernel, not the process's data; a
// refused read of them says nothing about secrets.
var kernelMappings = map[string]bool{"[vvar]": true, "[vvar_vclock]": true, "[vsyscall]": true, "[vdso]": true}

func groupUnreadable(errs []attack.MappingError) []unreadable {
	idx := map[string]int{}
	var out []unreadable
	for _, e := range errs {
		name := mappingLabel(e.Mapping.Name)
		if kernelMappings[name] {
			continue
		}
		en := "error"
		var re *attack.ReadError
		if errors.As(e.Err, &re) && re.Errno != 0 {
			en = unix.ErrnoName(re.Errno)
		} else if e.Err != nil {
			en = e.Err.Error()
		}
		key := name + "\x00" + en
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			out = append(out, unreadable{Mapping: name, Errno: en, Secret: e.Mapping.Secret()})
		}
		out[i].Count++
		out[i].Bytes += uint64(e.Mapping.Size())
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Secret && !out[b].Secret })
	return out
}

func printScan(w io.Writer, r scanReport) {
	fmt.Fprintf(w, "scan of pid %d (%s) with %s: %s read\n", r.PID, escape(shorten(r.Command, 60)), r.Method, formatBytes(r.BytesRead))
	for _, u := range r.Unreadable {
		what := u.Mapping
		if u.Secret {
			what = "memfd_secret"
		}
		fmt.Fprintf(w, "refused    %d %s mapping(s), %s: %s\n", u.Count, escape(what), formatBytes(u.Bytes), escape(u.Errno))
	}
	for _, u := range r.Skipped {
		fmt.Fprintf(w, "skipped    %d %s mapping(s), %s: %s\n", u.Count, escape(u.Mapping), formatBytes(u.Bytes), u.Reason)
	}
	if r.Partial != "" {
		fmt.Fprintf(w, "partial    %s\n", escape(r.Partial))
	}
	for _, n := range r.Needles {
		if len(n.Hits) == 0 {
			fmt.Fprintf(w, "not found  %s (%d B)\n", escape(n.Label), n.Len)
			continue
		}
		var where []string
		for i, h := range n.Hits {
			if i == 4 {
				where = append(where, fmt.Sprintf("… %d more", len(n.Hits)-i))
				break
			}
			where = append(where, h.Addr+" "+escape(h.Mapping))
		}
		fmt.Fprintf(w, "FOUND      %s (%d B): %d hit(s) at %s\n", escape(n.Label), n.Len, len(n.Hits), strings.Join(where, ", "))
	}
}

// accessHint explains a refusal to read the target at all (not a refused
// mapping): the kernel checks ptrace access before any read.
func accessHint(err error) string {
	if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
		return ""
	}
	hint := " (reading another process needs its uid, or root / CAP_SYS_PTRACE; a process with SECRETHEAP_NODUMP=1 needs CAP_SYS_PTRACE"
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		if v := strings.TrimSpace(string(b)); v != "0" {
			hint += "; Yama ptrace_scope is " + v + ", so only an ancestor of the process or root may read it"
		}
	}
	return hint + ")"
}
