package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/ldpreload"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// tlsTarget is an `openssl s_server` holding a throwaway P-256 key, with or
// without the library preloaded: the process inspect and scan are tested on.
type tlsTarget struct {
	pid  int
	port string
	// scalarLE is the private scalar as a BIGNUM holds it on x86-64
	// (64-bit limbs, least significant first: the big-endian bytes reversed).
	scalarLE []byte
}

var acceptRE = regexp.MustCompile(`ACCEPT 127\.0\.0\.1:(\d+)`)

// startTLSTarget starts the server (preloading lib unless it is "") with env
// added, and makes handshakes TLS handshakes against it.
func startTLSTarget(t *testing.T, lib string, handshakes int, env ...string) tlsTarget {
	t.Helper()
	ossl := requireOpenSSL(t)
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	out, err := exec.Command(ossl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=secretheap-test", "-days", "1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	pemBytes, err := os.ReadFile(key)
	require.NoError(t, err)
	blk, _ := pem.Decode(pemBytes)
	require.NotNil(t, blk)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	require.NoError(t, err)
	be, err := k.(*ecdsa.PrivateKey).Bytes()
	require.NoError(t, err)
	require.Len(t, be, 32)
	le := slices.Clone(be)
	slices.Reverse(le)

	cmd := exec.Command(ossl, "s_server", "-key", key, "-cert", cert, "-accept", "127.0.0.1:0", "-www")
	cmd.Env = os.Environ()
	if lib != "" {
		cmd.Env = append(ldpreload.Env(cmd.Env, lib), "SECRETHEAP_OPENSSL=all", "SECRETHEAP_BACKEND=secret")
	}
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = io.Discard
	cmd.WaitDelay = 2 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	portc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := acceptRE.FindStringSubmatch(sc.Text()); m != nil {
				portc <- m[1]
			}
		}
	}()
	var port string
	select {
	case port = <-portc:
	case <-time.After(20 * time.Second):
		t.Fatal("s_server did not start")
	}
	tg := tlsTarget{pid: cmd.Process.Pid, port: port, scalarLE: le}
	// A few handshakes, so the key has been used (signatures) and freed
	// buffers have been through the allocator.
	for i := 0; i < handshakes; i++ {
		c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true})
		require.NoError(t, err)
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	return tg
}

