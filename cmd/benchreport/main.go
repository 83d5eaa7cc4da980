// Command benchreport runs every secretheap benchmark — C allocators side by
// side, TLS handshakes, process start-up, OpenSSL's own test suite, memory,
// first use, fork, and the Go allocators — and writes docs/benchmarks/results.txt, results.json and SVG
// charts. `make bench` runs it after building everything.
//
// The machines this runs on are noisy (2 vCPUs, other work): each comparison
// runs several rounds, the backends of a round back to back in an order that
// rotates from round to round, and every ratio is taken against the baseline
// of the same round before the median over rounds is reported.
//
//	make bench BENCH_ARGS='[-quick] [-rounds N] [-out DIR] [-only a,b] [-keep-going]'
//
// (a module of its own, cmd/benchreport/go.mod: make builds it into
// build/benchreport and runs it from the repository root, which it measures)
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/secretheap/secretheap/internal/repo"
	"github.com/secretheap/secretheap/secretmem"
)

type config struct {
	quick     bool
	rounds    int
	out       string // docs/benchmarks
	root      string // repository root
	only      map[string]bool
	keepGoing bool
}

// sections in run order; -only picks a subset.
var sectionNames = []string{"c-alloc", "tls", "startup", "openssl-suite", "memory", "first-use", "fork", "go"}

func main() {
	var cfg config
	var only string
	flag.BoolVar(&cfg.quick, "quick", false, "smoke run: 2 short rounds of everything (1–2 minutes)")
	flag.IntVar(&cfg.rounds, "rounds", 0, "rounds per comparison (default 5, 2 with -quick)")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks", "output directory")
	flag.StringVar(&only, "only", "", "comma-separated sections: "+strings.Join(sectionNames, ","))
	flag.BoolVar(&cfg.keepGoing, "keep-going", false, "record a failed self-check and skip the backend instead of aborting")
	flag.Parse()
	if cfg.rounds <= 0 {
		cfg.rounds = 5
		if cfg.quick {
			cfg.rounds = 2
		}
	}
	if only != "" {
		cfg.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(s)] = true
		}
	}
	root, err := repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	cfg.root = root
	if !filepath.IsAbs(cfg.out) {
		cfg.out = filepath.Join(root, cfg.out)
	}
	b := newBench(cfg)
	if err := b.runAll(); err != nil {
		b.prog.finish()
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	b.prog.finish()
	fmt.Fprintf(os.Stderr, "wrote %s/results.txt, results.json and charts\n", cfg.out)
}

// bench holds the state of one run.
type bench struct {
	cfg     config
	prog    *progress
	samples []Sample
	notes   []string // what was skipped and why, shown in results.txt
	machine Machine
	started time.Time
	bin     string // build/bench
	lib     string // build/libsecretheap.so, "" if not built
	splits  []SplitDelta
}

// SplitDelta is the change in direct-map splits across one section.
type SplitDelta struct {
	Section string `json:"section"`
	Before  int64  `json:"before"`
	After   int64  `json:"after"`
}

func newBench(cfg config) *bench {
	return &bench{cfg: cfg, prog: &progress{start: time.Now()}, started: time.Now(),
		bin: filepath.Join(cfg.root, "build", "bench")}
}

func (b *bench) want(section string) bool { return b.cfg.only == nil || b.cfg.only[section] }

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *bench) add(s Sample) { b.samples = append(b.samples, s) }

// fail handles an error in a section: a self-check failure aborts the run
// unless -keep-going; anything else is noted and the section goes on.
func (b *bench) fail(err error, what string) error {
	if err == nil {
		return nil
	}
	if isSelfCheck(err) && !b.cfg.keepGoing {
		return err
	}
	b.note("%s: %v", what, err)
	return nil
}

