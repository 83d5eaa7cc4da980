package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/secretheap/secretheap/internal/stats"
)

// variant is one side of a with/without-the-library comparison.
type variant struct {
	label   string
	preload bool
}

// goProbeBackends are measured by bench/go/probe in fresh processes.
var goProbeBackends = []string{"make", "memguard", "alloc"}

const lockedN = 10000

// memory: locked memory per 32-byte secret, and the direct-map splits each
// allocator causes (system-wide counters; splits are permanent, so a backend
// that runs after another may find the direct map already split).
func (b *bench) memory() error {
	for _, be := range cBackends {
		b.prog.step("memory: locked bytes per 32-B secret, %s", be.label)
		if be.id == "preload" || (be.preload && b.lib == "") {
			continue // same allocator as "secretheap"
		}
		before := splits(vmstat())
		recs, ok, err := b.records("locked memory "+be.label, 1, 5*time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"),
			"locked", be.id, strconv.Itoa(lockedN))
		after := splits(vmstat())
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		v, _ := recs[0].Num("bytes_per_secret")
		b.add(Sample{Section: "locked", Workload: fmt.Sprintf("C: VmLck ÷ %d live 32-B secrets", lockedN),
			Backend: be.label, Round: 1, Value: v, Unit: "B/secret"})
		b.add(Sample{Section: "splits", Workload: fmt.Sprintf("C: direct-map splits while allocating %d 32-B secrets", lockedN),
			Backend: be.label, Round: 1, Value: float64(after - before), Unit: "splits"})
	}
	// Committed ÷ live requested bytes at the end of churn, each in a fresh
	// process (the committed frontier never shrinks, so it is also the peak).
	for _, be := range cBackends {
		if !be.preload || b.lib == "" {
			continue
		}
		for _, th := range []string{"1", "2"} {
			b.prog.step("memory: churn committed ÷ live, %s, %s thread(s)", be.label, th)
			recs, ok, err := b.records("churn memory "+be.label, 0, 5*time.Minute, b.env(true), filepath.Join(b.bin, "allocbench"),
				"time", be.id, "-w", "churn", "-t", th, "-m", strconv.Itoa(b.budgetMS()))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			for _, rec := range recs {
				c, _ := rec.Num("committed_bytes")
				q, _ := rec.Num("requested_bytes")
				if rec.Str("kind") == "stats" && q > 0 {
					b.add(Sample{Section: "memory", Workload: fmt.Sprintf("C churn, %s thread(s): committed ÷ live requested bytes", th),
						Backend: be.label, Round: 1, Value: c / q, Unit: "ratio"})
				}
			}
		}
	}
	b.prog.step("memory: openssl s_server after 100 handshakes")
	if err := b.sserverMemory(); err != nil {
		if err := b.fail(err, "s_server memory"); err != nil {
			return err
		}
	}
	if err := b.frames(); err != nil {
		return err
	}
	probe := filepath.Join(b.bin, "goprobe")
	for _, be := range goProbeBackends {
		b.prog.step("memory: locked bytes per 32-B secret, Go %s", be)
		if _, err := os.Stat(probe); err != nil {
			continue
		}
		before := splits(vmstat())
		recs, ok, err := b.records("Go locked memory "+be, 1, 5*time.Minute, cleanEnv(), probe, "locked", be, strconv.Itoa(lockedN))
		after := splits(vmstat())
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		v, _ := recs[0].Num("bytes_per_secret")
		b.add(Sample{Section: "locked", Workload: fmt.Sprintf("Go: VmLck ÷ %d live 32-B secrets", lockedN),
			Backend: be, Round: 1, Value: v, Unit: "B/secret"})
		b.add(Sample{Section: "splits", Workload: fmt.Sprintf("Go: direct-map splits while allocating %d 32-B secrets", lockedN),
			Backend: be, Round: 1, Value: float64(after - before), Unit: "splits"})
	}
	return nil
}

// framesLive are the live amounts the frames section measures, in 4 KiB
// blocks: 1 MiB and 4 MiB, the range of a TLS process.
var framesLive = []int{256, 1024}

