package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// section titles, in report order; kind "matrix" puts backends in columns.
var reportSections = []struct {
	id, title, kind string
}{
	{"c-alloc", "C allocators: alloc+free pair and churn (ns/op = wall time ÷ operations of all threads; ratio vs glibc in the same round)", "matrix"},
	{"c-alloc-cpu", "C allocators, the same runs in CPU time (all threads' CPU time, kernel included, ÷ operations: leaves out time other processes had the CPU, and time spent waiting for a lock)", "matrix"},
	{"go-alloc", "Go allocators (go test -bench; ns/op in Go's convention, RunParallel = wall ÷ all goroutines' ops; ratio vs make([]byte))", "matrix"},
	{"tls-inproc", "TLS 1.3 full handshakes, ECDSA P-256, client and server in one process (memory BIOs, no resumption)", "matrix"},
	{"tls-tcp", "TLS 1.3 full handshakes against the forking example server (server preloaded or not; client never)", "matrix"},
	{"startup", "Process start-up and exit: `openssl version` and /bin/true (no OpenSSL), with and without the library (hyperfine, side by side in each round); VmSize of a process without OpenSSL", "matrix"},
	{"startup-instructions", "Start-up instructions: /bin/true from exec to exit under callgrind, without the library, with an empty preloaded .so (what the dynamic loader charges any preload) and with the library (exact and repeatable: the start-up cost the timed rows above are too noisy to resolve)", "matrix"},
	{"openssl-suite", "OpenSSL's own test suite (the CI subset, opensslsuite/ci-tests.txt), CPU time of every process, without the library and with it in each mode, side by side in each round (goal: within 5 %)", "matrix"},
	{"memory", "Memory: committed secret bytes against live requested bytes", "list"},
	{"locked", "Locked memory per 32-byte secret (VmLck after N live secrets ÷ N, fixed costs included)", "list"},
	{"splits", "Direct-map splits (/proc/vmstat, system-wide, permanent: a later run or backend sees fewer)", "list"},
	{"frames", "2 MiB physical frames touched by secret memory (pagemap, root): the direct-map blast radius, against one file per allocation and the ideal (secret OS pages ÷ 512)", "list"},
	{"first-use", "First use in a fresh process (median over fresh processes)", "list"},
	{"faultin", "A chunk's first fault-in (median over fresh processes)", "list"},
	{"fork", "fork() → child ready (ratio vs glibc malloc memory of the same size)", "matrix"},
	{"fork-cost", "fork() with secretheap: the parent's blocked time (fork() until it returns) and the child's start-up, against committing as many fresh secret pages in the same process (ratio vs that commit; goal ≤ 1.5×)", "matrix"},
	{"fork-tear", "fork() while another thread rewrites a 4 KiB secret under a sequence word: children whose copy matches no single instant of the parent (plain writes are not held back: docs/design.md, Fork)", "list"},
}

// Report is results.json.
type Report struct {
	Machine  Machine      `json:"machine"`
	Duration string       `json:"duration"`
	Notes    []string     `json:"notes"`
	Splits   []SplitDelta `json:"direct_map_splits_by_section"`
	Rows     []Row        `json:"rows"`
	Samples  []Sample     `json:"samples"`
}

func (b *bench) writeReport() error {
	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return err
	}
	b.machine.Rounds = b.cfg.rounds
	b.machine.Quick = b.cfg.quick
	b.machine.LoadEnd = loadavg()
	b.machine.DirectMap4kEnd = directMap4k()
	rows := Summarise(b.samples, baselines)
	rep := Report{Machine: b.machine, Duration: time.Since(b.started).Round(time.Second).String(),
		Notes: b.notes, Splits: b.splits, Rows: rows, Samples: b.samples}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "results.txt"), []byte(renderText(rep)), 0o644); err != nil {
		return err
	}
	return writeCharts(b.cfg.out, rows)
}

// fmtVal prints a value with about three significant digits.
func fmtVal(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "–"
	case a >= 1e6:
		return fmt.Sprintf("%.3g M", v/1e6)
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) {
		return ""
	}
	switch {
	case r >= 100:
		return fmt.Sprintf(" (%.0f×)", r)
	case r >= 10:
		return fmt.Sprintf(" (%.1f×)", r)
	default:
		return fmt.Sprintf(" (%.2f×)", r)
	}
}

