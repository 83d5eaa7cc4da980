package main

// The CLI against hostile processes: a target running as nobody that plants
// a FIFO or a symbolic link where inspect once opened the library file, one
// whose command line and file names hold terminal escape sequences, one with
// tens of thousands of long-named mappings, one with a mapping larger than
// scan once read.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/testutil"
)

const nobodyUID = 65534

// requireRoot skips unless the test can start processes as nobody.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the hostile target runs as nobody")
	}
}

// nobodyDir is a fresh directory owned by nobody (under the system temporary
// directory: nobody cannot reach into t.TempDir()).
func nobodyDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "secretheap-hostile-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chown(dir, nobodyUID, nobodyUID))
	return dir
}

// startTarget starts argv (as nobody when asNobody) with env added, waits
// for it to print "ready", and keeps its stdin open until the test ends.
func startTarget(t *testing.T, asNobody bool, env []string, argv ...string) int {
	t.Helper()
	opt := launch.Options{Env: env, Ready: regexp.MustCompile(`^ready$`), ReadyTimeout: 60 * time.Second, Role: "target"}
	if asNobody {
		opt.Credential = &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}
		opt.Dir = "/"
	}
	p, err := launch.Start(context.Background(), opt, argv[0], argv[1:]...)
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	return p.PID
}

