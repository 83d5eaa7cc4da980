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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/ldpreload"
	"github.com/secretheap/secretheap/internal/testutil"
)

// envCLIMain makes the test binary behave as the secretheap command: tests
// run the real CLI in a process of its own (to send it signals, and to see
// what the programs it runs print) without building it first.
const envCLIMain = "SECRETHEAP_CLI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envCLIMain) == "1" {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	testutil.CleanupShared()
	os.Exit(code)
}

// cliResult is how one run of the CLI ended.
type cliResult struct {
	stdout, stderr string
	code           int
}

// startCLI starts the CLI (this test binary in CLI mode) with args.
func startCLI(t *testing.T, env []string, args ...string) (*exec.Cmd, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	t.Helper()
	return startCLIIn(t, "", env, args...)
}

// startCLIIn is startCLI in the working directory dir ("" for ours).
func startCLIIn(t *testing.T, dir string, env []string, args ...string) (*exec.Cmd, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), envCLIMain+"=1"), env...)
	var out, errb testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A program the CLI started may outlive a killed CLI and hold the
	// output pipes open: do not wait for them for ever.
	cmd.WaitDelay = 2 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out, &errb
}

// runCLI runs the CLI to completion (at most 60 s).
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	cmd, out, errb := startCLI(t, env, args...)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running the CLI: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("CLI %v did not finish in 60 s\nstdout: %s\nstderr: %s", args, out, errb)
	}
	return cliResult{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

// requireLibrary returns the path of libsecretheap.so, or skips the test with
// the reason when it has not been built — failing instead under
// SECRETHEAP_REQUIRE=1, where `make test` has built it first.
func requireLibrary(t *testing.T) string {
	t.Helper()
	lib, err := ldpreload.Resolve("")
	if err == nil {
		return lib
	}
	if os.Getenv(testutil.RequireEnv) == "1" {
		t.Fatalf("%s=1 but the library is missing: %v (run make)", testutil.RequireEnv, err)
	}
	t.Skipf("needs build/libsecretheap.so (run make): %v", err)
	return ""
}

func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv(testutil.RequireEnv) == "1" {
			t.Fatalf("%s=1 but no openssl command: %v", testutil.RequireEnv, err)
		}
		t.Skipf("needs the openssl command: %v", err)
	}
	return p
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := dispatch([]string{c.name, "--help"}, &out, &errb)
			assert.Equal(t, 0, code)
			assert.Contains(t, errb.String(), "Usage: secretheap "+c.name)
		})
	}
	var out, errb bytes.Buffer
	assert.Equal(t, 0, dispatch([]string{"--help"}, &out, &errb))
	for _, c := range commands {
		assert.Contains(t, out.String(), c.name)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no command", nil, "Usage"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"bad flag", []string{"doctor", "--nope"}, "flag provided but not defined"},
		{"doctor extra arg", []string{"doctor", "x"}, "unexpected argument"},
		{"run no program", []string{"run"}, "no program given"},
		{"run bad backend", []string{"run", "--backend", "secrte", "--", "true"}, "accepted: auto, secret, locked"},
		{"run bad limit", []string{"run", "--limit", "lots", "--", "true"}, "K, M or G"},
		{"run bad openssl", []string{"run", "--openssl", "some", "--", "true"}, "accepted: all, secure, off"},
		{"run bad fork", []string{"run", "--fork", "share", "--", "true"}, "accepted: copy, dontfork"},
		{"run bad verbose", []string{"run", "--verbose", "9", "--", "true"}, "accepted: 0, 1, 2"},
		{"inspect no pid", []string{"inspect"}, "exactly one PID"},
		{"inspect bad pid", []string{"inspect", "abc"}, "not a process id"},
		{"scan no pid", []string{"scan"}, "no PID"},
		{"scan no needle", []string{"scan", "1"}, "no needle"},
		{"scan bad hex", []string{"scan", "1", "--hex", "xyz"}, "not hex"},
		{"scan bad method", []string{"scan", "1", "--hex", "00", "--method", "x"}, "unknown method"},
		{"scan self", []string{"scan", "--hex", "0102", strconv.Itoa(os.Getpid())}, "refusing to scan itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := dispatch(tc.args, &out, &errb)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, errb.String(), tc.msg)
		})
	}
}

