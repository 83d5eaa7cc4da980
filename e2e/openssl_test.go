package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/testutil"
)

// TestOpenSSLCommands runs key generation and checking with the openssl
// command under the library: every command succeeds and its OpenSSL
// allocations come from secret memory. The control (SECRETHEAP_OPENSSL=off)
// shows the stats check would notice if they did not.
func TestOpenSSLCommands(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
	}{
		{"EC P-256", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"}},
		{"RSA 2048", []string{"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := filepath.Join(dir, fmt.Sprintf("key%d.pem", i))
			st := filepath.Join(dir, fmt.Sprintf("genpkey%d.stats", i))
			args := append([]string{"genpkey"}, tc.args...)
			r := run(t, env(lib, statsEnv(st)), "", "openssl", append(args, "-out", key)...)
			requireOK(t, r, "openssl genpkey")
			s := readStats(t, st)
			requireServedFromSecret(t, s)
			// The private key's BIGNUMs go through CRYPTO_secure_*.
			assert.NotZero(t, s.num(t, "openssl_secure_alloc_calls"))

			st = filepath.Join(dir, fmt.Sprintf("check%d.stats", i))
			r = run(t, env(lib, statsEnv(st)), "", "openssl", "pkey", "-in", key, "-check", "-noout")
			requireOK(t, r, "openssl pkey -check")
			assert.Contains(t, r.stdout+r.stderr, "Key is valid")
			requireServedFromSecret(t, readStats(t, st))

			// Control: with the OpenSSL hooks off the same command
			// allocates nothing from us, and the checks above would fail.
			st = filepath.Join(dir, fmt.Sprintf("off%d.stats", i))
			r = run(t, env(lib, statsEnv(st), "SECRETHEAP_OPENSSL=off"), "", "openssl", "pkey", "-in", key, "-check", "-noout")
			requireOK(t, r, "openssl pkey -check (off)")
			off := readStats(t, st)
			assert.Equal(t, "no", off.str(t, "openssl_hooks"))
			assert.Zero(t, off.num(t, "openssl_malloc_calls"))
			assert.Zero(t, off.num(t, "chunks_secret"))
		})
	}
}