// runCLIWithin runs the CLI and fails the test if it has not finished after
// d: a hostile target must get a message, never a hang.
func runCLIWithin(t *testing.T, d time.Duration, args ...string) cliResult {
	t.Helper()
	cmd, out, errb := startCLI(t, nil, args...)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("secretheap %v hung (killed after %v)\nstdout: %s\nstderr: %s", args, d, out, errb)
	}
	return cliResult{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

// assertPrintable fails on any control character but newline in out.
func assertPrintable(t *testing.T, out string) {
	t.Helper()
	for i, c := range []byte(out) {
		if (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("raw control byte %#x at %d in output:\n%s", c, i, out)
		}
	}
}

// TestInspectHostileLibraryFile runs a preloaded target as nobody that then
// deletes its copy of the library and plants, at the name maps shows
// ("… (deleted)"), a FIFO or a link to a root-only file. inspect once opened
// /proc/PID/root/<that name>: the FIFO hung it, the link made root read the
// file and print its first bytes. Now no file is opened, and the library is
// still recognised, from the process's memory.
func TestInspectHostileLibraryFile(t *testing.T) {
	requireRoot(t)
	lib := requireLibrary(t)
	secret := filepath.Join(t.TempDir(), "root-only")
	require.NoError(t, os.WriteFile(secret, []byte("TOPS-secret-bytes-of-root\n"), 0o600))
	for _, tc := range []struct{ name, plant string }{
		{"fifo", `mkfifo "$D/libsecretheap.so (deleted)"`},
		{"symlink", `ln -s "$SECRET" "$D/libsecretheap.so (deleted)"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := nobodyDir(t)
			copyTo(t, lib, filepath.Join(dir, "libsecretheap.so"), nobodyUID)
			pid := startTarget(t, true, []string{"D=" + dir, "SECRET=" + secret, "LD_PRELOAD=" + filepath.Join(dir, "libsecretheap.so")},
				"sh", "-c", `unset LD_PRELOAD; rm "$D/libsecretheap.so" && `+tc.plant+` && echo ready && while read x; do :; done`)
			r := runCLIWithin(t, 30*time.Second, "inspect", strconv.Itoa(pid))
			require.Equal(t, 0, r.code, r.stderr)
			assert.Contains(t, r.stdout, "recognised in its memory")
			assert.Contains(t, r.stdout, "counters       openssl_hooked 0")
			for _, leak := range []string{"TOPS", "84 79 80 83"} {
				assert.NotContains(t, r.stdout+r.stderr, leak, "inspect read the file the link names")
			}
		})
	}
}

// copyTo copies src to dst owned by uid.
func copyTo(t *testing.T, src, dst string, uid int) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, b, 0o755))
	require.NoError(t, os.Chown(dst, uid, uid))
}

// TestHostileEscapes: a process whose command line, environment and mapped
// file names carry terminal escape sequences. inspect and scan print them
// as \xNN, never raw.
func TestHostileEscapes(t *testing.T) {
	lib := requireLibrary(t)
	const evil = "\x1b]2;pwned\x07\x1b[2J"
	dir := t.TempDir()
	evilLib := filepath.Join(dir, "lib"+evil+".so")
	copyTo(t, lib, evilLib, os.Getuid())
	pid := startTarget(t, false, []string{"LD_PRELOAD=" + evilLib, "SECRETHEAP_EVIL=" + evil},
		"sh", "-c", `echo ready; while read x; do :; done`, evil)
	r := runCLIWithin(t, 30*time.Second, "inspect", strconv.Itoa(pid))
	require.Equal(t, 0, r.code, r.stderr)
	assertPrintable(t, r.stdout)
	assert.Contains(t, r.stdout, `\x1b]2;pwned\x07\x1b[2J`)
	assert.Contains(t, r.stdout, "recognised in its memory", "a library under another name is still recognised")
	assert.Contains(t, r.stdout, `SECRETHEAP_EVIL=\x1b]2;pwned`)

	// scan: the command line in its header, the file name of a hit.
	r = runCLIWithin(t, 60*time.Second, "scan", strconv.Itoa(pid), "--string", "secretheap-ident")
	require.Equal(t, 0, r.code, r.stderr)
	assertPrintable(t, r.stdout)
	assert.Contains(t, r.stdout, `lib\x1b]2;pwned\x07\x1b[2J.so`)
}

// hostileBinary builds testdata/hostile.c once per test run.
var hostileBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "secretheap-hostile-bin-")
	if err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "hostile")
	out, err := exec.Command("cc", "-O1", "-o", exe, "testdata/hostile.c").CombinedOutput()
	if err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return exe, nil
})

func requireHostile(t *testing.T) string {
	t.Helper()
	requireCC(t)
	exe, err := hostileBinary()
	require.NoError(t, err)
	return exe
}

// TestInspectManyMappings: 30,000 mappings of a file with a 4000-byte path
// make smaps (and maps) far larger than inspect and scan read. They read the
// first 64 MiB and say the picture is partial. (inspect once read all of it:
// with 60,000 such mappings, 10 s and 855 MB of memory, against 1.8 s and
// 80 MB now.)
func TestInspectManyMappings(t *testing.T) {
	exe := requireHostile(t)
	dir := t.TempDir()
	long := dir
	for len(long) < 3900 {
		long = filepath.Join(long, strings.Repeat("d", 200))
	}
	require.NoError(t, os.MkdirAll(long, 0o755))
	file := filepath.Join(long, "mapped")
	require.NoError(t, os.WriteFile(file, make([]byte, 4096), 0o644))
	pid := startTarget(t, false, nil, exe, "maps", file, "30000")
	r := runCLIWithin(t, 60*time.Second, "inspect", strconv.Itoa(pid))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `mappings +\d+ read, partial: /proc/\d+/smaps is larger than 64 MiB`, r.stdout)

	// scan reads the same bounded list, and says so.
	r = runCLIWithin(t, 60*time.Second, "scan", strconv.Itoa(pid), "--string", "not-there-"+strconv.Itoa(os.Getpid()))
	require.Equal(t, 1, r.code, r.stderr)
	assert.Regexp(t, `partial +/proc/\d+/maps is larger than 64 MiB`, r.stdout)
}

// TestScanHugeMapping: a mapping over 1 GiB (scan once skipped those
// without a word) with the needle in its last bytes is read, with progress.
func TestScanHugeMapping(t *testing.T) {
	exe := requireHostile(t)
	needle := "needle-at-the-end-" + strconv.Itoa(os.Getpid())
	pid := startTarget(t, false, nil, exe, "big", "1536", needle)
	r := runCLIWithin(t, 5*time.Minute, "scan", strconv.Itoa(pid), "--string", strings.ToUpper(needle))
	require.Equal(t, 0, r.code, "stdout %s\nstderr %s", r.stdout, r.stderr)
	assert.Regexp(t, `FOUND .*: 1 hit\(s\) at 0x[0-9a-f]+ anonymous\n`, r.stdout)
	assert.Contains(t, r.stdout, ": 1.5 GiB read")
	assert.Contains(t, r.stderr, "secretheap scan: 1.5 GiB to read", "progress on a large target")
}

// TestScanBound: past --max, mappings are listed as skipped, not read.
func TestScanBound(t *testing.T) {
	exe := requireHostile(t)
	needle := "needle-past-the-bound-" + strconv.Itoa(os.Getpid())
	pid := startTarget(t, false, nil, exe, "big", "1536", needle)
	r := runCLIWithin(t, 5*time.Minute, "scan", strconv.Itoa(pid), "--max", "1G", "--string", strings.ToUpper(needle))
	require.Equal(t, 1, r.code, "stdout %s\nstderr %s", r.stdout, r.stderr)
	assert.Regexp(t, `skipped +1 anonymous mapping\(s\), 1\.5 GiB: past --max 1 GiB`, r.stdout)
	assert.Contains(t, r.stdout, "not found")
}

// TestInspectStaticOpenSSL: a program with OpenSSL linked in (as node is)
// exports CRYPTO_set_mem_functions from its own binary, and the library
// hooks it there. inspect once looked for a file named libcrypto.so and
// said "libcrypto not loaded".
func TestInspectStaticOpenSSL(t *testing.T) {
	lib := requireLibrary(t)
	cc := requireCC(t)
	exe := filepath.Join(t.TempDir(), "staticssl")
	out, err := exec.Command(cc, "-O1", "-o", exe, "testdata/staticssl.c", "-Wl,--export-dynamic",
		"-Wl,-Bstatic", "-lcrypto", "-Wl,-Bdynamic", "-pthread", "-ldl").CombinedOutput()
	if err != nil {
		if os.Getenv(testutil.RequireEnv) == "1" {
			t.Fatalf("building a program with a static libcrypto: %v: %s", err, out)
		}
		t.Skipf("cannot build a program with a static libcrypto (libssl-dev's libcrypto.a): %v: %s", err, out)
	}
	pid := startTarget(t, false, []string{"LD_PRELOAD=" + lib}, exe)
	rep, err := inspect(pid)
	require.NoError(t, err)
	assert.Equal(t, exe, rep.Libcrypto)
	assert.True(t, rep.OpenSSLStatic)
	assert.Equal(t, lib, rep.Library)
	require.Empty(t, rep.CountersErr)
	assert.Equal(t, uint64(1), rep.Counters["openssl_hooked"], "the library hooked the program's own OpenSSL")
	var o, e bytes.Buffer
	require.Equal(t, 0, dispatch([]string{"inspect", strconv.Itoa(pid)}, &o, &e), e.String())
	assert.Contains(t, o.String(), "libcrypto      linked into "+exe)
}

func requireCC(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		if os.Getenv(testutil.RequireEnv) == "1" {
			t.Fatalf("%s=1 but no C compiler: %v", testutil.RequireEnv, err)
		}
		t.Skipf("needs cc: %v", err)
	}
	return cc
}

// TestInspectFakeLibrary: a file named libsecretheap.so that is another
// library (here libz or libm under that name) is not the library. inspect
// once decided "loaded" from the name alone.
func TestInspectFakeLibrary(t *testing.T) {
	var real string
	for _, p := range []string{"/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"} {
		if _, err := os.Stat(p); err == nil {
			real = p
			break
		}
	}
	if real == "" {
		t.Skip("no libm.so.6 to disguise")
	}
	fake := filepath.Join(t.TempDir(), "libsecretheap.so")
	copyTo(t, real, fake, os.Getuid())
	pid := startTarget(t, false, []string{"LD_PRELOAD=" + fake}, "sh", "-c", `echo ready; while read x; do :; done`)
	rep, err := inspect(pid)
	require.NoError(t, err)
	assert.Empty(t, rep.Library, "%+v", rep)
	assert.Contains(t, rep.CountersErr, "not the library")
	assert.Contains(t, rep.OpenSSLHook, "not loaded")
}