func TestParseNeedle(t *testing.T) {
	for _, tc := range []struct {
		kind, in, label string
		want            []byte
	}{
		{"hex", "0a0b", "hex 0a0b", []byte{10, 11}},
		{"hex", "key=0a:0b", "key", []byte{10, 11}},
		{"hex", "11:bd:1e f9", "hex 11bd1ef9", []byte{0x11, 0xbd, 0x1e, 0xf9}},
		{"string", "a=b", `"a=b"`, []byte("a=b")},
	} {
		t.Run(tc.in, func(t *testing.T) {
			n, err := parseNeedle(tc.kind, tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.label, n.Label)
			assert.Equal(t, tc.want, n.Bytes)
		})
	}
	for _, bad := range []string{"", "label=", "0g"} {
		_, err := parseNeedle("hex", bad)
		assert.Error(t, err, bad)
	}
}

func TestNeedleFile(t *testing.T) {
	p := t.TempDir() + "/needles"
	require.NoError(t, os.WriteFile(p, []byte("# comment\n\nbe=0102\n0304\n"), 0o600))
	n, err := readNeedleFile(p)
	require.NoError(t, err)
	require.Len(t, n, 2)
	assert.Equal(t, "be", n[0].Label)
	assert.Equal(t, []byte{3, 4}, n[1].Bytes)

	require.NoError(t, os.WriteFile(p, []byte("zz\n"), 0o600))
	_, err = readNeedleFile(p)
	assert.ErrorContains(t, err, ":1:")
}

func TestRunMissingLibrary(t *testing.T) {
	r := runCLI(t, []string{"SECRETHEAP_LIBRARY=/nonexistent/libsecretheap.so"}, "run", "--", "true")
	assert.Equal(t, 127, r.code)
	assert.Contains(t, r.stderr, "/nonexistent/libsecretheap.so")
}

// TestRunEnvironment checks what the program is started with: the library
// first in LD_PRELOAD (an existing entry kept after it) and each flag as its
// variable, while variables for flags not given pass through.
func TestRunEnvironment(t *testing.T) {
	lib := requireLibrary(t)
	r := runCLI(t, []string{"LD_PRELOAD=", "SECRETHEAP_IDLE_CHUNKS=5"},
		"run", "--quiet", "--backend", "LOCKED", "--limit", "4M", "--openssl", "secure", "--fork", "dontfork",
		"--verbose", "0", "--nodump", "--check-zero=false", "--on-exhausted", "null", "--secure-reserve", "64K",
		"--", "sh", "-c", `echo "$LD_PRELOAD|$SECRETHEAP_BACKEND|$SECRETHEAP_LIMIT|$SECRETHEAP_OPENSSL|$SECRETHEAP_FORK|$SECRETHEAP_NODUMP|$SECRETHEAP_CHECK_ZERO|$SECRETHEAP_ON_EXHAUSTED|$SECRETHEAP_SECURE_RESERVE|$SECRETHEAP_IDLE_CHUNKS|$SECRETHEAP_STATS"`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, lib+"|locked|4194304|secure|dontfork|1|0|null|65536|5|\n", r.stdout)
}

