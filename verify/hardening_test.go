package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/testutil"
)

// The hardening tests run the options of the C library (built by `make`
// into build/) and of the Go allocator in child processes: each feature
// kills or refuses, so the test process must not be the one that dies. Every
// test has a control: the same child without the option, which must show the
// attack or the bug getting through.

// helper returns the path of a verify/c program built by `make`, skipping
// the test with the reason if it is missing (and failing in CI, where
// SECRETHEAP_REQUIRE=1 and `make test` builds everything first).
func helper(t *testing.T, name string) string {
	t.Helper()
	return testutil.Built(t, filepath.Join("verify-c", name))
}

// asNobody makes cmd run as uid/gid 65534: root's CAP_SYS_PTRACE would
// bypass PR_SET_DUMPABLE, so attacker and target are both an ordinary user.
func asNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}

// TestHardeningNoDump: SECRETHEAP_NODUMP=1 makes the process undumpable, so
// a same-user attacker can neither open /proc/PID/mem nor ptrace-attach;
// without it (control) both succeed and read an ordinary static buffer.
func TestHardeningNoDump(t *testing.T) {
	testutil.RequireSecretMem(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run target and attacker as uid 65534")
	}
	hold, peek := helper(t, "hold"), helper(t, "peek")
	for _, tc := range []struct {
		name     string
		nodump   string
		dumpable string
		want     []string // fields the attacker's line must contain
	}{
		{"nodump", "1", "0", []string{"open=EACCES", "attach=EPERM"}},
		{"control", "0", "1", []string{"open=ok", "read=5a5a5a5a5a5a5a5a", "attach=ok", "peek=5a5a5a5a5a5a5a5a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := launch.Start(context.Background(), launch.Options{
				Env:        []string{"SECRETHEAP_NODUMP=" + tc.nodump, "SECRETHEAP_BACKEND=secret"},
				Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody},
				Ready:      regexp.MustCompile(`^secret \S+ plain \S+ dumpable \S+`), Role: "hold",
			}, hold)
			require.NoError(t, err)
			defer target.Stop()
			line := target.Ready
			var secretAddr, plainAddr string
			var dumpable string
			_, err = fmt.Sscanf(line, "secret %s plain %s dumpable %s", &secretAddr, &plainAddr, &dumpable)
			require.NoError(t, err, line)
			assert.Equal(t, tc.dumpable, dumpable, "PR_GET_DUMPABLE in the target")

			att := exec.Command(peek, fmt.Sprint(target.PID), plainAddr)
			asNobody(att)
			res, err := att.CombinedOutput()
			require.NoError(t, err, string(res))
			for _, w := range tc.want {
				assert.Contains(t, string(res), w, "attacker on the static buffer")
			}
			// The secret block itself stays unreadable either way
			// (memfd_secret): EIO from both routes when they open.
			att = exec.Command(peek, fmt.Sprint(target.PID), secretAddr)
			asNobody(att)
			res, err = att.CombinedOutput()
			require.NoError(t, err, string(res))
			assert.NotContains(t, string(res), "a5a5a5a5", "secret bytes read: %s", res)
		})
	}
}

// exitOf runs cmd and returns its output and how it ended.
func exitOf(t *testing.T, cmd *exec.Cmd) (string, syscall.WaitStatus) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return string(out), cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// TestHardeningGuardPages: every chunk and every region of its own sits in
// its slot with PROT_NONE after it, so an overflow past a chunk or a large
// block faults (SIGSEGV) instead of reaching other memory. Controls: the
// last byte still inside is written without a fault.
func TestHardeningGuardPages(t *testing.T) {
	testutil.RequireSecretMem(t)
	guard := helper(t, "guard")
	for _, tc := range []struct {
		mode  string
		fault bool
	}{
		{"chunk-end", true}, {"chunk-last", false},
		{"large-end", true}, {"large-before", true}, {"large-last", false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := exec.Command(guard, tc.mode)
			cmd.Env = append(os.Environ(), "SECRETHEAP_BACKEND=secret")
			out, ws := exitOf(t, cmd)
			if tc.fault {
				require.True(t, ws.Signaled(), "no fault: %s", out)
				assert.Equal(t, syscall.SIGSEGV, ws.Signal(), out)
			} else {
				assert.True(t, ws.Exited() && ws.ExitStatus() == 0, "control faulted: %v %s", ws, out)
			}
		})
	}
}

// TestHardeningCheckZeroC: with SECRETHEAP_CHECK_ZERO=1 the C library aborts
// naming a write after free when the block is handed out again; without it
// (control) the dirty block is handed out.
func TestHardeningCheckZeroC(t *testing.T) {
	testutil.RequireSecretMem(t)
	cz := helper(t, "checkzero")
	t.Run("check", func(t *testing.T) {
		cmd := exec.Command(cz)
		cmd.Env = append(os.Environ(), "SECRETHEAP_CHECK_ZERO=1")
		out, ws := exitOf(t, cmd)
		require.True(t, ws.Signaled(), "no abort: %s", out)
		assert.Equal(t, syscall.SIGABRT, ws.Signal())
		assert.Regexp(t, `secretheap: write after free: block 0x[0-9a-f]+ \(class 48 B\)`, out)
	})
	t.Run("control", func(t *testing.T) {
		cmd := exec.Command(cz)
		cmd.Env = append(os.Environ(), "SECRETHEAP_CHECK_ZERO=0")
		out, ws := exitOf(t, cmd)
		assert.Equal(t, 3, ws.ExitStatus(), "want the dirty block handed out: %s", out)
		assert.Contains(t, out, "byte 5 = 0x77")
	})
}

