package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Allocation speed: the C allocators (bench/c/allocbench) and the Go
// micro-benchmarks of alloc/ and bench/go.

func (b *bench) cAlloc() error {
	skip := map[string]bool{}
	for r := 1; r <= b.cfg.rounds; r++ {
		for _, be := range rotate(cBackends, r-1) {
			b.prog.step("C alloc round %d/%d: %s", r, b.cfg.rounds, be.label)
			if skip[be.id] || (be.preload && b.lib == "") {
				continue
			}
			recs, ok, err := b.records("C alloc "+be.label, 0, 5*time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"),
				"time", be.id, "-m", strconv.Itoa(b.budgetMS()), "-t", "1,2")
			if err != nil {
				return err
			}
			if !ok {
				skip[be.id] = true
				continue
			}
			for _, rec := range recs {
				th, _ := rec.Num("threads")
				switch rec.Str("kind") {
				case "time":
					v, _ := rec.Num("ns_per_op")
					b.add(Sample{Section: "c-alloc", Workload: rec.Str("workload"), Threads: int(th),
						Backend: be.label, Round: r, Value: v, Unit: "ns/op"})
					if c, ok := rec.Num("cpu_ns_per_op"); ok {
						b.add(Sample{Section: "c-alloc-cpu", Workload: rec.Str("workload"), Threads: int(th),
							Backend: be.label, Round: r, Value: c, Unit: "CPU ns/op"})
					}
				}
				// "stats" records are ignored here: this process ran the
				// pair workloads first, whose commits stay. memory()
				// measures churn in fresh processes.
			}
		}
	}
	return nil
}

// goBenchPattern selects the alloc/ and bench/go benchmarks that are timed
// loops. alloc's first-use benchmarks are left out: the first allocation is
// measured by bench/go/probe in fresh processes, and
// BenchmarkFirstAllocFreshProcess stops its timer for the whole loop, so
// testing's b.N prediction sees ~0 ns per op and grows b.N without bound.
const goBenchPattern = "^Benchmark(AllocFree|AllocFreeParallel|Churn|NaiveAllocFree|NaiveAllocFreeParallel|MemguardAllocFreeParallel|ChurnBaselines|Secret)$"

// goBench runs the Go micro-benchmarks of alloc/ and bench/go, one `go test`
// per round (both packages, one after the other, -p 1 so they never overlap).
func (b *bench) goBench() error {
	benchtime := "300ms"
	if b.cfg.quick {
		benchtime = "30ms"
	}
	pkgs := []string{}
	for _, p := range []string{"./alloc", "./bench/go"} {
		if matches, _ := filepath.Glob(filepath.Join(b.cfg.root, p, "*_test.go")); len(matches) > 0 {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		b.note("Go benchmarks skipped: no test files in alloc/ or bench/go")
		b.prog.done += b.cfg.rounds
		return nil
	}
	for r := 1; r <= b.cfg.rounds; r++ {
		b.prog.step("Go benchmarks round %d/%d", r, b.cfg.rounds)
		args := append([]string{"test", "-run", "^$", "-bench", goBenchPattern, "-benchtime", benchtime, "-count", "1", "-p", "1"}, pkgs...)
		out, err := run(15*time.Minute, cleanEnv(), "go", args...)
		if err != nil {
			if err := b.fail(err, "Go benchmarks"); err != nil {
				return err
			}
			return nil
		}
		res, err := ParseGoBench(out)
		if err != nil {
			return err
		}
		for _, gb := range res {
			sec, wl, be, th := goName(gb.Name, gb.Procs)
			if sec == "first-use" {
				b.add(Sample{Section: sec, Workload: wl, Backend: be, Round: r, Value: gb.Metrics["ns/op"] / 1e3, Unit: "µs"})
				continue
			}
			b.add(Sample{Section: sec, Workload: wl, Threads: th, Backend: be, Round: r,
				Value: gb.Metrics["ns/op"], Unit: "ns/op"})
			for unit, v := range gb.Metrics {
				if strings.Contains(unit, "/live") {
					b.add(Sample{Section: "memory", Workload: fmt.Sprintf("Go %s, %d goroutine(s): %s", wl, th, unit),
						Backend: be, Round: r, Value: v, Unit: "ratio"})
				}
			}
		}
	}
	return nil
}