func (b *bench) runAll() error {
	b.machine = readMachine(b.cfg.root)
	if err := b.build(); err != nil {
		return err
	}
	b.prog.total = b.estimateSteps()
	sections := []struct {
		name string
		fn   func() error
	}{
		{"c-alloc", b.cAlloc},
		{"tls", b.tls},
		{"startup", b.startup},
		{"openssl-suite", b.opensslSuite},
		{"memory", b.memory},
		{"first-use", b.firstUse},
		{"fork", b.fork},
		{"go", b.goBench},
	}
	for _, s := range sections {
		if !b.want(s.name) {
			continue
		}
		before := splits(vmstat())
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		b.splits = append(b.splits, SplitDelta{Section: s.name, Before: before, After: splits(vmstat())})
	}
	return b.writeReport()
}

func (b *bench) estimateSteps() int {
	r := b.cfg.rounds
	n := 0
	for _, s := range sectionNames {
		if !b.want(s) {
			continue
		}
		switch s {
		case "c-alloc":
			n += r * len(cBackends)
		case "tls":
			n += r*2 + 2 + min(r, 3)*2
		case "startup":
			n += r + 2
		case "openssl-suite":
			n += b.suiteRounds() * len(suiteModes)
		case "memory":
			n += len(cBackends) + len(goProbeBackends) + 5
		case "first-use":
			n += (len(cBackends) - 1 + len(goProbeBackends)) * b.firstReps()
			n += b.firstReps()
		case "fork":
			n += min(r, 3) * (3*2 + 2)
		case "go":
			n += r
		}
	}
	return n
}

func (b *bench) firstReps() int {
	if b.cfg.quick {
		return 3
	}
	return 15
}

// Machine describes where the numbers come from.
type Machine struct {
	Date    string `json:"date"`
	Commit  string `json:"commit"`
	CPU     string `json:"cpu"`
	Nproc   int    `json:"nproc"`
	Kernel  string `json:"kernel"`
	OpenSSL string `json:"openssl"`
	Go      string `json:"go"`
	CC      string `json:"cc"`
	Library string `json:"library"`
	// LoadStart and LoadEnd are /proc/loadavg at the start and end of the
	// run: other work on a 2-CPU machine moves absolute numbers (ratios
	// within a round much less), and the reader should know how busy it was.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
	// DirectMap4k from /proc/meminfo at the start and end: how much of the
	// kernel direct map is already split to 4 KiB pages (splits are permanent).
	DirectMap4kStart string `json:"directmap4k_start"`
	DirectMap4kEnd   string `json:"directmap4k_end"`
	// Model is the kernel's accounting model for secret memory
	// (secretmem.Detect: "old" or "new", "unknown"), MemlockLimit the
	// RLIMIT_MEMLOCK the run had.
	Model        string `json:"memlock_model"`
	MemlockLimit uint64 `json:"memlock_limit"`
	Rounds       int    `json:"rounds"`
	Quick        bool   `json:"quick"`
}

func readMachine(root string) Machine {
	m := Machine{Date: time.Now().UTC().Format(time.RFC3339), Nproc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if i := strings.Index(line, ":"); i >= 0 {
					m.CPU = strings.TrimSpace(line[i+1:])
				}
				break
			}
		}
	}
	m.LoadStart = loadavg()
	m.DirectMap4kStart = directMap4k()
	k := secretmem.Detect()
	m.Model, m.MemlockLimit = k.Model.String(), k.MemlockLimit
	if k.Unavailable != nil {
		m.Model = "none (memfd_secret unavailable)"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := run(10*time.Second, cleanEnv(), "openssl", "version"); err == nil {
		m.OpenSSL = strings.TrimSpace(out)
	}
	if out, err := run(10*time.Second, cleanEnv(), ccName(), "--version"); err == nil {
		m.CC = strings.SplitN(out, "\n", 2)[0]
	}
	if out, err := run(10*time.Second, cleanEnv(), "git", "-C", root, "rev-parse", "--short", "HEAD"); err == nil {
		m.Commit = strings.TrimSpace(out)
	}
	return m
}

func ccName() string {
	if cc := os.Getenv("CC"); cc != "" {
		return cc
	}
	return "cc"
}

// loadavg returns the three load averages of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// directMap4k returns the DirectMap4k line's value of /proc/meminfo.
func directMap4k() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "DirectMap4k:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
