package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// First use: the first allocation in a fresh process, C and Go.

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