// TestRunStatsAndStatus runs a real program with the library preloaded: the
// stats the library writes at exit are printed, and the exit status is the
// program's — including death by a signal.
func TestRunStatsAndStatus(t *testing.T) {
	requireLibrary(t)
	ossl := requireOpenSSL(t)
	t.Run("stats", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--", ossl, "version")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stdout, "OpenSSL")
		assert.Contains(t, r.stderr, "secretheap stats (pid")
		v, ok := shownHooked(r.stderr)
		require.True(t, ok, r.stderr)
		assert.Equal(t, "1", v, "Debian's libcrypto routes its allocations through the hooks")
	})
	t.Run("quiet", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--quiet", "--", ossl, "version")
		require.Equal(t, 0, r.code)
		assert.NotContains(t, r.stderr, "secretheap stats")
	})
	t.Run("stats to a file", func(t *testing.T) {
		p := t.TempDir() + "/stats"
		r := runCLI(t, nil, "run", "--stats", p, "--", ossl, "version")
		require.Equal(t, 0, r.code)
		assert.NotContains(t, r.stderr, "secretheap stats")
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Contains(t, string(b), "secretheap stats (pid")
	})
	t.Run("exit status", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--quiet", "--", "sh", "-c", "exit 7")
		assert.Equal(t, 7, r.code)
	})
	t.Run("killed by signal", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--", "sh", "-c", "kill -KILL $$")
		assert.Equal(t, 128+int(syscall.SIGKILL), r.code)
		assert.Contains(t, r.stderr, "no stats from sh")
	})
	t.Run("not found", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--", "/nonexistent/program")
		assert.Equal(t, 127, r.code)
	})
}

// TestRunForwardsSignals sends SIGTERM to `secretheap run` and expects the
// program to get it: the trap in the shell prints and exits 42. Without
// forwarding the shell would sleep on and the CLI be killed at the deadline.
func TestRunForwardsSignals(t *testing.T) {
	requireLibrary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, out, errb := startCLI(t, nil, "run", "--quiet", "--", "sh", "-c",
				`trap 'echo got; exit 42' `+strings.TrimPrefix(unix.SignalName(sig), "SIG")+`; echo ready; for i in $(seq 200); do sleep 0.05; done; exit 3`)
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(out.String(), "ready") {
				require.True(t, time.Now().Before(deadline), "program never started: %s", errb)
				time.Sleep(10 * time.Millisecond)
			}
			require.NoError(t, cmd.Process.Signal(sig))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("%v was not forwarded: the program kept running", sig)
			}
			assert.Equal(t, 42, cmd.ProcessState.ExitCode(), "stdout %q stderr %q", out, errb)
			assert.Contains(t, out.String(), "got")
		})
	}
}

func TestAccessHint(t *testing.T) {
	assert.Contains(t, accessHint(fmt.Errorf("open: %w", unix.EACCES)), "CAP_SYS_PTRACE")
	assert.Contains(t, accessHint(fmt.Errorf("open: %w", unix.EPERM)), "CAP_SYS_PTRACE")
	assert.Empty(t, accessHint(fmt.Errorf("open: %w", unix.ENOENT)))
}

// TestVersion: `secretheap version` and `--version` print the one version
// (ldpreload.Version, checked against cshim/include/secretheap.h by its own test).
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errb bytes.Buffer
		require.Equal(t, 0, dispatch(args, &out, &errb), errb.String())
		assert.Equal(t, "secretheap "+ldpreload.Version+"\n", out.String())
	}
}

