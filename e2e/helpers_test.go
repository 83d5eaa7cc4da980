package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	shstats "github.com/secretheap/secretheap/internal/stats"
	"github.com/secretheap/secretheap/internal/testutil"
)

// cmdTimeout bounds every command a test runs: a hung handshake must fail the
// test, not the whole `go test` run.
const cmdTimeout = 30 * time.Second

// moduleRoot walks up from the working directory (go test runs in e2e/) to
// the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "go.mod not found above the working directory")
		dir = parent
	}
}

// built returns the path of a file `make` puts in build/. Missing: the test
// fails under SECRETHEAP_REQUIRE=1 (CI runs make first), else it skips.
func built(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(moduleRoot(t), "build", name)
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("%s missing: run make (%v)", p, err)
		if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// setup checks what every test here needs and returns the library's path:
// build/libsecretheap.so, or the file SECRETHEAP_E2E_LIBRARY names (to show
// that a test fails on another build, e.g. an older commit's library).
func setup(t *testing.T) string {
	t.Helper()
	testutil.RequireSecretMem(t)
	lib := os.Getenv("SECRETHEAP_E2E_LIBRARY")
	if lib == "" {
		lib = built(t, "libsecretheap.so")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
			t.Fatal("openssl command missing (apt-get install openssl)")
		}
		t.Skip("openssl command missing")
	}
	return lib
}

// env builds a child environment: ours minus every SECRETHEAP_* and
// LD_PRELOAD variable (so the developer's shell cannot change a result), plus
// the given KEY=value pairs. lib == "" runs without the library.
func env(lib string, kv ...string) []string {
	var out []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "SECRETHEAP_") || strings.HasPrefix(e, "LD_PRELOAD=") {
			continue
		}
		out = append(out, e)
	}
	if lib != "" {
		out = append(out, "LD_PRELOAD="+lib)
	}
	return append(out, kv...)
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
	key, cert = filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	r := run(t, env(""), "", "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
		"ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-days", "1",
		"-keyout", key, "-out", cert)
	requireOK(t, r, "openssl req")
	require.NoError(t, os.Chmod(key, 0o644))
	require.NoError(t, os.Chmod(cert, 0o644))
	return key, cert
}

// server is a background process whose first stdout line matching a pattern
// gives the port it listens on.
type server struct {
	cmd    *exec.Cmd
	port   int
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
	mu     sync.Mutex
}

// startServer starts name args and waits (bounded) for a stdout line matching
// portRE, whose first group is the port. The server is always killed at the
// end of the test.
func startServer(t *testing.T, environ []string, portRE *regexp.Regexp, name string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = environ
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	s := &server{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = lockedWriter{s}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { s.stop(t, syscall.SIGKILL) })

	ports := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			if m := portRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				p, _ := strconv.Atoi(m[1])
				ports <- p
				sent = true
			}
		}
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.port = <-ports:
	case <-s.done:
		t.Fatalf("%s exited before listening: %v\nstderr: %s", name, s.err, s.stderrText())
	case <-time.After(cmdTimeout):
		t.Fatalf("%s did not report its port in %v", name, cmdTimeout)
	}
	return s
}

type lockedWriter struct{ s *server }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.stderr.Write(p)
}

func (s *server) stderrText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// stop sends sig (if still running) and waits, bounded, for the exit.
func (s *server) stop(t *testing.T, sig syscall.Signal) error {
	select {
	case <-s.done:
		return s.err
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(cmdTimeout):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		t.Errorf("server did not exit after %v", sig)
	}
	return s.err
}

// wait waits, bounded, for the server to exit by itself.
func (s *server) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(cmdTimeout):
		t.Fatalf("server still running after %v\nstderr: %s", cmdTimeout, s.stderrText())
		return nil
	}
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
