package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/secretheap/secretheap/internal/launch"
)

// errSelfCheck marks a backend that did not do what it claims (exit status 3
// of a bench/c program): its numbers would be meaningless.
var errSelfCheck = errors.New("self-check failed")

// progress keeps one status line on stderr while the run goes on.
type progress struct {
	start       time.Time
	done, total int
	quiet       bool
}

func (p *progress) step(format string, args ...any) {
	p.done++
	if p.quiet {
		return
	}
	el := time.Since(p.start).Round(time.Second)
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 70 {
		msg = msg[:70]
	}
	fmt.Fprintf(os.Stderr, "\r\033[K[%3d/%3d %s] %s", p.done, p.total, el, msg)
}

func (p *progress) finish() {
	if !p.quiet {
		fmt.Fprintf(os.Stderr, "\r\033[Kdone in %s\n", time.Since(p.start).Round(time.Second))
	}
}

// cleanEnv is the environment for every child: ours minus LD_PRELOAD and
// SECRETHEAP_* (a user's settings must not leak into a baseline), plus extra.
func cleanEnv(extra ...string) []string {
	return launch.Options{CleanEnv: true, Env: extra}.Environ()
}

// run executes a command with a time limit and returns its stdout. Exit
// status 3 (a bench/c self-check) is wrapped in errSelfCheck.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 3 {
			return out.String(), fmt.Errorf("%w: %s %s: %s", errSelfCheck, name, strings.Join(args, " "), msg)
		}
		if ctx.Err() != nil {
			return out.String(), fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// vmstat reads the direct-map counters of /proc/vmstat (system-wide and, for
// splits, permanent: a page split once stays split).
func vmstat() map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], "direct_map_") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			out[f[0]] = v
		}
	}
	return out
}

// splits is the sum of level-2 and level-3 direct-map splits.
func splits(m map[string]int64) int64 {
	return m["direct_map_level2_splits"] + m["direct_map_level3_splits"]
}

// records runs a benchmark program and parses the JSON records it prints.
// A failed run goes to fail: ok is false when the caller should skip this
// measurement and go on, err is non-nil only when the whole run must stop
// (a self-check failed, or the program printed what it should not). want > 0
// asks for exactly that many records.
func (b *bench) records(what string, want int, timeout time.Duration, env []string, name string, args ...string) (recs []Record, ok bool, err error) {
	out, err := run(timeout, env, name, args...)
	if err != nil {
		return nil, false, b.fail(err, what)
	}
	recs, err = ParseRecords(out)
	if err == nil && want > 0 && len(recs) != want {
		err = fmt.Errorf("%d records, want %d", len(recs), want)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %s output %q: %w", what, filepath.Base(name), out, err)
	}
	return recs, true, nil
}