// renderText writes results.txt: Markdown pipe tables, readable as text and
// pasteable into docs/benchmarks/README.md.
func renderText(rep Report) string {
	var sb strings.Builder
	m := rep.Machine
	fmt.Fprintf(&sb, "# secretheap benchmarks\n\n")
	fmt.Fprintf(&sb, "Run %s (commit %s, %s%s), %d rounds per comparison.\n", m.Date, m.Commit, rep.Duration,
		map[bool]string{true: ", -quick", false: ""}[m.Quick], m.Rounds)
	fmt.Fprintf(&sb, "Machine: %s, %d CPUs, Linux %s, %s, %s, %s.\n", m.CPU, m.Nproc, m.Kernel, m.OpenSSL, m.Go, m.CC)
	fmt.Fprintf(&sb, "Load average (1, 5, 15 min) at start: %s; at end: %s.\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&sb, "Kernel direct map already split to 4 KiB pages (DirectMap4k): %s at start, %s at end.\n",
		m.DirectMap4kStart, m.DirectMap4kEnd)
	fmt.Fprintf(&sb, "Secret memory accounting: %s model; RLIMIT_MEMLOCK %s.\n\n", m.Model,
		map[bool]string{true: "unlimited", false: strconv.FormatUint(m.MemlockLimit, 10) + " B"}[m.MemlockLimit == ^uint64(0)])
	fmt.Fprintf(&sb, "Cells: median over rounds; (×) median over rounds of the ratio to the baseline of the same round.\n\n")
	for _, sec := range reportSections {
		var srows []Row
		for _, r := range rep.Rows {
			if r.Section == sec.id {
				srows = append(srows, r)
			}
		}
		if len(srows) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "## %s\n\n", sec.title)
		if sec.kind == "matrix" {
			renderMatrix(&sb, srows)
		} else {
			renderList(&sb, srows)
		}
		sb.WriteString("\n")
	}
	if len(rep.Splits) > 0 {
		sb.WriteString("## Direct-map splits by section (system-wide counter before → after)\n\n| section | before | after | new splits |\n|---|---:|---:|---:|\n")
		for _, s := range rep.Splits {
			fmt.Fprintf(&sb, "| %s | %d | %d | %d |\n", s.Section, s.Before, s.After, s.After-s.Before)
		}
		sb.WriteString("\n")
	}
	if len(rep.Notes) > 0 {
		sb.WriteString("## Notes (skipped or failed)\n\n")
		for _, n := range rep.Notes {
			fmt.Fprintf(&sb, "- %s\n", n)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// renderMatrix: one table per thread count, workloads down, backends across.
func renderMatrix(sb *strings.Builder, rows []Row) {
	threads := distinct(rows, rows[0].Section, func(r Row) string { return fmt.Sprint(r.Threads) })
	backends := backendsOf(rows, rows[0].Section)
	workloads := distinct(rows, rows[0].Section, func(r Row) string { return r.Workload })
	for _, th := range threads {
		unit := ""
		for _, r := range rows {
			if fmt.Sprint(r.Threads) == th {
				unit = r.Unit
				break
			}
		}
		// A table whose rows differ in unit (start-up: MiB and ms) names
		// the unit on each row instead of once above the table.
		mixed := false
		for _, r := range rows {
			if fmt.Sprint(r.Threads) == th && r.Unit != unit {
				mixed = true
			}
		}
		if mixed {
			unit = "unit on each row"
		}
		if th != "0" {
			what := "thread(s)"
			if rows[0].Section == "go-alloc" {
				what = "goroutine(s), GOMAXPROCS=2"
			}
			fmt.Fprintf(sb, "%s %s, %s:\n\n", th, what, unit)
		} else {
			fmt.Fprintf(sb, "%s:\n\n", unit)
		}
		fmt.Fprintf(sb, "| workload | %s |\n|---|%s\n", strings.Join(backends, " | "), strings.Repeat("---:|", len(backends)))
		for _, wl := range workloads {
			cells := make([]string, len(backends))
			any := false
			for i, be := range backends {
				var r Row
				var ok bool
				for _, x := range rows {
					if x.Workload == wl && fmt.Sprint(x.Threads) == th && x.Backend == be {
						r, ok = x, true
					}
				}
				if !ok {
					cells[i] = "–"
					continue
				}
				any = true
				cells[i] = fmtVal(r.Median)
				if r.Backend != r.Baseline {
					cells[i] += fmtRatio(r.Ratio)
				}
			}
			if any {
				label := wl
				if mixed {
					for _, x := range rows {
						if x.Workload == wl && fmt.Sprint(x.Threads) == th {
							label = wl + " (" + x.Unit + ")"
							break
						}
					}
				}
				fmt.Fprintf(sb, "| %s | %s |\n", label, strings.Join(cells, " | "))
			}
		}
		sb.WriteString("\n")
	}
}

// renderList: one line per (workload, backend).
func renderList(sb *strings.Builder, rows []Row) {
	sb.WriteString("| measurement | backend | median | unit | min – max | n |\n|---|---|---:|---|---|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(sb, "| %s | %s | %s | %s | %s – %s | %d |\n", r.Workload, r.Backend, fmtVal(r.Median), r.Unit,
			fmtVal(r.Min), fmtVal(r.Max), r.Rounds)
	}
}

// writeCharts draws the SVG charts the README embeds. A chart without data
// (its section did not run) is skipped; stale files of an earlier run are
// removed so the README never shows numbers from another run.
func writeCharts(dir string, rows []Row) error {
	type chart struct {
		file, title, ylabel, section string
		threads                      int // -1: all
		byBackend                    bool
		forceLog                     bool
	}
	charts := []chart{
		{"c_alloc_1thread.svg", "C allocators, 1 thread (wall time)", "ns/op", "c-alloc", 1, false, false},
		{"c_alloc_2threads.svg", "C allocators, 2 threads (wall time)", "ns/op (wall ÷ all ops)", "c-alloc", 2, false, false},
		{"c_alloc_cpu_1thread.svg", "C allocators, 1 thread (CPU time)", "CPU ns/op", "c-alloc-cpu", 1, false, false},
		{"c_alloc_cpu_2threads.svg", "C allocators, 2 threads (CPU time)", "CPU ns/op", "c-alloc-cpu", 2, false, false},
		{"go_alloc_1goroutine.svg", "Go allocators, 1 goroutine", "ns/op", "go-alloc", 1, false, false},
		{"go_alloc_parallel.svg", "Go allocators, RunParallel", "ns/op (wall ÷ all ops)", "go-alloc", 2, false, false},
		{"tls_inproc.svg", "TLS 1.3 handshakes, in-process", "handshakes/s", "tls-inproc", -1, false, false},
		{"tls_forking_server.svg", "TLS 1.3 handshakes, forking server", "handshakes/s", "tls-tcp", -1, false, false},
		{"locked_per_secret.svg", "Locked memory per 32-byte secret", "bytes", "locked", -1, true, true},
		{"first_use.svg", "First allocation in a fresh process", "µs", "first-use", -1, true, true},
		{"fork.svg", "fork() → child ready", "µs", "fork", -1, false, false},
	}
	for _, c := range charts {
		path := filepath.Join(dir, c.file)
		var groups []string
		var ss []series
		if c.byBackend {
			// One bar per (workload, backend): groups are backends.
			s := series{Name: c.ylabel}
			for _, r := range rows {
				if r.Section != c.section || (c.section == "first-use" && !strings.Contains(r.Workload, "first 32-B allocation in")) {
					continue
				}
				lang := strings.SplitN(r.Workload, ":", 2)[0]
				groups = append(groups, lang+" "+r.Backend)
				s.Values = append(s.Values, r.Median)
			}
			ss = []series{s}
		} else {
			var sel []Row
			for _, r := range rows {
				if r.Section == c.section && (c.threads < 0 || r.Threads == c.threads) {
					sel = append(sel, r)
				}
			}
			if len(sel) == 0 {
				_ = os.Remove(path)
				continue
			}
			groups = distinct(sel, c.section, func(r Row) string { return r.Workload })
			for _, be := range backendsOf(sel, c.section) {
				s := series{Name: be, Values: make([]float64, len(groups))}
				for i, wl := range groups {
					s.Values[i] = math.NaN()
					for _, r := range sel {
						if r.Workload == wl && r.Backend == be {
							s.Values[i] = r.Median
						}
					}
				}
				ss = append(ss, s)
			}
			groups = shortGroups(groups)
		}
		if len(groups) == 0 {
			_ = os.Remove(path)
			continue
		}
		logScale := c.forceLog || spansDecades(ss, 2)
		if err := barChart(path, c.title, c.ylabel, groups, ss, logScale); err != nil {
			return err
		}
	}
	return nil
}

// shortGroups trims long workload names for an axis.
func shortGroups(gs []string) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		switch {
		case strings.HasPrefix(g, "fork → child ready, "):
			g = strings.SplitN(strings.TrimPrefix(g, "fork → child ready, "), " live", 2)[0]
		case strings.HasPrefix(g, "full handshake (in-process), "):
			g = strings.TrimPrefix(g, "full handshake (in-process), ")
		case strings.HasPrefix(g, "full handshake"):
			g = "full handshake"
		}
		out[i] = g
	}
	return out
}
