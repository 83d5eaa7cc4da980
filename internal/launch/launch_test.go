package launch_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/testutil"
)

func requireOpenSSL(t *testing.T) { testutil.LookTool(t, "openssl", "openssl") }

// alive reports whether pid exists (a zombie counts until reaped).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestSServers: two servers started at once get ports of their own (port 0,
// read from their ACCEPT line), each serves a verified TLS handshake, and
// Stop ends each.
func TestSServers(t *testing.T) {
	requireOpenSSL(t)
	kp, _, err := launch.NewP256(t.TempDir(), false)
	require.NoError(t, err)
	var srvs []*launch.Server
	for range 2 {
		s, err := launch.SServer(context.Background(), launch.Options{CleanEnv: true}, kp, "-www")
		require.NoError(t, err)
		t.Cleanup(s.Stop)
		srvs = append(srvs, s)
	}
	require.NotEqual(t, srvs[0].Port, srvs[1].Port)
	pemCert, err := os.ReadFile(kp.Cert)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(pemCert))
	for _, s := range srvs {
		c, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
		require.NoError(t, err, "handshake with %s", s.Addr())
		c.Close()
		s.Stop()
		assert.False(t, alive(s.PID), "stopped and reaped")
	}
}

// TestForkServerStop: ForkServer lists the forking example server's workers
// (each forked before it returns), and Stop ends them with the parent.
func TestForkServerStop(t *testing.T) {
	requireOpenSSL(t)
	bin := testutil.Built(t, "tls_server")
	kp, _, err := launch.NewP256(t.TempDir(), false)
	require.NoError(t, err)
	s, workers, err := launch.ForkServer(context.Background(), launch.Options{CleanEnv: true}, bin, kp, 2)
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	require.Len(t, workers, 2)
	s.Stop()
	require.Eventually(t, func() bool { return !alive(workers[0]) && !alive(workers[1]) }, 10*time.Second, 20*time.Millisecond,
		"workers %v outlived Stop", workers)
}

// TestReadyExited: a program that ends before its ready line is an error
// naming that, with its stderr.
func TestReadyExited(t *testing.T) {
	_, err := launch.Start(context.Background(), launch.Options{Ready: regexp.MustCompile(`^ready$`)},
		"sh", "-c", "echo not-ready; echo boom >&2; exit 3")
	require.Error(t, err)
	assert.True(t, errors.Is(err, launch.ErrExited), "%v", err)
	assert.Contains(t, err.Error(), "boom")
}

// TestContextKills: the context's end kills the group.
func TestContextKills(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := launch.Start(ctx, launch.Options{Ready: regexp.MustCompile(`^up$`)}, "sh", "-c", "echo up; exec sleep 60")
	require.NoError(t, err)
	cancel()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("still running after the context ended")
	}
}

// TestEnviron: CleanEnv drops the caller's SECRETHEAP_* and LD_PRELOAD;
// Library comes first in LD_PRELOAD; Env comes last.
func TestEnviron(t *testing.T) {
	t.Setenv("SECRETHEAP_BACKEND", "locked")
	t.Setenv("LD_PRELOAD", "/x/other.so")
	env := launch.Options{CleanEnv: true, Library: "/x/libsecretheap.so", Env: []string{"SECRETHEAP_STATS=stderr"}}.Environ()
	assert.NotContains(t, env, "SECRETHEAP_BACKEND=locked")
	assert.Contains(t, env, "LD_PRELOAD=/x/libsecretheap.so")
	assert.Equal(t, "SECRETHEAP_STATS=stderr", env[len(env)-1])
	kept := launch.Options{Library: "/x/libsecretheap.so"}.Environ()
	assert.Contains(t, kept, "SECRETHEAP_BACKEND=locked")
	assert.Contains(t, kept, "LD_PRELOAD=/x/libsecretheap.so:/x/other.so")
}

// TestStopKillsGroup: a process the program forked, which outlives its
// parent, is killed by Stop with the rest of the group.
func TestStopKillsGroup(t *testing.T) {
	p, err := launch.Start(context.Background(), launch.Options{Ready: regexp.MustCompile(`^child (\d+)$`)},
		"sh", "-c", "sleep 300 & echo child $!; exec sleep 300")
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	kid, err := strconv.Atoi(p.Ready)
	require.NoError(t, err)
	p.Stop()
	require.Eventually(t, func() bool { return !alive(kid) }, 10*time.Second, 20*time.Millisecond, "the forked sleep outlived Stop")
}

// TestMemlock: the program runs under the limit Options.Memlock sets (as
// its own process: prlimit execs it).
func TestMemlock(t *testing.T) {
	testutil.LookTool(t, "prlimit", "util-linux")
	p, err := launch.Start(context.Background(), launch.Options{Memlock: 64 << 10, Ready: regexp.MustCompile(`^(\d+)$`)},
		"sh", "-c", "ulimit -l; exec sleep 60")
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	assert.Equal(t, "64", p.Ready, "ulimit -l prints KiB")
	// The shell execs sleep after its ulimit line: wait for that.
	require.Eventually(t, func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		return err == nil && string(cmdline) == "sleep\x0060\x00"
	}, 10*time.Second, 10*time.Millisecond, "the pid is the program's")
}
