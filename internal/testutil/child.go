package testutil

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Environment variables that carry the child's instructions. InChild reads
// them; RunChild sets them.
const (
	envChild   = "SECRETHEAP_TESTUTIL_CHILD"   // the test name the child runs
	envMemlock = "SECRETHEAP_TESTUTIL_MEMLOCK" // RLIMIT_MEMLOCK in bytes
	envSeccomp = "SECRETHEAP_TESTUTIL_SECCOMP" // errno memfd_secret fails with
	envNobody  = "SECRETHEAP_TESTUTIL_NOBODY"  // 1: the child must run as 65534
)

// markerRan is printed by InChild so the parent knows the child reached the
// test body (and was not, say, skipped by a probe in a parent test).
const markerRan = "testutil: child ran "

// reportPrefix starts a line written by Report.
const reportPrefix = "testutil-report "

// Nobody is the uid and gid of the unprivileged user children run as.
const Nobody = 65534

// ChildOptions says how RunChild starts the child.
type ChildOptions struct {
	// Nobody runs the child as uid and gid 65534 with no supplementary
	// groups: no CAP_IPC_LOCK, so RLIMIT_MEMLOCK applies.
	Nobody bool
	// SetMemlock makes the child set RLIMIT_MEMLOCK (soft and hard) to
	// Memlock bytes before the test body runs. Lowering is always allowed;
	// raising past the inherited hard limit fails the child.
	SetMemlock bool
	// Memlock is the child's RLIMIT_MEMLOCK in bytes when SetMemlock is set
	// (0 is a valid limit: nothing may be locked).
	Memlock uint64
	// BlockMemfdSecret, when non-zero, installs a seccomp filter in the child
	// (all threads, no_new_privs) making memfd_secret(2) fail with this errno
	// (ENOSYS or EPERM), as a container profile or an old kernel would.
	BlockMemfdSecret syscall.Errno
	// Env adds KEY=VALUE pairs to the child's environment.
	Env []string
	// Timeout kills the child (SIGKILL) after this long; 0 means 60 s.
	Timeout time.Duration
}

// ChildResult is how the child ended.
type ChildResult struct {
	Output   string         // stdout and stderr, interleaved
	ExitCode int            // -1 when killed by a signal
	Signal   syscall.Signal // the signal that killed the child, or 0
	// FatalSignal is the signal the Go runtime reported before dying of a
	// fault it could not recover ("[signal SIGBUS: bus error …]"): Go turns
	// SIGBUS/SIGSEGV in Go code into a crash with exit code 2, not a death
	// by signal, so "never a signal" must check both fields.
	FatalSignal string
	Ran         bool // the child reached InChild in the test body
}

// Clean reports whether the child exited with status 0, no signal of any kind.
func (r ChildResult) Clean() bool {
	return r.ExitCode == 0 && r.Signal == 0 && r.FatalSignal == "" && r.Ran
}

// Report decodes the value the child gave Report(key, …) into v and reports
// whether it found one (the last one wins).
func (r ChildResult) Report(key string, v any) bool {
	found := false
	sc := bufio.NewScanner(strings.NewReader(r.Output))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), reportPrefix+key+" ")
		if !ok {
			continue
		}
		if json.Unmarshal([]byte(rest), v) == nil {
			found = true
		}
	}
	return found
}

// Report writes value v under key to the child's standard output, for the
// parent to read with ChildResult.Report. Use it only in a child.
func Report(key string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("testutil.Report(%q): %v", key, err))
	}
	fmt.Printf("\n%s%s %s\n", reportPrefix, key, b)
}

// InChild reports whether this process is the child RunChild started for
// test t. If it is, it first applies the options RunChild passed (memlock
// limit, seccomp filter) and checks the uid, so everything the test body does
// afterwards runs under them; a failure to apply them fails the test.
//
//	func TestX(t *testing.T) {
//		if testutil.InChild(t) {
//			… the child's half; t.Fatal fails the child …
//			return
//		}
//		res := testutil.RunChild(t, testutil.ChildOptions{Nobody: true})
//		require.True(t, res.Clean(), res.Output)
//	}
func InChild(t testing.TB) bool {
	t.Helper()
	if os.Getenv(envChild) != t.Name() {
		return false
	}
	if os.Getenv(envNobody) == "1" && (os.Getuid() != Nobody || os.Geteuid() != Nobody || os.Getgid() != Nobody) {
		t.Fatalf("child runs as uid %d euid %d gid %d, want %d", os.Getuid(), os.Geteuid(), os.Getgid(), Nobody)
	}
	if s := os.Getenv(envMemlock); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("bad %s=%q: %v", envMemlock, s, err)
		}
		// RLIMIT_MEMLOCK is per process: setting it here covers every
		// thread, and nothing of the code under test has run yet.
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: n, Max: n}); err != nil {
			t.Fatalf("setting RLIMIT_MEMLOCK to %d in the child: %v", n, err)
		}
	}
	if s := os.Getenv(envSeccomp); s != "" {
		en, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("bad %s=%q: %v", envSeccomp, s, err)
		}
		if err := BlockMemfdSecret(syscall.Errno(en)); err != nil {
			t.Fatalf("installing the seccomp filter: %v", err)
		}
	}
	fmt.Printf("\n%s%s\n", markerRan, t.Name())
	return true
}

