package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/launch"
	shstats "github.com/secretheap/secretheap/internal/stats"
	"github.com/secretheap/secretheap/internal/testutil"
)

// cmdTimeout bounds every command a test runs: a hung handshake must fail the
// test, not the whole `go test` run.
const cmdTimeout = 30 * time.Second

// setup checks what every test here needs and returns the library's path:
// build/libsecretheap.so, or the file SECRETHEAP_E2E_LIBRARY names (to show
// that a test fails on another build, e.g. an older commit's library).
func setup(t *testing.T) string {
	t.Helper()
	testutil.RequireSecretMem(t)
	lib := os.Getenv("SECRETHEAP_E2E_LIBRARY")
	if lib == "" {
		lib = testutil.Built(t, "libsecretheap.so")
	}
	testutil.LookTool(t, "openssl", "openssl")
	return lib
}

// env builds a child environment: ours minus every SECRETHEAP_* and
// LD_PRELOAD variable (so the developer's shell cannot change a result), plus
// the given KEY=value pairs. lib == "" runs without the library.
func env(lib string, kv ...string) []string {
	return launch.Options{CleanEnv: true, Library: lib, Env: kv}.Environ()
}

// result is what a finished command left behind.
type result struct {
	stdout, stderr string
	err            error // nil, or *exec.ExitError, or a start error
}

// signaled reports whether the process died of a signal (a crash).
func (r result) signaled() (syscall.Signal, bool) {
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal(), true
		}
	}
	return 0, false
}

// run runs a command to completion with a timeout.
func run(t *testing.T, environ []string, stdin string, name string, args ...string) result {
	t.Helper()
	return runAs(t, environ, stdin, nil, name, args...)
}

func runAs(t *testing.T, environ []string, stdin string, attr *syscall.SysProcAttr, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = environ
	cmd.Stdin = strings.NewReader(stdin)
	// Own process group, killed whole on timeout: a forking server's workers
	// must not outlive it (they would also hold our pipes open).
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Setpgid = true
	cmd.SysProcAttr = attr
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out after %v\nstderr: %s", name, args, cmdTimeout, se.String())
	}
	return result{stdout: so.String(), stderr: se.String(), err: err}
}

// requireNoCrash fails when the command died of a signal (a crash), then
// when it did not exit 0, with its output.
func requireNoCrash(t *testing.T, r result, what string) {
	t.Helper()
	sig, crashed := r.signaled()
	require.False(t, crashed, "%s crashed (%v)\nstdout: %s\nstderr: %s", what, sig, r.stdout, r.stderr)
	requireOK(t, r, what)
}

// assertOutput checks the "name value" lines a test program printed
// against want.
func assertOutput(t *testing.T, r result, want map[string]string) {
	t.Helper()
	got := parseOutput(r.stdout)
	for k, v := range want {
		assert.Equal(t, v, got[k], "%s\nstdout: %s\nstderr: %s", k, r.stdout, r.stderr)
	}
}

// outputCase is one run of a test program: its argument, environment, and
// the "name value" lines it must print.
type outputCase struct {
	name, arg string
	environ   []string
	want      map[string]string
}

// runOutputCases runs prog once per case, as a subtest: it must not crash,
// must exit 0, and must print what the case wants.
func runOutputCases(t *testing.T, what, prog string, cases []outputCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", prog, tc.arg)
			requireNoCrash(t, r, what)
			assertOutput(t, r, tc.want)
		})
	}
}

// libdep builds testdata/dep.c as dir/sub/libdep.so and returns dir/sub.
func libdep(t *testing.T, dir, sub string) string {
	t.Helper()
	sub = filepath.Join(dir, sub)
	require.NoError(t, os.Mkdir(sub, 0o755))
	dep := compileShared(t, sub, "dep.c")
	require.NoError(t, os.Rename(dep, filepath.Join(sub, "libdep.so")))
	return sub
}

// withAndWithout runs f as two subtests: without the library ("no
// library"), the control, and with it preloaded ("library").
func withAndWithout(t *testing.T, lib string, f func(t *testing.T, environ []string)) {
	t.Helper()
	t.Run("no library", func(t *testing.T) { f(t, env("")) })
	t.Run("library", func(t *testing.T) { f(t, env(lib)) })
}

// requireOK fails with the command's output when it did not exit 0.
func requireOK(t *testing.T, r result, what string) {
	t.Helper()
	require.NoError(t, r.err, "%s failed\nstdout: %s\nstderr: %s", what, r.stdout, r.stderr)
}