// TestTLSHandshake runs openssl s_server and s_client, both under the
// library, for TLS 1.3 handshakes on 127.0.0.1 in each OpenSSL mode, and
// checks what each mode promises in both processes' stats.
func TestTLSHandshake(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	key, cert := keyPair(t, dir)
	const handshakes = 3

	type check func(t *testing.T, s stats)
	cases := []struct {
		mode         string
		server, clnt check
	}{
		{"all", func(t *testing.T, s stats) {
			requireServedFromSecret(t, s)
			assert.NotZero(t, s.num(t, "openssl_secure_alloc_calls"), "server key not in the secure path")
			assert.Equal(t, "yes", s.str(t, "openssl_secure_interposed"))
		}, requireServedFromSecret},
		{"secure", func(t *testing.T, s stats) {
			// Only the secure-heap API: the private key, DRBG state.
			assert.Equal(t, "secure", s.str(t, "openssl_mode"))
			assert.Equal(t, "yes", s.str(t, "openssl_secure_interposed"))
			assert.NotZero(t, s.num(t, "openssl_secure_alloc_calls"))
			assert.Zero(t, s.num(t, "openssl_malloc_calls"))
			assert.NotZero(t, s.num(t, "chunks_secret"))
		}, func(t *testing.T, s stats) {
			assert.Zero(t, s.num(t, "openssl_malloc_calls"))
		}},
		{"off", func(t *testing.T, s stats) {
			assert.Equal(t, "no", s.str(t, "openssl_hooks"))
			assert.Zero(t, s.num(t, "openssl_malloc_calls"))
			assert.Zero(t, s.num(t, "openssl_secure_alloc_calls"))
			assert.Zero(t, s.num(t, "chunks_secret"))
		}, func(t *testing.T, s stats) {
			assert.Zero(t, s.num(t, "openssl_malloc_calls"))
			assert.Zero(t, s.num(t, "chunks_secret"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			sst := filepath.Join(dir, tc.mode+"-server.stats")
			// -rev: an echo server that never reads its own stdin (s_server
			// otherwise ends a connection at stdin EOF); -naccept makes it
			// exit, and so print its stats, after our clients.
			srv := sserver(t, launch.Options{CleanEnv: true, Library: lib, Env: []string{statsEnv(sst), "SECRETHEAP_OPENSSL=" + tc.mode}},
				launch.KeyPair{Key: key, Cert: cert}, "-rev", "-naccept", strconv.Itoa(handshakes), "-no_cache", "-num_tickets", "0")
			for i := 0; i < handshakes; i++ {
				cst := filepath.Join(dir, fmt.Sprintf("%s-client%d.stats", tc.mode, i))
				r := run(t, env(lib, statsEnv(cst), "SECRETHEAP_OPENSSL="+tc.mode), "ping\n",
					"openssl", "s_client", "-connect", srv.Addr(), "-tls1_3",
					"-brief", "-CAfile", cert, "-verify_return_error", "-verify_hostname", "localhost")
				requireOK(t, r, "openssl s_client")
				assert.Contains(t, r.stderr, "Protocol version: TLSv1.3")
				assert.Contains(t, r.stderr, "Verification: OK")
				tc.clnt(t, readStats(t, cst))
			}
			require.NoError(t, srv.Wait(cmdTimeout), "s_server: %s", srv.Stderr())
			tc.server(t, readStats(t, sst))
		})
	}
}

// TestDlopenLibcrypto is Python's case: the program does not link libcrypto
// and loads it after start with dlopen. Our dlopen wrapper must hook it
// before its first allocation. Two shapes:
//
//   - plugin: the program dlopen()s a module linked with libcrypto (Python's
//     _ssl): the module's OPENSSL_malloc blocks are secret memory, its
//     OPENSSL_secure_malloc blocks too (in modes all and secure), and its later
//     CRYPTO_set_mem_functions (which OpenSSL would accept, then free our
//     blocks with the caller's free) is refused (0): the libcrypto already
//     holds blocks of ours;
//   - libcrypto: the program dlopen()s libcrypto itself and calls its
//     functions through dlsym on the handle, bypassing every interposer:
//     mode all still serves everything through the hooks, mode secure cannot
//     see those secure calls (documented), and nothing crashes.
//
// The controls (no library, mode off) show the backend checks can fail.
func TestDlopenLibcrypto(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	prog := compileC(t, dir, "dlopen_crypto.c", "-ldl")
	plugin := compileShared(t, dir, "plugin.c", "-lcrypto")
	type want map[string]string
	runOutputCases(t, "dlopen_crypto", prog, []outputCase{
		{"plugin/all", plugin, env(lib), want{"malloc_backend": "1", "secure_backend": "1",
			"secure_initialized": "1", "set_mem_functions": "0", "after_backend": "1", "their_calls": "0"}},
		{"plugin/secure", plugin, env(lib, "SECRETHEAP_OPENSSL=secure"), want{"malloc_backend": "0",
			"secure_backend": "1", "secure_initialized": "1", "after_backend": "0", "their_calls": "0"}},
		{"plugin/off", plugin, env(lib, "SECRETHEAP_OPENSSL=off"), want{"malloc_backend": "0",
			"secure_backend": "0", "secure_initialized": "0", "set_mem_functions": "0"}},
		{"plugin/no library", plugin, env(""), want{"malloc_backend": "-1", "secure_backend": "-1",
			"secure_initialized": "0"}},
		{"libcrypto/all", "libcrypto.so.3", env(lib), want{"malloc_backend": "1", "secure_backend": "1",
			"set_mem_functions": "0", "after_backend": "1", "their_calls": "0"}},
		{"libcrypto/secure", "libcrypto.so.3", env(lib, "SECRETHEAP_OPENSSL=secure"),
			want{"malloc_backend": "0", "secure_backend": "0", "their_calls": "0"}},
		{"libcrypto/off", "libcrypto.so.3", env(lib, "SECRETHEAP_OPENSSL=off"),
			want{"malloc_backend": "0", "secure_backend": "0", "set_mem_functions": "0"}},
		{"libcrypto/no library", "libcrypto.so.3", env(""), want{"malloc_backend": "-1", "secure_backend": "-1"}},
	})
}

// TestHooksRefused: a module whose constructor allocates through OpenSSL is
// dlopen()ed, so OpenSSL has used its default allocator before our dlopen
// wrapper can install hooks and refuses them. The library must say so once
// on stderr and in the stats, leave ordinary allocations to libc, still
// serve the secure-heap API from secret memory, and not crash.
func TestHooksRefused(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	prog := compileC(t, dir, "dlopen_crypto.c", "-ldl")
	plugin := compileShared(t, dir, "plugin.c", "-DALLOC_IN_CTOR", "-lcrypto")
	st := filepath.Join(dir, "refused.stats")
	r := run(t, env(lib, statsEnv(st)), "", prog, plugin)
	requireOK(t, r, "dlopen_crypto with an allocating constructor")
	assert.Equal(t, 1, strings.Count(r.stderr, "OpenSSL refused CRYPTO_set_mem_functions"), r.stderr)
	got := parseOutput(r.stdout)
	assert.Equal(t, "0", got["malloc_backend"], r.stdout)
	assert.Equal(t, "1", got["secure_backend"], r.stdout)
	assert.Equal(t, "0", got["set_mem_functions"], "OpenSSL's own answer, forwarded")
	s := readStats(t, st)
	assert.Equal(t, "no", s.str(t, "openssl_hooks"))
	assert.Equal(t, uint64(1), s.num(t, "openssl_refused"))
	assert.Equal(t, uint64(2), s.num(t, "openssl_hooked"), "the core's field: 2 = refused")
}

// TestSecureHeapAPI runs a program that turns on OpenSSL's own secure heap
// and uses it. Under the library (all, secure) the calls are answered from
// secret memory (backend 1) and keep the API's promises (zeroed, sizes,
// usage, done once empty); with the library off or absent OpenSSL's arena
// serves them (backend 0 / -1), which is the control.
func TestSecureHeapAPI(t *testing.T) {
	lib := setup(t)
	prog := compileC(t, t.TempDir(), "secure_heap.c", "-lcrypto", "-ldl")
	promises := map[string]string{"init": "1", "initialized": "1", "zeroed": "1",
		"actual_size_ok": "1", "used_ok": "1", "allocated": "1", "done_while_live": "0",
		"used_after_free": "0", "done": "1", "initialized_after_done": "0", "init_again": "1",
		"initialized_again": "1"}
	cases := []struct {
		name    string
		environ []string
		backend string
	}{
		{"all", env(lib), "1"},
		{"secure", env(lib, "SECRETHEAP_OPENSSL=secure"), "1"},
		{"off", env(lib, "SECRETHEAP_OPENSSL=off"), "0"},
		{"no library", env(""), "-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", prog)
			requireOK(t, r, "secure_heap")
			got := parseOutput(r.stdout)
			assert.Equal(t, tc.backend, got["backend"], r.stdout)
			for k, v := range promises {
				assert.Equal(t, v, got[k], "%s\n%s", k, r.stdout)
			}
		})
	}
}

