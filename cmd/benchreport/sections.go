package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func isSelfCheck(err error) bool { return errors.Is(err, errSelfCheck) }

// cBackend is one allocator measured by bench/c/allocbench.
type cBackend struct {
	id      string // allocbench's name
	label   string // in tables and charts
	preload bool   // needs LD_PRELOAD=libsecretheap.so
}

var cBackends = []cBackend{
	{"glibc", "glibc", false},
	{"openssl", "OPENSSL_malloc", false},
	{"secure", "OpenSSL secure heap", false},
	{"sodium", "sodium_malloc", false},
	{"memfd", "memfd_secret/alloc", false},
	{"secretheap", "secretheap C API", true},
	{"preload", "OPENSSL_malloc+secretheap", true},
}

// Baselines of each section: ratios are taken against these.
var baselines = map[string]string{
	"c-alloc":              "glibc",
	"c-alloc-cpu":          "glibc",
	"go-alloc":             "make",
	"tls-inproc":           "OpenSSL",
	"tls-tcp":              "OpenSSL",
	"startup":              "without the library",
	"openssl-suite":        "without the library",
	"startup-instructions": "without the library",
	"fork":                 "glibc",
	"fork-cost":            "commit fresh",
}

// cflags follow the root Makefile's CFLAGS_COMMON with -O2.
var cflags = []string{"-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2"}

// compileC builds one bench/c program into dir.
func compileC(root, dir, name string, libs ...string) (string, error) {
	out := filepath.Join(dir, name)
	args := append(append([]string{}, cflags...), "-I", filepath.Join(root, "cshim", "include"), "-o", out,
		filepath.Join(root, "bench", "c", name+".c"))
	args = append(args, libs...)
	if _, err := run(2*time.Minute, cleanEnv(), ccName(), args...); err != nil {
		return "", fmt.Errorf("compile %s: %w", name, err)
	}
	return out, nil
}

func (b *bench) build() error {
	if err := os.MkdirAll(b.bin, 0o755); err != nil {
		return err
	}
	if _, err := compileC(b.cfg.root, b.bin, "allocbench", "-lcrypto", "-lsodium", "-lpthread", "-ldl"); err != nil {
		return err
	}
	if _, err := compileC(b.cfg.root, b.bin, "tlsbench", "-lssl", "-lcrypto", "-lpthread", "-ldl"); err != nil {
		return err
	}
	lib := filepath.Join(b.cfg.root, "build", "libsecretheap.so")
	if _, err := os.Stat(lib); err == nil {
		b.lib = lib
		b.machine.Library = lib
	} else {
		b.note("build/libsecretheap.so not built: the library's C rows (secretheap C API, OPENSSL_malloc+secretheap, TLS and start-up with the library) are missing")
	}
	out, err := run(5*time.Minute, cleanEnv(), "go", "build", "-o", filepath.Join(b.bin, "goprobe"), "./bench/go/probe")
	if err != nil {
		b.note("Go probe not built (first use and locked memory of the Go allocators missing): %v %s", err, out)
	}
	return nil
}

// env for a C child; preload adds the library.
func (b *bench) env(preload bool, extra ...string) []string {
	if preload {
		extra = append(extra, "LD_PRELOAD="+b.lib)
	}
	return cleanEnv(extra...)
}

func (b *bench) budgetMS() int {
	if b.cfg.quick {
		return 20
	}
	return 100
}

// rotate returns the backends in the order of round r (each round starts one
// further along, so no backend always runs first on a cold machine).
func rotate[T any](xs []T, r int) []T {
	out := make([]T, 0, len(xs))
	for i := range xs {
		out = append(out, xs[(i+r)%len(xs)])
	}
	return out
}

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

func (b *bench) tlsSecs() float64 {
	if b.cfg.quick {
		return 0.3
	}
	return 2
}