// TestRunFromAwkwardPath runs secretheap run from, and with the library in,
// a directory whose path holds a space and a colon ("My Projects:v2"). ld.so
// splits LD_PRELOAD on both and cannot escape them: the program once ran
// unprotected, the loader trying the pieces (relative ones against the
// working directory). Now the library is preloaded through a link, the
// user's LD_PRELOAD is kept, and -v says so.
func TestRunFromAwkwardPath(t *testing.T) {
	lib := requireLibrary(t)
	dir := filepath.Join(t.TempDir(), "My Projects:v2")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "build"), 0o755))
	awkward := filepath.Join(dir, "build", "libsecretheap.so")
	b, err := os.ReadFile(lib)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(awkward, b, 0o755))

	cmd, out, errb := startCLIIn(t, dir, []string{"LD_PRELOAD=libm.so.6"}, "run", "-v", "--quiet", "--library", "build/libsecretheap.so", "--",
		"sh", "-c", `pwd; echo "$LD_PRELOAD"; grep -c secretheap /proc/$$/maps`)
	require.NoError(t, cmd.Wait(), "stdout %s\nstderr %s", out, errb)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3, "stdout %s\nstderr %s", out, errb)
	require.Equal(t, dir, lines[0], "run from the awkward directory, the library named relative to it")
	lines = lines[1:]
	entries := strings.Split(lines[0], ":")
	require.Len(t, entries, 2, "the library's link, then the user's libm: %q", lines[0])
	assert.True(t, filepath.IsAbs(entries[0]), "the loader is never given a relative name: %q", entries[0])
	assert.Equal(t, "libm.so.6", entries[1], "the user's LD_PRELOAD is kept")
	assert.NotEqual(t, "0", lines[1], "the library is mapped in the program")
	assert.NotContains(t, errb.String(), "cannot be preloaded")
	assert.Contains(t, errb.String(), "preloading it through the link "+entries[0])
	_, err = os.Lstat(entries[0])
	assert.ErrorIs(t, err, os.ErrNotExist, "the link is removed when the program ends")
}

// TestRunStatsToFIFO: SECRETHEAP_STATS naming a FIFO nobody reads once held
// the program's exit for ever (a blocking open). The library now opens it
// non-blocking, says why it wrote nothing, and the program exits.
func TestRunStatsToFIFO(t *testing.T) {
	requireLibrary(t)
	ossl := requireOpenSSL(t)
	fifo := filepath.Join(t.TempDir(), "stats.fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	r := runCLIWithin(t, 30*time.Second, "run", "--stats", fifo, "--", "true")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "a FIFO nobody reads")

	// A reader that never reads, on a pipe shrunk to one page: the report
	// of `openssl version` (4.5 KiB) does not fit, and the write gives up
	// after its bound instead of blocking.
	rfd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(rfd)
	_, err = unix.FcntlInt(uintptr(rfd), unix.F_SETPIPE_SZ, 4096)
	require.NoError(t, err)
	start := time.Now()
	r = runCLIWithin(t, 30*time.Second, "run", "--stats", fifo, "--", ossl, "version")
	assert.Equal(t, 0, r.code, r.stderr)
	t.Logf("exited after %v with the FIFO full", time.Since(start).Round(time.Millisecond))
	buf := make([]byte, 1<<16)
	n, _ := unix.Read(rfd, buf)
	assert.Contains(t, string(buf[:max(n, 0)]), "secretheap stats (pid", "the report's start was written")
}

// TestRunRelativePreload: an entry of the user's LD_PRELOAD with a relative
// path ("lib/x.so") was passed on as it was, and ld.so resolved it against
// the working directory of whatever program started, children included
// (after a chdir, another file). run now passes it on absolute.
func TestRunRelativePreload(t *testing.T) {
	lib := requireLibrary(t)
	dir := t.TempDir()
	cmd, out, errb := startCLIIn(t, dir, []string{"LD_PRELOAD=sub/libextra.so:libm.so.6", "SECRETHEAP_LIBRARY=" + lib}, "run", "-v", "--quiet", "--",
		"sh", "-c", `echo "$LD_PRELOAD"`)
	require.NoError(t, cmd.Wait(), "stdout %s\nstderr %s", out, errb)
	entries := strings.Split(strings.TrimSpace(out.String()), ":")
	require.Len(t, entries, 3, out.String())
	assert.Equal(t, filepath.Join(dir, "sub", "libextra.so"), entries[1])
	assert.Equal(t, "libm.so.6", entries[2], "a name without a slash is searched, not resolved: it stays")
	assert.Contains(t, errb.String(), "your LD_PRELOAD entry sub/libextra.so is relative")
}