// TestPythonSSL is the case the dlopen hook exists for: CPython loads its
// _ssl module (linked with libssl/libcrypto) with dlopen long after start.
// Skipped where python3 has no ssl module. Launchers such as pyenv's shims
// run other processes first, so any process's report may be Python's.
func TestPythonSSL(t *testing.T) {
	lib := setup(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	script := "import ssl; c = ssl.create_default_context(); print('ssl ok', ssl.OPENSSL_VERSION)"
	if r := run(t, env(""), "", py, "-c", script); r.err != nil {
		t.Skipf("python3 has no usable ssl module: %v %s", r.err, r.stderr)
	}
	st := filepath.Join(t.TempDir(), "python.stats")
	r := run(t, env(lib, statsEnv(st)), "", py, "-c", script)
	requireOK(t, r, "python3 ssl")
	assert.Contains(t, r.stdout, "ssl ok")
	b, err := os.ReadFile(st)
	require.NoError(t, err)
	var python stats
	for _, s := range parseStatsAll(string(b)) {
		if s["openssl_hooks"] == "yes" {
			python = s
		}
	}
	require.NotNil(t, python, "no process hooked OpenSSL:\n%s", b)
	requireServedFromSecret(t, python)
}

// TestDlopenKeepsCallerRunpath: glibc's dlopen searches a bare file name in
// the calling object's DT_RUNPATH, and our dlopen wrapper is the caller the
// real dlopen sees. A program whose plugin is found only through its own
// RUNPATH ($ORIGIN/sub) must load it with the library as without it.
func TestDlopenKeepsCallerRunpath(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	libdep(t, dir, "sub")
	prog := compileC(t, dir, "runpath_main.c", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/sub", "-ldl")
	withAndWithout(t, lib, func(t *testing.T, environ []string) {
		r := run(t, environ, "", prog)
		requireOK(t, r, "runpath_main")
		assert.Contains(t, r.stdout, "dep_value 42")
	})
}

// TestInterpositionProbe checks the start-up probe of mode secure against a
// stand-in libcrypto built twice: with its internal calls to
// CRYPTO_secure_zalloc through the PLT (as Debian's libcrypto.so.3 does, so
// our interposed function is reached) and linked -Bsymbolic (bound inside the
// library, as upstream links libcrypto.so.3). The probe must tell them
// apart; for the -Bsymbolic one mode secure falls back to the general hooks,
// so its secure allocations (which reach its CRYPTO_malloc) still come from
// secret memory, reported in the stats ("secure served by general-hooks")
// without a warning. Before, they went to libc memory with a warning.
func TestInterpositionProbe(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	prog := compileC(t, dir, "dlopen_crypto.c", "-ldl")
	plt := compileShared(t, dir, "fakecrypto.c")
	symbolic := filepath.Join(dir, "fakecrypto-symbolic.so")
	r := run(t, env(""), "", "cc", "-std=c11", "-O1", "-shared", "-fPIC", "-Wl,-Bsymbolic", "-o", symbolic,
		filepath.Join("testdata", "fakecrypto.c"))
	requireOK(t, r, "cc -Bsymbolic")
	cases := []struct {
		name, lib, interposed, servedBy, secureBackend string
	}{
		// dlopen_crypto calls the fake's CRYPTO_secure_malloc through dlsym,
		// bypassing the interposer: only the fallback sees that call.
		{"through the PLT", plt, "yes", "interposition", "0"},
		{"-Bsymbolic", symbolic, "bound-inside-libcrypto", "general-hooks", "1"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := filepath.Join(dir, fmt.Sprintf("probe%d.stats", i))
			r := run(t, env(lib, "SECRETHEAP_OPENSSL=secure", statsEnv(st)), "", prog, tc.lib)
			requireOK(t, r, "dlopen_crypto")
			s := readStats(t, st)
			assert.Equal(t, tc.interposed, s.str(t, "openssl_secure_interposed"))
			assert.Equal(t, tc.servedBy, s.str(t, "openssl_secure_served_by"))
			assert.Equal(t, tc.secureBackend, parseOutput(r.stdout)["secure_backend"], r.stdout)
			assert.NotContains(t, r.stderr, "PLT", "no warning: the fallback is automatic")
		})
	}
}

// TestForkServer runs the pre-forking example server: the parent loads the
// key, forks workers and then makes many handshakes against them itself; at
// shutdown every process checks its canary block and the key. The control
// (SECRETHEAP_FORK=dontfork: children lose the secret pages) must fail,
// showing that the server's verification notices broken workers.
func TestForkServer(t *testing.T) {
	lib := setup(t)
	server := testutil.Built(t, "tls_server")
	dir := t.TempDir()
	key, cert := keyPair(t, dir)
	args := []string{"-cert", cert, "-key", key, "-workers", "4", "-selftest", "300"}

	t.Run("copy", func(t *testing.T) {
		st := filepath.Join(dir, "fork.stats")
		r := run(t, env(lib, statsEnv(st)), "", server, args...)
		requireOK(t, r, "tls_server")
		assert.Contains(t, r.stderr, "parent selftest 300/300 handshakes ok")
		assert.Equal(t, 4, strings.Count(r.stderr, "verify ok"), r.stderr)
		assert.Contains(t, r.stderr, "tls_server: all verified")
		// Every process reports; the parent exits last.
		b, err := os.ReadFile(st)
		require.NoError(t, err)
		all := parseStatsAll(string(b))
		require.Len(t, all, 5, "parent + 4 workers:\n%s", b)
		for i, s := range all {
			requireServedFromSecret(t, s)
			if i < 4 { // a worker: its chunks were made private at fork
				assert.NotZero(t, s.num(t, "fork_reprivatised"), "worker pid %s", s["pid"])
			} else {
				assert.Zero(t, s.num(t, "fork_reprivatised"), "the parent")
			}
		}
	})
	t.Run("dontfork control", func(t *testing.T) {
		r := run(t, env(lib, "SECRETHEAP_FORK=dontfork"), "", server, args...)
		require.Error(t, r.err, "workers without their secret pages cannot have served")
		_, crashed := r.signaled()
		assert.False(t, crashed, "the parent itself must not crash: %s", r.stderr)
		assert.Contains(t, r.stderr, "tls_server: FAILED")
	})
}

// TestMemlockUnprivileged runs the forking server as nobody (uid 65534, so
// CAP_IPC_LOCK no longer lifts RLIMIT_MEMLOCK) under small limits. With the
// default policy (fallback) every handshake still completes, the shortfall is
// counted as fallbacks, and no process dies of a signal; with policy null the
// program may fail, but never crashes.
func TestMemlockUnprivileged(t *testing.T) {
	lib := setup(t)
	server := testutil.Built(t, "tls_server")
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child as uid 65534")
	}
	prlimit := "prlimit"
	if _, err := exec.LookPath(prlimit); err != nil {
		t.Skip("prlimit (util-linux) missing")
	}
	// A world-readable copy of everything the unprivileged child needs.
	dir, err := os.MkdirTemp("", "secretheap-e2e-memlock")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	key, cert := keyPair(t, dir)
	lib = copyExec(t, lib, filepath.Join(dir, "libsecretheap.so"))
	server = copyExec(t, server, filepath.Join(dir, "tls_server"))
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

	cases := []struct {
		name      string
		limit     string
		policy    string
		handshake int
		mustPass  bool
		fallbacks func(t *testing.T, n uint64)
		workers   int
	}{
		{"64KiB fallback", "65536", "fallback", 8, true, func(t *testing.T, n uint64) {
			assert.NotZero(t, n, "64 KiB cannot hold a TLS server's allocations: fallbacks expected")
		}, 2},
		{"8MiB fallback", "8388608", "fallback", 60, true, func(t *testing.T, n uint64) {
			assert.Zero(t, n, "8 MiB holds a TLS server's allocations")
		}, 2},
		{"64KiB null", "65536", "null", 8, false, nil, 2},
		// 16 workers: under the new accounting model the master and every
		// worker share one 8 MiB budget, which does not hold them all; a
		// worker whose copy does not fit copies into ordinary memory and keeps
		// serving (before: it aborted, "refusing to continue sharing").
		{"8MiB 16 workers", "8388608", "fallback", 48, true, func(t *testing.T, n uint64) {}, 16},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := filepath.Join(dir, fmt.Sprintf("memlock%d.stats", i))
			r := runAs(t, env(lib, statsEnv(st), "SECRETHEAP_ON_EXHAUSTED="+tc.policy), "", nobody,
				prlimit, "--memlock="+tc.limit+":"+tc.limit, server, "-cert", cert, "-key", key,
				"-workers", strconv.Itoa(tc.workers), "-selftest", strconv.Itoa(tc.handshake))
			sig, crashed := r.signaled()
			require.False(t, crashed, "killed by %v\nstderr: %s", sig, r.stderr)
			require.NotContains(t, r.stderr, "killed by signal", "a worker crashed")
			if !tc.mustPass {
				return
			}
			require.NotContains(t, r.stderr, "refusing to continue sharing", "a worker stopped at fork")
			requireOK(t, r, "tls_server as nobody")
			assert.Contains(t, r.stderr, "tls_server: all verified")
			s := readStats(t, st)
			assert.Equal(t, "yes", s.str(t, "openssl_hooks"))
			tc.fallbacks(t, s.num(t, "fallbacks"))
		})
	}
}

// copyExec copies a file to dst with mode 0755 and returns dst.
func copyExec(t *testing.T, src, dst string) string {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return dst
}
