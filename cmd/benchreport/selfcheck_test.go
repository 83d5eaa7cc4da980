package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/repo"
	"github.com/secretheap/secretheap/internal/testutil"
)

// buildBench compiles a bench/c program into a temporary directory.
func buildBench(t *testing.T, name string, libs ...string) string {
	t.Helper()
	if _, err := exec.LookPath(ccName()); err != nil {
		t.Skipf("no C compiler: %v", err)
	}
	root, err := repo.Root()
	require.NoError(t, err)
	path, err := compileC(root, t.TempDir(), name, libs...)
	require.NoError(t, err)
	return path
}

// libPath is build/libsecretheap.so, or "" if it is not built.
func libPath(t *testing.T) string {
	p, err := repo.Built("libsecretheap.so")
	if err != nil {
		t.Log(err)
		return ""
	}
	return p
}

// TestSelfChecks runs each allocbench backend's self-check as it is run
// before timing, then with the step removed that makes its claim true: the
// check must pass in the first case and fail (exit status 3, a reason
// naming the backend) in the second.
func TestSelfChecks(t *testing.T) {
	testutil.RequireSecretMem(t)
	bin := buildBench(t, "allocbench", "-lcrypto", "-lsodium", "-lpthread", "-ldl")
	lib := libPath(t)
	asan := ""
	if out, err := exec.Command(ccName(), "-print-file-name=libasan.so").Output(); err == nil {
		if p := string(out[:len(out)-1]); filepath.IsAbs(p) {
			asan = p
		}
	}
	for _, tc := range []struct {
		name     string
		backend  string
		args     []string
		env      []string
		needLib  bool
		needAsan bool // env preloads libasan.so (a malloc interposer)
		wantOK   bool
		reason   string
	}{
		{name: "glibc", backend: "glibc", wantOK: true},
		{name: "glibc/malloc interposed", backend: "glibc", env: []string{"LD_PRELOAD=" + asan}, needAsan: true,
			reason: "malloc comes from"},
		{name: "openssl", backend: "openssl", wantOK: true},
		{name: "openssl/hooked", backend: "openssl", args: []string{"--sabotage"}, reason: "allocator is hooked"},
		{name: "openssl/under the library", backend: "openssl", needLib: true, reason: "hooked"},
		{name: "secure", backend: "secure", wantOK: true},
		{name: "secure/not initialised", backend: "secure", args: []string{"--sabotage"}, reason: "not initialised"},
		{name: "sodium", backend: "sodium", wantOK: true},
		{name: "sodium/mlock refused", backend: "sodium", args: []string{"--sabotage"}, reason: "did not lock a page"},
		{name: "memfd", backend: "memfd", wantOK: true},
		{name: "memfd/memfd_create instead", backend: "memfd", args: []string{"--sabotage"}, reason: "not in a secretmem mapping"},
		{name: "secretheap", backend: "secretheap", needLib: true, wantOK: true},
		{name: "secretheap/not preloaded", backend: "secretheap", reason: "not loaded"},
		{name: "secretheap/locked backend", backend: "secretheap", needLib: true,
			env: []string{"SECRETHEAP_BACKEND=locked"}, reason: "want 1 (secret)"},
		{name: "preload", backend: "preload", needLib: true, wantOK: true},
		{name: "preload/OpenSSL hooks off", backend: "preload", needLib: true,
			env: []string{"SECRETHEAP_OPENSSL=off"}, reason: "hook inactive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needLib && lib == "" {
				t.Skip("build/libsecretheap.so not built (make)")
			}
			if tc.needAsan && asan == "" {
				t.Skip("libasan.so not found")
			}
			env := cleanEnv(tc.env...)
			if tc.needLib {
				env = append(env, "LD_PRELOAD="+lib)
			}
			cmd := exec.Command(bin, append([]string{"check", tc.backend}, tc.args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if tc.wantOK {
				require.NoError(t, err, "%s", out)
				assert.Contains(t, string(out), `"ok":true`)
				return
			}
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", out)
			assert.Equal(t, 3, ee.ExitCode(), "%s", out)
			assert.Contains(t, string(out), "self-check failed")
			assert.Contains(t, string(out), tc.reason)
		})
	}
}

// TestTLSSelfChecks: tlsbench's handshake and hook checks.
func TestTLSSelfChecks(t *testing.T) {
	bin := buildBench(t, "tlsbench", "-lssl", "-lcrypto", "-lpthread", "-ldl")
	lib := libPath(t)
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		needLib bool
		wantOK  bool
		reason  string
	}{
		{name: "plain", args: []string{"inproc", "-n", "3", "--count"}, wantOK: true},
		{name: "preloaded", args: []string{"inproc", "-n", "3"}, needLib: true, wantOK: true},
		{name: "preloaded, hooks off", args: []string{"inproc", "-n", "3"}, needLib: true,
			env: []string{"SECRETHEAP_OPENSSL=off"}, reason: "not served from secret memory"},
		{name: "counting under the library", args: []string{"inproc", "-n", "3", "--count"}, needLib: true,
			reason: "--count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needLib {
				if lib == "" {
					t.Skip("build/libsecretheap.so not built (make)")
				}
				testutil.RequireSecretMem(t)
				tc.env = append(tc.env, "LD_PRELOAD="+lib)
			}
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = cleanEnv(tc.env...)
			out, err := cmd.CombinedOutput()
			if tc.wantOK {
				require.NoError(t, err, "%s", out)
				recs, perr := ParseRecords(string(out))
				require.NoError(t, perr)
				require.Len(t, recs, 1)
				assert.Equal(t, tc.needLib, recs[0]["preload"])
				return
			}
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", out)
			assert.Equal(t, 3, ee.ExitCode(), "%s", out)
			assert.Contains(t, string(out), tc.reason)
		})
	}
}