// stats is one process's SECRETHEAP_STATS report in its JSON form
// (SECRETHEAP_STATS=json:PATH, read with internal/stats), as key → decimal
// or word: every value under its table key, the OpenSSL hooks' values as
// "openssl_<key>", and "pid". The per-class values are left out.
type stats map[string]string

// statsEnv is the SECRETHEAP_STATS setting that writes JSON reports to path.
func statsEnv(path string) string { return "SECRETHEAP_STATS=json:" + path }

// outputLine is a "name value" line printed by a test program.
var outputLine = regexp.MustCompile(`^([a-z_]+) (\S+)$`)

// parseStatsAll returns every process's report in text (one JSON line
// each), in the order the processes wrote them: a forking program's
// processes append to one file.
func parseStatsAll(text string) []stats {
	rs, _ := shstats.ReadReports([]byte(text)) // a report cut short is left out
	out := make([]stats, 0, len(rs))
	for _, r := range rs {
		s := stats{"pid": strconv.Itoa(r.PID)}
		for k, v := range r.Values {
			s[k] = strconv.FormatUint(v, 10)
		}
		for k, v := range r.OpenSSL {
			s["openssl_"+k] = v
		}
		out = append(out, s)
	}
	return out
}

// parseStats returns the report of the process that wrote last: for a
// forking program, the parent, which waits for its children.
func parseStats(text string) stats {
	all := parseStatsAll(text)
	if len(all) == 0 {
		return stats{}
	}
	return all[len(all)-1]
}

// parseOutput reads "name value" lines a test program printed.
func parseOutput(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if m := outputLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

func readStats(t *testing.T, path string) stats {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err, "stats file (SECRETHEAP_STATS) not written")
	s := parseStats(string(b))
	require.NotEmpty(t, s, "no stats in %s:\n%s", path, b)
	return s
}

// num returns a numeric field; a missing field fails the test, so that a
// renamed stat cannot turn a check into a no-op.
func (s stats) num(t *testing.T, key string) uint64 {
	t.Helper()
	v, ok := s[key]
	require.True(t, ok, "stat %q missing; have %v", key, s)
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "stat %q = %q", key, v)
	return n
}

func (s stats) str(t *testing.T, key string) string {
	t.Helper()
	v, ok := s[key]
	require.True(t, ok, "stat %q missing; have %v", key, s)
	return v
}

// requireServedFromSecret checks the stats of a process that ran OpenSSL
// under mode all: our hooks are in, OpenSSL allocated through them, and the
// blocks came from secret memory (memfd_secret chunks, pages committed, no
// fallback).
func requireServedFromSecret(t *testing.T, s stats) {
	t.Helper()
	require.Equal(t, "yes", s.str(t, "openssl_hooks"), "OpenSSL hooks not installed")
	require.Equal(t, "all", s.str(t, "openssl_mode"))
	require.NotZero(t, s.num(t, "openssl_malloc_calls"), "no OpenSSL allocation reached the library")
	require.NotZero(t, s.num(t, "chunks_secret"), "no memfd_secret chunk mapped")
	require.NotZero(t, s.num(t, "committed_bytes"))
	require.Zero(t, s.num(t, "fallbacks"), "allocations fell back to libc")
}

// keyPair writes a throwaway ECDSA P-256 key and self-signed certificate into
// dir (made readable by everyone, for the unprivileged tests).
func keyPair(t *testing.T, dir string) (key, cert string) {
	t.Helper()
	kp, _, err := launch.NewP256(dir, true)
	require.NoError(t, err)
	return kp.Key, kp.Cert
}

// sserver starts openssl s_server (internal/launch) with kp and the extra
// arguments; it is killed at the end of the test.
func sserver(t *testing.T, opt launch.Options, kp launch.KeyPair, extra ...string) *launch.Server {
	t.Helper()
	srv, err := launch.SServer(context.Background(), opt, kp, extra...)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	return srv
}

// compileC builds a test program from testdata into dir.
func compileC(t *testing.T, dir, src string, libs ...string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c"))
	if slices.Contains(libs, "-shared") {
		out += ".so"
	}
	args := append([]string{"-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1",
		"-o", out, filepath.Join("testdata", src)}, libs...)
	r := run(t, env(""), "", cc, args...)
	requireOK(t, r, cc+" "+src)
	return out
}

// compileShared builds a shared object from testdata into dir.
func compileShared(t *testing.T, dir, src string, libs ...string) string {
	t.Helper()
	return compileC(t, dir, src, append([]string{"-shared", "-fPIC"}, libs...)...)
}