// frames: how many 2 MiB physical frames (direct-map entries split) the
// secret OS pages occupy with N live 4 KiB secrets, for secretheap and for
// one memfd_secret file per allocation, next to the ideal (pages ÷ 512).
// Needs root: pagemap hides frame numbers from everyone else.
func (b *bench) frames() error {
	if os.Geteuid() != 0 {
		b.note("frames: skipped (pagemap shows frame numbers to root only)")
		return nil
	}
	for _, n := range framesLive {
		for _, be := range cBackends {
			if be.id != "memfd" && be.id != "secretheap" || (be.preload && b.lib == "") {
				continue
			}
			b.prog.step("memory: 2 MiB frames, %d × 4 KiB live, %s", n, be.label)
			recs, ok, err := b.records("frames "+be.label, 1, 5*time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"),
				"frames", be.id, strconv.Itoa(n), "4096")
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			wl := fmt.Sprintf("%d MiB live in 4 KiB secrets", n*4096>>20)
			pages, _ := recs[0].Num("pages")
			frames, _ := recs[0].Num("frames")
			ideal, _ := recs[0].Num("ideal")
			b.add(Sample{Section: "frames", Workload: wl + ": secret OS pages", Backend: be.label, Round: 1, Value: pages, Unit: "pages"})
			b.add(Sample{Section: "frames", Workload: wl + ": 2 MiB frames touched", Backend: be.label, Round: 1, Value: frames, Unit: "frames"})
			if be.id == "secretheap" {
				b.add(Sample{Section: "frames", Workload: wl + ": 2 MiB frames touched", Backend: "ideal (pages ÷ 512)", Round: 1, Value: ideal, Unit: "frames"})
			}
		}
	}
	return nil
}

