package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/stats"
)

// Memory: locked memory per secret, direct-map splits and 2 MiB frames
// touched, and the committed secret memory of openssl s_server.

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
		if err := b.lockedRows("C", be.label, b.env(be.preload), filepath.Join(b.bin, "allocbench"), be.id); err != nil {
			return err
		}
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
		if err := b.lockedRows("Go", be, cleanEnv(), probe, be); err != nil {
			return err
		}
	}
	return nil
}

// lockedRows runs `prog locked backend N` in a fresh process (allocbench for
// C, the Go probe for Go) and adds its locked bytes per secret and the
// direct-map splits it caused. A backend that cannot run here is skipped.
func (b *bench) lockedRows(lang, label string, env []string, prog, backend string) error {
	before := splits(vmstat())
	recs, ok, err := b.records(lang+" locked memory "+label, 1, 5*time.Minute, env, prog, "locked", backend, strconv.Itoa(lockedN))
	after := splits(vmstat())
	if err != nil || !ok {
		return err
	}
	v, _ := recs[0].Num("bytes_per_secret")
	b.add(Sample{Section: "locked", Workload: fmt.Sprintf("%s: VmLck ÷ %d live 32-B secrets", lang, lockedN),
		Backend: label, Round: 1, Value: v, Unit: "B/secret"})
	b.add(Sample{Section: "splits", Workload: fmt.Sprintf("%s: direct-map splits while allocating %d 32-B secrets", lang, lockedN),
		Backend: label, Round: 1, Value: float64(after - before), Unit: "splits"})
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
	srv, err := launch.SServer(context.Background(), launch.Options{CleanEnv: true, Env: []string{"LD_PRELOAD=" + preload, env}},
		launch.KeyPair{Key: filepath.Join(dir, "key.pem"), Cert: filepath.Join(dir, "cert.pem")},
		"-naccept", "100", "-rev", "-no_cache", "-num_tickets", "0")
	if err != nil {
		return err
	}
	defer srv.Stop()
	// The probe connection of before (it counts against -naccept).
	if c, err := net.Dial("tcp", srv.Addr()); err == nil {
		c.Close()
	}
	_, cerr := run(2*time.Minute, cleanEnv(), filepath.Join(b.bin, "tlsbench"), "client", "-p", strconv.Itoa(srv.Port),
		"-ca", filepath.Join(dir, "cert.pem"), "-n", "98", "-w", "0", "-j", "1", "-s", "60")
	if cerr != nil {
		return cerr
	}
	if err := srv.Wait(30 * time.Second); err != nil {
		return fmt.Errorf("s_server: %w (client: %v)", err, cerr)
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
