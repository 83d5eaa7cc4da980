package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/secretheap/secretheap/internal/procfs"
)

// Start-up cost of OpenSSL commands with and without the library (hyperfine).

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
		if size, err := procfs.StatusKB([]byte(out), "VmSize"); err == nil {
			b.add(Sample{Section: "startup", Workload: "cat (no OpenSSL): VmSize", Backend: startupLabel(preload),
				Round: 1, Value: float64(size) / (1 << 20), Unit: "MiB"})
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
