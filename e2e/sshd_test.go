package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/stretchr/testify/require"
)

// lookTool finds a program the test needs: missing, it fails under
// SECRETHEAP_REQUIRE=1 (CI installs it) and skips otherwise.
func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, e := os.Stat(filepath.Join(dir, name)); e == nil {
				return filepath.Join(dir, name)
			}
		}
		msg := fmt.Sprintf("%s missing (apt-get install %s)", name, pkg)
		if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestSSHDLogins runs OpenSSH's sshd with the library preloaded and logs in
// 20 times. sshd closes every descriptor it did not open (and re-executes
// itself per connection); when the core kept a /dev/zero descriptor for its
// commits, every commit after that failed with EBADF and 0 of 20 logins
// succeeded (issue 12). The listener's stats show OpenSSL's allocations in
// secret memory.
func TestSSHDLogins(t *testing.T) {
	lib := setup(t)
	sshd := lookTool(t, "sshd", "openssh-server")
	ssh := lookTool(t, "ssh", "openssh-client")
	keygen := lookTool(t, "ssh-keygen", "openssh-client")
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root for privilege separation")
	}
	dir := t.TempDir() // 0700
	for _, k := range []string{"hostkey", "userkey"} {
		r := run(t, env(""), "", keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k))
		requireOK(t, r, "ssh-keygen")
	}
	pub, err := os.ReadFile(filepath.Join(dir, "userkey.pub"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600))
	require.NoError(t, os.MkdirAll("/run/sshd", 0o755)) // privilege separation directory

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	conf := filepath.Join(dir, "sshd_config")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/hostkey
PidFile none
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
`, port, dir, dir)), 0o600))

	statsPath := filepath.Join(dir, "stats.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := exec.CommandContext(ctx, sshd, "-D", "-e", "-f", conf)
	srv.Env = env(lib, statsEnv(statsPath))
	var log testutil.SyncBuffer
	srv.Stdout, srv.Stderr = &log, &log
	require.NoError(t, srv.Start())
	defer func() { _ = srv.Process.Kill() }()

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "sshd did not listen on %s: %s", addr, log.String())
		time.Sleep(50 * time.Millisecond)
	}

	ok := 0
	var failures []string
	for i := 0; i < 20; i++ {
		r := run(t, env(""), "", ssh, "-p", fmt.Sprint(port), "-i", filepath.Join(dir, "userkey"),
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
			"-o", "LogLevel=ERROR", "root@127.0.0.1", "echo", "login-ok")
		if r.err == nil && strings.TrimSpace(r.stdout) == "login-ok" {
			ok++
		} else if len(failures) < 3 {
			failures = append(failures, fmt.Sprintf("%v: %s", r.err, r.stderr))
		}
	}
	require.NoError(t, srv.Process.Signal(syscall.SIGTERM))
	_ = srv.Wait()
	require.Equal(t, 20, ok, "logins with the library preloaded into sshd; first failures: %v\nsshd:\n%s",
		failures, log.String())
	require.NotContains(t, log.String(), "secretheap: WARNING", "the library warned inside sshd")
	requireServedFromSecret(t, readStats(t, statsPath))
}