func (b *bench) tls() error {
	variants := []variant{{"OpenSSL", false}}
	if b.lib != "" {
		variants = append(variants, variant{"OpenSSL+secretheap", true})
	}
	tlsbench := filepath.Join(b.bin, "tlsbench")
	secs := fmt.Sprintf("%g", b.tlsSecs())
	// In-process handshakes.
	for r := 1; r <= b.cfg.rounds; r++ {
		for _, v := range rotate(variants, r-1) {
			b.prog.step("TLS in-process round %d/%d: %s", r, b.cfg.rounds, v.label)
			recs, ok, err := b.records("TLS in-process "+v.label, 1, 2*time.Minute, b.env(v.preload), tlsbench, "inproc", "-s", secs)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			rate, _ := recs[0].Num("rate")
			b.add(Sample{Section: "tls-inproc", Workload: "full handshake (in-process), per wall second", Backend: v.label,
				Round: r, Value: rate, Unit: "handshakes/s"})
			if c, ok := recs[0].Num("cpu_rate"); ok {
				b.add(Sample{Section: "tls-inproc", Workload: "full handshake (in-process), per CPU second", Backend: v.label,
					Round: r, Value: c, Unit: "handshakes/s"})
			}
		}
	}
	// Committed secret memory after 100 handshakes ÷ peak live OpenSSL bytes.
	b.prog.step("TLS memory: peak live OpenSSL bytes")
	out, err := run(2*time.Minute, b.env(false), tlsbench, "inproc", "-n", "100", "--count")
	var peak float64
	if err == nil {
		if recs, perr := ParseRecords(out); perr == nil && len(recs) == 1 {
			peak, _ = recs[0].Num("peak_live_bytes")
			b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: peak live OpenSSL bytes (no library)",
				Backend: "OpenSSL", Round: 1, Value: peak, Unit: "bytes"})
		}
	} else if err := b.fail(err, "TLS peak live bytes"); err != nil {
		return err
	}
	b.prog.step("TLS memory: committed under the library")
	if b.lib != "" {
		out, err := run(2*time.Minute, b.env(true), tlsbench, "inproc", "-n", "100")
		if err == nil {
			if recs, perr := ParseRecords(out); perr == nil && len(recs) == 1 {
				c, _ := recs[0].Num("bytes_committed")
				b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: committed secret bytes",
					Backend: "OpenSSL+secretheap", Round: 1, Value: c, Unit: "bytes"})
				if peak > 0 {
					b.add(Sample{Section: "memory", Workload: "TLS in-process, 100 handshakes: committed ÷ peak live OpenSSL bytes",
						Backend: "OpenSSL+secretheap", Round: 1, Value: c / peak, Unit: "ratio"})
				}
			}
		} else if err := b.fail(err, "TLS committed bytes"); err != nil {
			return err
		}
	}
	return b.tlsTCP(variants)
}

// serverPath finds the forking example server: built by make, else compiled
// here from examples/openssl/tls_server.c (not edited, only built).
func (b *bench) serverPath() (string, error) {
	p := filepath.Join(b.cfg.root, "build", "tls_server")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	src := filepath.Join(b.cfg.root, "examples", "openssl", "tls_server.c")
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("examples/openssl/tls_server.c not present")
	}
	p = filepath.Join(b.bin, "tls_server")
	args := append(append([]string{}, cflags...), "-o", p, src, "-lssl", "-lcrypto")
	if _, err := run(2*time.Minute, cleanEnv(), ccName(), args...); err != nil {
		return "", err
	}
	return p, nil
}

const tcpWorkers = 4

func (b *bench) tlsTCP(variants []variant) error {
	rounds := min(b.cfg.rounds, 3)
	server, err := b.serverPath()
	if err != nil {
		b.note("forking TLS server benchmark skipped: %v", err)
		b.prog.done += rounds * 2
		return nil
	}
	dir, err := os.MkdirTemp("", "benchreport-tls")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := run(time.Minute, cleanEnv(), filepath.Join(b.bin, "tlsbench"), "gencert", dir); err != nil {
		return err
	}
	secs := b.tlsSecs() + 1
	for r := 1; r <= rounds; r++ {
		for _, v := range rotate(variants, r-1) {
			b.prog.step("TLS forking server round %d/%d: %s", r, rounds, v.label)
			rate, slow, err := b.oneTCPRun(server, dir, v.preload, secs)
			if err != nil {
				if err := b.fail(err, "TLS forking server "+v.label); err != nil {
					return err
				}
				continue
			}
			b.add(Sample{Section: "tls-tcp", Workload: fmt.Sprintf("full handshake, forking server (%d workers) over 127.0.0.1", tcpWorkers),
				Backend: v.label, Round: r, Value: rate, Unit: "handshakes/s"})
			if slow > 0 {
				b.note("TLS forking server round %d, %s: %d connection(s) took over 200 ms (a worker or the client not scheduled, or a SYN retransmitted): the round's rate is depressed",
					r, v.label, slow)
			}
		}
	}
	return nil
}