// checkZeroChild is the Go child of TestHardeningCheckZeroGo: the default
// heap (configured from SECRETHEAP_* by the environment), a write after
// free, then allocations until the block comes back.
func checkZeroChild() {
	h, err := alloc.Default()
	if err != nil {
		fmt.Println("default heap:", err)
		os.Exit(1)
	}
	b, err := h.Alloc(48)
	if err != nil {
		fmt.Println("alloc:", err)
		os.Exit(1)
	}
	p := &b[0]
	if err := h.Free(b); err != nil {
		fmt.Println("free:", err)
		os.Exit(1)
	}
	b[5] = 0x77 // the bug under test
	for range 4096 {
		c, err := h.Alloc(48)
		if err != nil {
			fmt.Println("alloc:", err)
			os.Exit(1)
		}
		if &c[0] == p {
			fmt.Printf("block handed out again, byte 5 = %#x\n", c[5])
			os.Exit(3)
		}
	}
	fmt.Println("block not handed out again")
	os.Exit(4)
}

// TestHardeningCheckZeroGo: the same for the Go allocator, through the
// environment (alloc.Default reads SECRETHEAP_CHECK_ZERO): a panic that
// names the write after free; the control hands the dirty block out.
func TestHardeningCheckZeroGo(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, tc := range []struct {
		name, env string
	}{{"check", "1"}, {"control", "0"}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHardeningCheckZeroGo$")
			cmd.Env = append(os.Environ(), "VERIFY_CHILD=checkzero", "SECRETHEAP_CHECK_ZERO="+tc.env)
			out, ws := exitOf(t, cmd)
			if tc.env == "1" {
				assert.Equal(t, 2, ws.ExitStatus(), "want a panic: %s", out)
				assert.Regexp(t, `secretheap: write after free: block 0x[0-9a-f]+`, out)
			} else {
				assert.Equal(t, 3, ws.ExitStatus(), out)
				assert.Contains(t, out, "byte 5 = 0x77")
			}
		})
	}
}

// TestHardeningSecureReport: in `secure` mode the library probes at start
// whether libcrypto's own calls to CRYPTO_secure_* reach it, and says so.
// A fake libcrypto built twice shows both answers: as an ordinary shared
// library (internal calls through the PLT, as Debian builds it) the probe
// succeeds (reported at SECRETHEAP_VERBOSE=1, silent at 0); built with
// -Bsymbolic-functions the calls bind inside the library and the library
// falls back to serving every OpenSSL allocation from secret memory
// (reported at SECRETHEAP_VERBOSE=1, never the old "not served" warning).
// The real openssl must probe as interposed on this machine.
func TestHardeningSecureReport(t *testing.T) {
	lib := testutil.Built(t, "libsecretheap.so")
	testutil.RequireSecretMem(t)
	const (
		ok       = "CRYPTO_secure_* interposed"
		warn     = "OpenSSL mode secure: libcrypto does not call CRYPTO_secure_* through the PLT"
		fallback = "every OpenSSL allocation is served from secret memory instead"
	)
	for _, tc := range []struct {
		name, prog, verbose string
		want, notWant       string
	}{
		{"plt-verbose", "plt/report", "1", ok, warn},
		{"plt-quiet", "plt/report", "0", "", warn},
		{"symbolic", "symbolic/report", "1", fallback, warn},
		{"symbolic-quiet", "symbolic/report", "0", "", warn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(helper(t, tc.prog))
			cmd.Env = append(os.Environ(), "LD_PRELOAD="+lib, "SECRETHEAP_OPENSSL=secure",
				"SECRETHEAP_VERBOSE="+tc.verbose)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, string(out))
			assert.Contains(t, string(out), "ok\n", "the program still runs")
			if tc.want != "" {
				assert.Contains(t, string(out), tc.want)
			}
			assert.NotContains(t, string(out), tc.notWant)
		})
	}
	t.Run("openssl", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl not installed")
		}
		cmd := exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
		cmd.Env = append(os.Environ(), "LD_PRELOAD="+lib, "SECRETHEAP_OPENSSL=secure", "SECRETHEAP_VERBOSE=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Contains(t, string(out), ok, "Debian's libcrypto calls CRYPTO_secure_* through the PLT")
		assert.Contains(t, string(out), "BEGIN PRIVATE KEY", "the program still works")
	})
}

func TestMain(m *testing.M) {
	if os.Getenv("VERIFY_CHILD") == "checkzero" {
		checkZeroChild()
	}
	os.Exit(m.Run())
}
