package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Fork: the cost of fork(2) in a process holding secret memory.

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