// RunChild runs test t again in a child process (the test binary with
// -test.run matching exactly t's name) under opts, and returns how it ended.
// It fails t if the child could not start or never reached InChild, and
// skips t when opts.Nobody is asked of a parent that is not root. It does not
// judge the exit status: callers assert on the result.
func RunChild(t testing.TB, opts ChildOptions) ChildResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	var removeCopy func()
	if opts.Nobody {
		if os.Geteuid() != 0 {
			// Only root can start a process as another user; CI runs as root.
			t.Skipf("running a child as uid %d needs root (euid is %d)", Nobody, os.Geteuid())
		}
		exe, removeCopy = sharedExecutable(t, exe)
		defer removeCopy()
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run="+runPattern(t.Name()), "-test.v", "-test.count=1")
	// The race detector sleeps 1 s at exit by default (to let racing
	// goroutines report): children would cost a second each.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	env := append(os.Environ(), envChild+"="+t.Name(), "GORACE="+gorace)
	if opts.SetMemlock {
		env = append(env, envMemlock+"="+strconv.FormatUint(opts.Memlock, 10))
	}
	if opts.BlockMemfdSecret != 0 {
		env = append(env, envSeccomp+"="+strconv.Itoa(int(opts.BlockMemfdSecret)))
	}
	if opts.Nobody {
		env = append(env, envNobody+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody, Groups: []uint32{}},
		}
	}
	cmd.Env = append(env, opts.Env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Start returns once the child has exec'd (or failed to), so the copy of
	// the binary can go right away.
	err = cmd.Start()
	if err == nil {
		if removeCopy != nil {
			removeCopy()
		}
		err = cmd.Wait()
	}
	res := ChildResult{Output: out.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
	default:
		t.Fatalf("running child %s: %v\n%s", t.Name(), err, res.Output)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	res.ExitCode = ws.ExitStatus()
	if ws.Signaled() {
		res.Signal = ws.Signal()
		res.ExitCode = -1
	}
	if m := fatalSignalRE.FindStringSubmatch(res.Output); m != nil {
		res.FatalSignal = m[1]
	}
	res.Ran = strings.Contains(res.Output, markerRan+t.Name()+"\n")
	if !res.Ran {
		t.Fatalf("child %s never reached InChild (exit %d, signal %v): is InChild the first thing in the test?\n%s",
			t.Name(), res.ExitCode, res.Signal, res.Output)
	}
	return res
}

// fatalSignalRE matches the Go runtime's report of a fatal signal.
var fatalSignalRE = regexp.MustCompile(`\[signal (SIG[A-Z0-9]+)`)

// runPattern turns a test name ("TestX/sub_case") into a -test.run pattern
// that matches it and nothing else.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// sharedExecutable puts the test binary where uid 65534 can run it (go test
// builds it under a 0700 directory of the invoking user) and returns its path
// and a function that removes it. The copy is needed only until exec: once
// the child has started, remove it, so nothing is left behind in $TMPDIR.
func sharedExecutable(t testing.TB, exe string) (string, func()) {
	dir, err := os.MkdirTemp("", "secretheap-child-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	dst := filepath.Join(dir, filepath.Base(exe))
	if err == nil {
		// A hard link is instant when both sit on one file system (go test
		// builds under $TMPDIR too); copy otherwise.
		if os.Link(exe, dst) != nil {
			err = copyFile(dst, exe)
		}
	}
	if err == nil {
		err = os.Chmod(dst, 0o755)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("copying the test binary for an unprivileged child: %v", err)
	}
	return dst, func() { _ = os.RemoveAll(dir) }
}

// CleanupShared is kept for callers' TestMain; RunChild now removes its copy
// of the test binary as soon as the child has started, so there is nothing
// left to clean.
func CleanupShared() {}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// BlockMemfdSecret installs a seccomp filter on every thread of this process
// that makes memfd_secret(2) fail with errno en and allows everything else.
// It sets no_new_privs first (required without CAP_SYS_ADMIN) and cannot be
// undone: call it only in a child process.
func BlockMemfdSecret(en syscall.Errno) error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("testutil: no seccomp audit arch for %s", runtime.GOARCH)
	}
	const (
		offNr   = 0 // struct seccomp_data: int nr; __u32 arch; …
		offArch = 4
	)
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offArch},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: arch},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}, // another ABI: not ours to judge
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offNr},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_MEMFD_SECRET},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(en)&0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("testutil: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	// TSYNC applies the filter to every thread of the process at once (the Go
	// runtime has several); on failure it returns the id of the thread that
	// could not be synchronised instead of -1.
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return fmt.Errorf("testutil: seccomp(SECCOMP_SET_MODE_FILTER): %w", e)
	}
	if r != 0 {
		return fmt.Errorf("testutil: seccomp TSYNC failed for thread %d", r)
	}
	return nil
}
