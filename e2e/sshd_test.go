package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/testutil"
)

// TestSSHDLogins runs OpenSSH's sshd with the library preloaded and logs in
// 20 times. sshd closes every descriptor it did not open (and re-executes
// itself per connection); when the core kept a /dev/zero descriptor for its
// commits, every commit after that failed with EBADF and 0 of 20 logins
// succeeded (issue 12). The listener's stats show OpenSSL's allocations in
// secret memory.
func TestSSHDLogins(t *testing.T) {
	lib := setup(t)
	sshd := testutil.LookTool(t, "sshd", "openssh-server")
	ssh := testutil.LookTool(t, "ssh", "openssh-client")
	keygen := testutil.LookTool(t, "ssh-keygen", "openssh-client")
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

	port, err := launch.FreePort() // sshd cannot report a port of its own choosing
	require.NoError(t, err)
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
	srv, err := launch.Start(ctx, launch.Options{CleanEnv: true, Library: lib, Env: []string{statsEnv(statsPath)}, Role: "sshd"},
		sshd, "-D", "-e", "-f", conf)
	require.NoError(t, err)
	defer srv.Stop()
	log := func() string { return srv.Stdout() + srv.Stderr() }

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	require.NoError(t, launch.ListenUntil(srv, addr, 20*time.Second), "sshd: %s", log())

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
	_, _ = srv.Signal(syscall.SIGTERM, cmdTimeout)
	require.Equal(t, 20, ok, "logins with the library preloaded into sshd; first failures: %v\nsshd:\n%s",
		failures, log())
	require.NotContains(t, log(), "secretheap: WARNING", "the library warned inside sshd")
	requireServedFromSecret(t, readStats(t, statsPath))
}