// startWaitingClient starts `openssl s_client` with the library preloaded
// and env added, against a listener that accepts and never answers (so it
// stays up once started), and returns its pid at once.
func startWaitingClient(t *testing.T, lib string, env ...string) int {
	t.Helper()
	ossl := requireOpenSSL(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	cmd := exec.Command(ossl, "s_client", "-connect", ln.Addr().String())
	cmd.Env = append(ldpreload.Env(os.Environ(), lib), env...)
	stdin, err := cmd.StdinPipe() // held open: s_client would quit at EOF
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.WaitDelay = 2 * time.Second
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	t.Cleanup(func() {
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	})
	return cmd.Process.Pid
}

// TestInspect inspects a preloaded TLS server and, as the control, the same
// server without the library.
func TestInspect(t *testing.T) {
	testutil.RequireSecretMem(t)
	lib := requireLibrary(t)
	t.Run("preloaded", func(t *testing.T) {
		tg := startTLSTarget(t, lib, 3)
		rep, err := inspect(tg.pid)
		require.NoError(t, err)
		assert.Equal(t, lib, rep.Library)
		assert.Equal(t, "memory", rep.LibraryEvidence)
		assert.Equal(t, ldpreload.Version, rep.LibraryVersion)
		assert.Contains(t, rep.Libcrypto, "libcrypto.so")
		assert.False(t, rep.OpenSSLStatic)
		assert.GreaterOrEqual(t, rep.SecretMaps, 1)
		assert.GreaterOrEqual(t, rep.SecretBytes, uint64(64<<10))
		assert.True(t, rep.SmapsReadable)
		assert.Positive(t, rep.SecretRss, "committed OS pages show as Rss")
		assert.LessOrEqual(t, rep.SecretRss, rep.SecretBytes)
		model := secretmem.Detect().Model
		assert.Equal(t, model.String(), rep.Model, "the model seen on the target's mappings")
		if model == secretmem.ModelOld {
			assert.GreaterOrEqual(t, rep.VmLck, rep.SecretBytes, "old model: memfd_secret mappings are charged as locked memory")
		}
		assert.Equal(t, rep.SecretRss, uint64(rep.SecretPages)*4096, "pagemap and smaps count the same committed OS pages")
		if os.Geteuid() == 0 {
			assert.Empty(t, rep.FramesErr)
			assert.GreaterOrEqual(t, rep.Frames, (rep.SecretPages+511)/512)
			assert.LessOrEqual(t, rep.Frames, rep.SecretPages)
		}
		assert.Equal(t, "all", rep.Settings["SECRETHEAP_OPENSSL"])
		require.Empty(t, rep.CountersErr)
		for k, want := range map[string]uint64{"openssl_hooked": 1, "fallbacks": 0, "fork_reprivatised": 0, "misuse_caught": 0,
			"failures_memlock": 0, "failures_descriptors": 0, "failures_other": 0} {
			v, ok := rep.Counters[k]
			assert.True(t, ok && v == want, "counter %s = %d (present %v), want %d", k, v, ok, want)
		}
		assert.Contains(t, rep.OpenSSLHook, "yes: every OpenSSL allocation")

		// The same through the command, as JSON and as text.
		var out, errb bytes.Buffer
		require.Equal(t, 0, dispatch([]string{"inspect", "--json", strconv.Itoa(tg.pid)}, &out, &errb), errb.String())
		var fromJSON inspectReport
		require.NoError(t, json.Unmarshal(out.Bytes(), &fromJSON))
		assert.Equal(t, rep.Library, fromJSON.Library)
		assert.Equal(t, rep.SecretMaps, fromJSON.SecretMaps)
		out.Reset()
		require.Equal(t, 0, dispatch([]string{"inspect", strconv.Itoa(tg.pid)}, &out, &errb))
		assert.Regexp(t, `secretmem +\d+ mappings, `, out.String())
		assert.Contains(t, out.String(), "library        loaded: "+lib)
		assert.Regexp(t, `direct map +\d+ OS pages committed`, out.String())
		assert.Contains(t, out.String(), "accounting     "+model.String()+" model")
	})
	t.Run("fallbacks under a small limit", func(t *testing.T) {
		// The counters are read from the process's memory: a limit far
		// below what OpenSSL needs must show up as live fallbacks, or the
		// zeros above prove nothing. An s_client waiting for a server that
		// never answers is a target that stays up after a short start.
		pid := startWaitingClient(t, lib, "SECRETHEAP_LIMIT=128K")
		var rep inspectReport
		require.Eventually(t, func() bool {
			var err error
			rep, err = inspect(pid)
			// A process inspected while ld.so is still mapping its
			// libraries shows a partial picture (libcrypto not yet in
			// maps): wait until it has started.
			return err == nil && rep.Libcrypto != "" && rep.CountersErr == "" && rep.Counters["fallbacks"] > 0
		}, 20*time.Second, 20*time.Millisecond, "no fallbacks seen: %+v", rep)
		assert.Empty(t, rep.CountersErr)
		assert.Equal(t, uint64(1), rep.Counters["openssl_hooked"])
		assert.LessOrEqual(t, rep.SecretBytes, uint64(128<<10))
		assert.Contains(t, rep.OpenSSLHook, "fell back to ordinary memory")
		assert.Positive(t, rep.Counters["failures_limit"], "the refusals are named: SECRETHEAP_LIMIT")
	})
	t.Run("stripped library", func(t *testing.T) {
		// Distribution packages strip .symtab: the library is recognised
		// and its counters read through its dynamic symbol table, which
		// strip keeps (inspect once needed .symtab, read from the file).
		strip, err := exec.LookPath("strip")
		if err != nil {
			t.Skipf("no strip command: %v", err)
		}
		stripped := filepath.Join(t.TempDir(), "libsecretheap.so")
		out, err := exec.Command(strip, "--strip-all", "-o", stripped, lib).CombinedOutput()
		require.NoError(t, err, "%s", out)
		pid := startWaitingClient(t, stripped)
		var rep inspectReport
		require.Eventually(t, func() bool {
			var err error
			rep, err = inspect(pid)
			return err == nil && rep.Library != "" && rep.SecretMaps > 0
		}, 20*time.Second, 20*time.Millisecond, "%+v", rep)
		assert.Equal(t, stripped, rep.Library)
		assert.Equal(t, "memory", rep.LibraryEvidence)
		assert.Empty(t, rep.CountersErr)
		assert.Equal(t, uint64(1), rep.Counters["openssl_hooked"])
		assert.Contains(t, rep.OpenSSLHook, "yes: every OpenSSL allocation")
	})
	t.Run("control without library", func(t *testing.T) {
		tg := startTLSTarget(t, "", 3)
		rep, err := inspect(tg.pid)
		require.NoError(t, err)
		assert.Empty(t, rep.Library)
		assert.Contains(t, rep.Libcrypto, "libcrypto.so")
		assert.Zero(t, rep.SecretMaps)
		assert.Zero(t, rep.SecretBytes)
		assert.Contains(t, rep.OpenSSLHook, "no: libsecretheap.so is not loaded")
		assert.Nil(t, rep.Counters)
	})
	t.Run("no such process", func(t *testing.T) {
		_, err := inspect(1 << 30)
		assert.Error(t, err)
	})
}

// TestScanTLSKey is the property the demo shows: the private key of a TLS
// server is readable from outside without the library (the control: the
// little-endian scalar sits in a BIGNUM on the libc heap), and not with it,
// where the secret mapping's read is refused. Each read method is tried.
func TestScanTLSKey(t *testing.T) {
	testutil.RequireSecretMem(t)
	lib := requireLibrary(t)
	for _, tc := range []struct {
		name      string
		lib       string
		method    string
		wantFound bool
		wantErrno string
	}{
		{"control procmem", "", "procmem", true, ""},
		{"control vmreadv", "", "vmreadv", true, ""},
		{"protected procmem", lib, "procmem", false, "EIO"},
		{"protected vmreadv", lib, "vmreadv", false, "EFAULT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := startTLSTarget(t, tc.lib, 3)
			var out, errb bytes.Buffer
			code := dispatch([]string{"scan", strconv.Itoa(tg.pid), "--json", "--method", tc.method,
				"--hex", "le=" + hex.EncodeToString(tg.scalarLE)}, &out, &errb)
			require.Contains(t, []int{0, 1}, code, errb.String())
			var rep scanReport
			require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
			assert.Equal(t, tc.wantFound, rep.Found, "%+v", rep)
			assert.Equal(t, tc.wantFound, code == 0, "exit status follows grep")
			assert.Positive(t, rep.BytesRead)
			var secret *unreadable
			for i := range rep.Unreadable {
				if rep.Unreadable[i].Secret {
					secret = &rep.Unreadable[i]
				}
			}
			if tc.wantErrno == "" {
				assert.Nil(t, secret, "no secretmem mapping without the library")
				return
			}
			require.NotNil(t, secret, "the secretmem mapping must be listed as unreadable: %+v", rep)
			assert.Equal(t, tc.wantErrno, secret.Errno)
		})
	}
}
