package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Backends of the startup-instructions section.
const (
	instrWithout = "without the library"
	instrEmpty   = "an empty preloaded .so"
	instrLibrary = "with libsecretheap.so"
)

// startupInstructions counts the instructions of `/bin/true` (no OpenSSL)
// from exec to exit with callgrind: without the library, with an empty .so
// preloaded (what the dynamic loader charges any preload) and with the
// library. Instruction counts repeat exactly for the same binaries and
// environment whatever else the machine does, so this row reads the
// library's own start-up cost where the hyperfine rows, on a noisy 2-CPU
// machine, cannot tell a few percent apart.
func (b *bench) startupInstructions() error {
	if _, err := run(time.Minute, cleanEnv(), "valgrind", "--version"); err != nil {
		b.note("start-up instruction counts skipped: valgrind not installed (apt-get install valgrind)")
		return nil
	}
	dir, err := os.MkdirTemp("", "benchreport-empty-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src, empty := filepath.Join(dir, "empty.c"), filepath.Join(dir, "empty.so")
	if err := os.WriteFile(src, []byte("void secretheap_bench_empty(void) {}\n"), 0o644); err != nil {
		return err
	}
	if _, err := run(time.Minute, cleanEnv(), ccName(), "-shared", "-fPIC", "-O2", "-o", empty, src); err != nil {
		return b.fail(err, "start-up instructions (empty .so)")
	}
	for _, c := range []struct{ backend, preload string }{
		{instrWithout, ""}, {instrEmpty, empty}, {instrLibrary, b.lib},
	} {
		env := cleanEnv()
		if c.preload != "" {
			// valgrind passes LD_PRELOAD on to the program with its own
			// preloads added in front.
			env = append(env, "LD_PRELOAD="+c.preload)
		}
		n, err := callgrind(env, filepath.Join(dir, "callgrind.out"), "/bin/true")
		if err != nil {
			return b.fail(err, "start-up instructions ("+c.backend+")")
		}
		b.add(Sample{Section: "startup-instructions", Workload: "/bin/true (no OpenSSL), exec to exit", Backend: c.backend,
			Round: 1, Value: float64(n), Unit: "instructions (callgrind)"})
	}
	return nil
}

// callgrind runs argv under callgrind and returns the instructions it
// executed: the "totals:" line of callgrind's output file (its
// machine-readable format), one process only.
func callgrind(env []string, outFile string, argv ...string) (int64, error) {
	args := append([]string{"--tool=callgrind", "--callgrind-out-file=" + outFile}, argv...)
	if _, err := run(2*time.Minute, env, "valgrind", args...); err != nil {
		return 0, err
	}
	defer os.Remove(outFile)
	data, err := os.ReadFile(outFile)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "totals:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no totals line", outFile)
}
