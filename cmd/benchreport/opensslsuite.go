package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// suiteModes are the runs of the openssl-suite section, baseline first:
// OpenSSL's own tests without the library, and with it in each
// SECRETHEAP_OPENSSL mode.
var suiteModes = []string{"none", "all", "secure"}

// suiteLabel names a run's column.
func suiteLabel(mode string) string {
	if mode == "none" {
		return "without the library"
	}
	return "SECRETHEAP_OPENSSL=" + mode
}

// opensslSuite: the CPU time (user + system of every process) of OpenSSL's
// own test suite, the CI subset (opensslsuite/ci-tests.txt), against the
// Debian-linked OpenSSL build that opensslsuite/build.sh caches, without the
// library and with it in modes all and secure, side by side in each round.
// The suite is the largest real OpenSSL workload the project runs, so its
// CPU ratio is what the library costs a program that does little besides
// OpenSSL (goal: within 5 %). A recipe that fails in a run is noted: the
// correctness verdict belongs to `make openssl-suite`, not to this section.
func (b *bench) opensslSuite() error {
	if b.lib == "" {
		b.note("openssl-suite skipped: library not built")
		return nil
	}
	tests, err := readSuiteTests(filepath.Join(b.cfg.root, "opensslsuite", "ci-tests.txt"))
	if err != nil {
		return b.fail(err, "openssl-suite")
	}
	rounds := b.suiteRounds()
	if b.cfg.quick {
		// A smoke run: three recipes that still reach engines, the secure
		// heap and SSL.
		tests = []string{"test_engine", "test_secmem", "test_sslapi"}
	}
	cache := os.Getenv("SECRETHEAP_OPENSSL_CACHE")
	if cache == "" {
		cache = "/var/cache/secretheap-openssl"
	}
	if _, err := os.Stat(filepath.Join(cache, "debian", ".built")); err != nil {
		if b.cfg.quick {
			b.note("openssl-suite skipped in -quick: OpenSSL is not built in %s (make openssl-suite builds it once)", cache)
			return nil
		}
		b.prog.step("openssl-suite: building OpenSSL once into %s (opensslsuite/build.sh)", cache)
		if _, err := run(90*time.Minute, cleanEnv(), filepath.Join(b.cfg.root, "opensslsuite", "build.sh")); err != nil {
			return b.fail(err, "openssl-suite (build)")
		}
	}
	out, err := os.MkdirTemp("", "benchreport-opensslsuite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	listed, err := readSuiteExceptions(filepath.Join(b.cfg.root, "opensslsuite", "exceptions.txt"))
	if err != nil {
		return b.fail(err, "openssl-suite")
	}
	noted := map[string]bool{} // one note per failing recipe and mode, not per round
	defer func() {
		for _, n := range slices.Sorted(maps.Keys(noted)) {
			b.note("%s", n)
		}
	}()
	for r := 1; r <= rounds; r++ {
		for i := range suiteModes {
			mode := suiteModes[(i+r-1)%len(suiteModes)] // rotate the order between rounds
			b.prog.step("openssl-suite round %d/%d: %s (%d recipes)", r, rounds, suiteLabel(mode), len(tests))
			name := filepath.Join(out, fmt.Sprintf("r%d", r))
			env := cleanEnv("STYLES=debian", "MODES="+mode, "OUT="+name, "LIB="+b.lib)
			// run.sh exits 1 only on a regression against a "none" run in
			// the same directory; each mode has a directory of its own, so a
			// non-zero exit is a broken run.
			if _, err := run(30*time.Minute, env, filepath.Join(b.cfg.root, "opensslsuite", "run.sh"), tests...); err != nil {
				if err := b.fail(err, "openssl-suite ("+mode+")"); err != nil {
					return err
				}
				continue
			}
			cpu, failed, err := readSuiteRun(filepath.Join(name, "debian-"+mode))
			if err != nil {
				return b.fail(err, "openssl-suite ("+mode+")")
			}
			for _, f := range failed {
				why := "not a listed exception: run make openssl-suite"
				if listed[f+"\t"+mode] {
					why = "a listed exception, opensslsuite/exceptions.txt"
				}
				noted[fmt.Sprintf("openssl-suite, %s: %s failed (%s)", suiteLabel(mode), f, why)] = true
			}
			b.add(Sample{Section: "openssl-suite", Workload: fmt.Sprintf("OpenSSL's test suite, %d recipes (Debian link style): CPU time, user + system of every process", len(tests)),
				Backend: suiteLabel(mode), Round: r, Value: cpu, Unit: "s"})
		}
	}
	return nil
}

// suiteRounds: a round is three suite runs of about 45 s of CPU each, so
// three rounds at most (one with -quick).
func (b *bench) suiteRounds() int {
	if b.cfg.quick {
		return 1
	}
	return min(b.cfg.rounds, 3)
}

// readSuiteTests reads opensslsuite/ci-tests.txt: one recipe a line, '#'
// comments.
func readSuiteTests(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var tests []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" && !strings.HasPrefix(t, "#") {
			tests = append(tests, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("%s lists no recipe", path)
	}
	return tests, nil
}

// readSuiteExceptions reads opensslsuite/exceptions.txt (recipe, link
// style or *, mode or *, reason; tab-separated) into the set of "recipe<TAB>mode"
// excused for the Debian link style.
func readSuiteExceptions(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 4 || strings.HasPrefix(line, "#") || (f[1] != "debian" && f[1] != "*") {
			continue
		}
		for _, mode := range suiteModes {
			if f[2] == mode || f[2] == "*" {
				set[f[0]+"\t"+mode] = true
			}
		}
	}
	return set, nil
}

// readSuiteRun reads what run.sh wrote for one run: <base>.cpu ("user
// system rc", seconds) and <base>.tsv (recipe, ok|skipped|failed).
func readSuiteRun(base string) (cpu float64, failed []string, err error) {
	b, err := os.ReadFile(base + ".cpu")
	if err != nil {
		return 0, nil, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return 0, nil, fmt.Errorf("%s.cpu: want \"user system rc\", got %q", base, b)
	}
	user, err1 := strconv.ParseFloat(f[0], 64)
	sys, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		return 0, nil, fmt.Errorf("%s.cpu: %q", base, b)
	}
	tsv, err := os.ReadFile(base + ".tsv")
	if err != nil {
		return 0, nil, err
	}
	ran := 0
	for _, line := range strings.Split(strings.TrimSpace(string(tsv)), "\n") {
		if fields := strings.Split(line, "\t"); len(fields) == 2 {
			ran++
			if fields[1] == "failed" {
				failed = append(failed, fields[0])
			}
		}
	}
	if ran == 0 {
		return 0, nil, fmt.Errorf("%s.tsv: no recipe ran (see %s.log)", base, base)
	}
	return user + sys, failed, nil
}