// firstUse: the first allocation in a fresh process (C and Go), and a
// chunk's first fault-in.
func (b *bench) firstUse() error {
	reps := b.firstReps()
	probe := filepath.Join(b.bin, "goprobe")
	failed := map[string]bool{}
	for rep := 1; rep <= reps; rep++ {
		for _, be := range rotate(cBackends, rep-1) {
			if be.id == "preload" {
				continue
			}
			b.prog.step("first use %d/%d: %s", rep, reps, be.label)
			if failed[be.id] || (be.preload && b.lib == "") {
				continue
			}
			// The library's first allocation is measured with its OpenSSL
			// hooks off: with them on, OpenSSL's start-up allocations in the
			// constructor would make main's first call a warm one (the
			// whole-process time below carries the constructor's cost).
			t0 := time.Now()
			out, err := run(time.Minute, b.env(be.preload, "SECRETHEAP_OPENSSL=off"), filepath.Join(b.bin, "allocbench"), "first", be.id)
			wall := time.Since(t0)
			if err == nil && be.preload {
				t0 = time.Now()
				_, err = run(time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"), "first", be.id)
				wall = time.Since(t0)
			}
			if err != nil {
				failed[be.id] = true
				if err := b.fail(err, "first use "+be.label); err != nil {
					return err
				}
				continue
			}
			recs, err := ParseRecords(out)
			if err != nil || len(recs) != 1 {
				return fmt.Errorf("allocbench first output %q: %v", out, err)
			}
			setup, _ := recs[0].Num("setup_ns")
			first, _ := recs[0].Num("first_ns")
			b.add(Sample{Section: "first-use", Workload: "C: first 32-B allocation in a fresh process",
				Backend: be.label, Round: rep, Value: first / 1e3, Unit: "µs"})
			b.add(Sample{Section: "first-use", Workload: "C: backend set-up + first 32-B allocation",
				Backend: be.label, Round: rep, Value: (setup + first) / 1e3, Unit: "µs"})
			b.add(Sample{Section: "first-use", Workload: "C: whole process, exec → exit (wall, as seen by the parent)",
				Backend: be.label, Round: rep, Value: float64(wall.Microseconds()), Unit: "µs"})
		}
		for _, be := range rotate(goProbeBackends, rep-1) {
			b.prog.step("first use %d/%d: Go %s", rep, reps, be)
			if failed["go-"+be] {
				continue
			}
			if _, err := os.Stat(probe); err != nil {
				continue
			}
			recs, ok, err := b.records("Go first use "+be, 1, time.Minute, cleanEnv(), probe, "first", be)
			if err != nil {
				return err
			}
			if !ok {
				failed["go-"+be] = true
				continue
			}
			first, _ := recs[0].Num("first_ns")
			b.add(Sample{Section: "first-use", Workload: "Go: first 32-B allocation in a fresh process",
				Backend: be, Round: rep, Value: first / 1e3, Unit: "µs"})
		}
	}
	// A chunk's first fault-in.
	for rep := 1; rep <= reps; rep++ {
		b.prog.step("fault-in %d/%d", rep, reps)
		recs, ok, err := b.records("fault-in", 0, time.Minute, b.env(b.lib != ""), filepath.Join(b.bin, "allocbench"), "faultin")
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		for _, rec := range recs {
			get := func(k string) float64 { v, _ := rec.Num(k); return v / 1e3 }
			switch rec.Str("what") {
			case "raw":
				b.add(Sample{Section: "faultin", Workload: "2 MiB memfd_secret: memfd_secret+ftruncate+mmap", Backend: "kernel", Round: rep, Value: get("map_ns"), Unit: "µs"})
				b.add(Sample{Section: "faultin", Workload: "2 MiB memfd_secret: commit 512 OS pages (pread /dev/zero)", Backend: "kernel", Round: rep, Value: get("commit_ns"), Unit: "µs"})
				b.add(Sample{Section: "faultin", Workload: "2 MiB anonymous: mmap + touch 512 OS pages", Backend: "kernel", Round: rep, Value: get("anon_ns"), Unit: "µs"})
			case "secretheap":
				b.add(Sample{Section: "faultin", Workload: "secretheap: 448 × 4 KiB blocks in a fresh chunk (cold)", Backend: "secretheap C API", Round: rep, Value: get("cold_ns"), Unit: "µs"})
				b.add(Sample{Section: "faultin", Workload: "secretheap: the same 448 blocks again (warm)", Backend: "secretheap C API", Round: rep, Value: get("warm_ns"), Unit: "µs"})
			}
		}
	}
	return nil
}

// fork: fork → child ready with N MiB of live blocks, secret (re-privatised
// in the child) vs glibc malloc (copy-on-write); for secretheap also the
// parent's blocked time (fork() until it returns: the parent waits for the
// child's copy) against committing as many fresh secret pages in the same
// process (section fork-cost); and the torn-copy count with a thread
// rewriting a 4 KiB secret while the main thread forks (fork-tear).
func (b *bench) fork() error {
	rounds := min(b.cfg.rounds, 3)
	reps := "5"
	tearN := "100"
	if b.cfg.quick {
		reps = "2"
		tearN = "20"
	}
	vs := []cBackend{cBackends[0], cBackends[5]} // glibc, secretheap C API
	for r := 1; r <= rounds; r++ {
		for _, mib := range []int{1, 4, 16} {
			for _, be := range rotate(vs, r-1) {
				b.prog.step("fork round %d/%d: %d MiB %s", r, rounds, mib, be.label)
				if be.preload && b.lib == "" {
					continue
				}
				recs, ok, err := b.records("fork "+be.label, 1, 5*time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"),
					"fork", be.id, strconv.Itoa(mib), reps)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				rec := recs[0]
				if be.preload {
					if n, _ := rec.Num("reprivatised_chunks"); n == 0 {
						b.note("fork %d MiB: the child reported 0 re-privatised chunks (SECRETHEAP_FORK=copy not in effect?)", mib)
					}
				}
				b.add(Sample{Section: "fork", Workload: fmt.Sprintf("fork → child ready, %d MiB live in 4 KiB blocks", mib),
					Backend: be.label, Round: r, Value: median(rec.Nums("ns")) / 1e3, Unit: "µs"})
				if !be.preload {
					continue
				}
				wl := fmt.Sprintf("%d MiB live in 4 KiB blocks", mib)
				if c := rec.Nums("commit_ns"); len(c) > 0 && median(c) > 0 {
					b.add(Sample{Section: "fork-cost", Workload: wl, Backend: "commit fresh", Round: r, Value: median(c) / 1e3, Unit: "µs"})
					b.add(Sample{Section: "fork-cost", Workload: wl, Backend: "parent blocked", Round: r, Value: median(rec.Nums("parent_ns")) / 1e3, Unit: "µs"})
					b.add(Sample{Section: "fork-cost", Workload: wl, Backend: "child ready", Round: r, Value: median(rec.Nums("ns")) / 1e3, Unit: "µs"})
				}
			}
		}
		for _, be := range rotate(vs, r-1) {
			b.prog.step("fork tear round %d/%d: %s", r, rounds, be.label)
			if be.preload && b.lib == "" {
				continue
			}
			recs, ok, err := b.records("forktear "+be.label, 1, 5*time.Minute, b.env(be.preload), filepath.Join(b.bin, "allocbench"),
				"forktear", be.id, tearN)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			torn, _ := recs[0].Num("torn")
			n, _ := recs[0].Num("children")
			b.add(Sample{Section: "fork-tear", Workload: fmt.Sprintf("children whose copy of a 4 KiB secret matches no single instant (of %.0f)", n),
				Backend: be.label, Round: r, Value: torn, Unit: "children"})
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

// sserverMemory compares the committed secret memory of `openssl s_server`
// under the library after 100 full handshakes with the peak of live bytes
// OpenSSL asks for in the same workload, counted by examples/openssl's
// measuring preload build/ossl_peak.so (reused, not duplicated here).
func (b *bench) sserverMemory() error {
	peakSO := filepath.Join(b.cfg.root, "build", "ossl_peak.so")
	if b.lib == "" {
		return nil
	}
	if _, err := os.Stat(peakSO); err != nil {
		b.note("s_server memory skipped: build/ossl_peak.so (examples/openssl) not built")
		return nil
	}
	dir, err := os.MkdirTemp("", "benchreport-sserver")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tlsbench := filepath.Join(b.bin, "tlsbench")
	if _, err := run(time.Minute, cleanEnv(), tlsbench, "gencert", dir); err != nil {
		return err
	}
	peakOut, statsOut := filepath.Join(dir, "peak.json"), filepath.Join(dir, "stats.json")
	for _, v := range []struct{ preload, env string }{
		{peakSO, "OSSL_PEAK_OUT=" + peakOut},
		{b.lib, "SECRETHEAP_STATS=json:" + statsOut},
	} {
		if err := b.sserver100(dir, v.preload, v.env); err != nil {
			return err
		}
	}
	peakTxt, err := os.ReadFile(peakOut)
	if err != nil {
		return fmt.Errorf("ossl_peak.so wrote nothing: %w", err)
	}
	statsTxt, err := os.ReadFile(statsOut)
	if err != nil {
		return fmt.Errorf("libsecretheap.so wrote no stats: %w", err)
	}
	peak, committed := parsePeak(string(peakTxt)), parseCommitted(string(statsTxt))
	if peak <= 0 || committed <= 0 {
		return fmt.Errorf("s_server memory: peak %v, committed %v (peak file %q)", peak, committed, peakTxt)
	}
	const wl = "openssl s_server, 100 handshakes: "
	b.add(Sample{Section: "memory", Workload: wl + "peak live OpenSSL bytes (no library, ossl_peak.so)", Backend: "OpenSSL", Round: 1, Value: peak, Unit: "bytes"})
	b.add(Sample{Section: "memory", Workload: wl + "committed secret bytes at exit", Backend: "OpenSSL+secretheap", Round: 1, Value: committed, Unit: "bytes"})
	b.add(Sample{Section: "memory", Workload: wl + "committed ÷ peak live OpenSSL bytes", Backend: "OpenSSL+secretheap", Round: 1, Value: committed / peak, Unit: "ratio"})
	return nil
}

// sserver100 runs `openssl s_server -naccept 100` with a preload and drives
// it with 100 connections: one probe that the port is up, then tlsbench's
// checked first connection and 98 more.
func (b *bench) sserver100(dir, preload, env string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("openssl", "s_server", "-accept", fmt.Sprintf("127.0.0.1:%d", port),
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-tls1_3", "-naccept", "100", "-rev", "-no_cache", "-num_tickets", "0")
	cmd.Env = cleanEnv("LD_PRELOAD="+preload, env)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	up := false
	for i := 0; i < 100 && !up; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			up = true
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !up {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("s_server did not listen on %d", port)
	}
	_, cerr := run(2*time.Minute, cleanEnv(), filepath.Join(b.bin, "tlsbench"), "client", "-p", strconv.Itoa(port),
		"-ca", filepath.Join(dir, "cert.pem"), "-n", "98", "-w", "0", "-j", "1", "-s", "60")
	select {
	case err := <-done:
		if cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("s_server: %w", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("s_server did not exit after 100 connections (client: %v)", cerr)
	}
	return nil
}

// parsePeak reads ossl_peak.so's JSON line, {"openssl_peak_live_bytes":N,
// …} (0 if absent or unreadable).
func parsePeak(s string) float64 {
	var v struct {
		Peak float64 `json:"openssl_peak_live_bytes"`
	}
	if json.Unmarshal([]byte(strings.TrimSpace(s)), &v) != nil {
		return 0
	}
	return v.Peak
}

// parseCommitted reads committed_bytes of the library's last JSON stats
// report (the process's final one; internal/stats has the keys); 0 if there
// is none.
func parseCommitted(s string) float64 {
	r, err := stats.ReadLast([]byte(s))
	if err != nil {
		return 0
	}
	return float64(r.Values["committed_bytes"])
}