// oneTCPRun starts the server (library preloaded or not), drives it with
// tlsbench client (never preloaded) for secs, and stops it.
func (b *bench) oneTCPRun(server, dir string, preload bool, secs float64) (rate float64, slow int, err error) {
	cmd := exec.Command(server, "-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-port", "0", "-workers", strconv.Itoa(tcpWorkers))
	cmd.Env = b.env(preload)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	portc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var p int
			if _, err := fmt.Sscanf(sc.Text(), "port %d", &p); err == nil {
				portc <- p
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var port int
	select {
	case port = <-portc:
	case <-time.After(15 * time.Second):
		return 0, 0, fmt.Errorf("server printed no port: %s", stderr.String())
	}
	out, err := run(time.Duration(secs*float64(time.Second))+time.Minute, b.env(false),
		filepath.Join(b.bin, "tlsbench"), "client", "-p", strconv.Itoa(port),
		"-ca", filepath.Join(dir, "cert.pem"), "-s", fmt.Sprintf("%g", secs), "-j", "2", "-n", "20000")
	if err != nil {
		return 0, 0, fmt.Errorf("%w (server: %s)", err, stderr.String())
	}
	recs, err := ParseRecords(out)
	if err != nil || len(recs) != 1 {
		return 0, 0, fmt.Errorf("client output %q: %v", out, err)
	}
	rate, _ = recs[0].Num("rate")
	s, _ := recs[0].Num("slow")
	return rate, int(s), nil
}

// startup: process start-up and exit with and without the library
// preloaded, by hyperfine, side by side in each round: `openssl version`
// (libcrypto linked: the library starts and hooks it) and /bin/true (no
// OpenSSL: the library must cost next to nothing, goal ≤ 1.05×). Also the
// address space of a process without OpenSSL (VmSize: no arena reserved).
func (b *bench) startup() error {
	runs := "40"
	if b.cfg.quick {
		runs = "10"
	}
	if b.lib == "" {
		b.note("start-up with the library skipped: library not built")
		b.prog.done += b.cfg.rounds + 1
		return nil
	}
	// The library must really be in `openssl version`, and hook it.
	b.prog.step("start-up: check the library loads into openssl")
	chk, err := run(time.Minute, b.env(true, "SECRETHEAP_STATS=stderr", "SECRETHEAP_VERBOSE=1"),
		"sh", "-c", "openssl version 2>&1 >/dev/null")
	if err != nil || !strings.Contains(chk, "secretheap") {
		return b.fail(fmt.Errorf("%w: libsecretheap.so printed nothing in `openssl version` (%v): %q", errSelfCheck, err, chk), "start-up")
	}
	for _, preload := range []bool{false, true} {
		out, err := run(time.Minute, b.env(preload), "cat", "/proc/self/status")
		if err != nil {
			return b.fail(err, "start-up (VmSize)")
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmSize:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				b.add(Sample{Section: "startup", Workload: "cat (no OpenSSL): VmSize", Backend: startupLabel(preload),
					Round: 1, Value: kb / 1024, Unit: "MiB"})
			}
		}
	}
	tmp, err := os.CreateTemp("", "hyperfine-*.json")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	type cmdName struct{ cmd, name string }
	var cmds []cmdName
	for _, prog := range []struct{ name, argv string }{{"openssl version", "openssl version"}, {"/bin/true", "/bin/true"}} {
		cmds = append(cmds, cmdName{"env " + prog.argv, prog.name},
			cmdName{"env LD_PRELOAD=" + b.lib + " " + prog.argv, prog.name})
	}
	b.prog.step("start-up: instructions under callgrind")
	if err := b.startupInstructions(); err != nil {
		return err
	}
	for r := 1; r <= b.cfg.rounds; r++ {
		b.prog.step("start-up round %d/%d (hyperfine)", r, b.cfg.rounds)
		args := []string{"-N", "--style", "none", "--warmup", "5", "--runs", runs, "--export-json", tmp.Name()}
		for i := range cmds { // alternate the order between rounds
			j := i
			if r%2 == 0 {
				j = len(cmds) - 1 - i
			}
			args = append(args, cmds[j].cmd)
		}
		if _, err := run(5*time.Minute, cleanEnv(), "hyperfine", args...); err != nil {
			if err := b.fail(err, "start-up (hyperfine)"); err != nil {
				return err
			}
			return nil
		}
		res, err := parseHyperfine(tmp.Name())
		if err != nil {
			return err
		}
		for _, c := range cmds {
			t, ok := res[c.cmd]
			if !ok {
				continue
			}
			label := startupLabel(strings.Contains(c.cmd, "LD_PRELOAD"))
			b.add(Sample{Section: "startup", Workload: c.name + ": wall time (hyperfine median)", Backend: label,
				Round: r, Value: t.median * 1e3, Unit: "ms"})
			b.add(Sample{Section: "startup", Workload: c.name + ": CPU time, user + system (hyperfine mean)", Backend: label,
				Round: r, Value: (t.user + t.system) * 1e3, Unit: "ms"})
		}
	}
	return nil
}

// startupLabel names the start-up section's two columns.
func startupLabel(preload bool) string {
	if preload {
		return "with libsecretheap.so"
	}
	return "without the library"
}

// hyperTimes are one command's times from hyperfine, in seconds.
type hyperTimes struct{ median, user, system float64 }

// parseHyperfine returns command → times from --export-json.
func parseHyperfine(path string) (map[string]hyperTimes, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Results []struct {
			Command string  `json:"command"`
			Median  float64 `json:"median"`
			User    float64 `json:"user"`
			System  float64 `json:"system"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("hyperfine JSON: %w", err)
	}
	out := map[string]hyperTimes{}
	for _, r := range doc.Results {
		out[r.Command] = hyperTimes{r.Median, r.User, r.System}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("hyperfine JSON has no results")
	}
	return out, nil
}
