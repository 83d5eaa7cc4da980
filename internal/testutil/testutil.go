// Package testutil holds what secretheap's tests share: skipping where
// memfd_secret is missing, and running a test again in a child process that
// is unprivileged, short of RLIMIT_MEMLOCK, or forbidden memfd_secret by a
// seccomp filter — the conditions users meet in containers and on old
// kernels, which a test process running as root cannot create for itself.
package testutil

import (
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/secretmem"
)

// RequireEnv is the variable that turns a missing memfd_secret from a skip
// into a failure (CI sets it, so a broken kernel cannot pass as skipped).
const RequireEnv = "SECRETHEAP_REQUIRE"

var probe struct {
	once sync.Once
	err  error
}

// RequireSecretMem skips the test, with the reason, when memfd_secret does not
// work here; with SECRETHEAP_REQUIRE=1 it fails the test instead. The probe
// runs once per process. In a child started by RunChild, call it before
// InChild: the child's restrictions are meant for the code under test.
func RequireSecretMem(t testing.TB) {
	t.Helper()
	probe.once.Do(func() { probe.err = secretmem.Probe() })
	if probe.err == nil {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("memfd_secret is required (%s=1) but unavailable: %v", RequireEnv, probe.err)
	}
	t.Skipf("memfd_secret unavailable: %v", probe.err)
}

// LiftMemlock raises RLIMIT_MEMLOCK to unlimited when the test process runs
// as root, and is meant for TestMain. On the new accounting model (see
// secretmem.Model) root's default 8 MiB is a budget with no CAP_IPC_LOCK
// bypass, shared by every child the tests start, so tests that are not
// about the limit would run out; tests about it set their own limit in a
// child (ChildOptions.SetMemlock).
func LiftMemlock() {
	if os.Geteuid() == 0 {
		inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
		_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf)
	}
}
