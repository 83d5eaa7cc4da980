package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// staticLibcrypto returns the path of a static libcrypto (libssl-dev ships
// one), or skips.
func staticLibcrypto(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libcrypto.a", "/usr/lib64/libcrypto.a", "/usr/lib/libcrypto.a"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
		t.Fatal("no static libcrypto.a (apt-get install libssl-dev)")
	}
	t.Skip("no static libcrypto.a")
	return ""
}

// TestStaticHostEngine: a program with libcrypto linked in statically loads
// a dynamic engine linked against the shared libcrypto (OpenSSL's own
// test_evp_extra does this with dasync). The engine's bind function shares
// the host's allocator through CRYPTO_set_mem_functions; the library must
// honour that for the libcrypto it hooked only because it arrived by
// dlopen, so a block the engine allocates is the host's to free. Before,
// the call was answered 1 and ignored, the block came from secret memory
// and the host's libc free aborted ("free(): invalid pointer").
func TestStaticHostEngine(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	engine := compileShared(t, dir, "engine.c", "-Wno-deprecated-declarations", "-lcrypto")
	host := compileC(t, dir, "static_host.c", "-Wno-deprecated-declarations", staticLibcrypto(t), "-ldl", "-pthread")
	for _, tc := range []struct {
		name    string
		environ []string
		backend string
	}{
		{"no library", env(""), "-1"},
		{"all", env(lib), "0"},
		{"secure", env(lib, "SECRETHEAP_OPENSSL=secure"), "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", host, engine)
			_, crashed := r.signaled()
			require.False(t, crashed, "host crashed\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
			requireOK(t, r, "static_host")
			got := parseOutput(r.stdout)
			assert.Equal(t, "shtest", got["engine"])
			assert.Equal(t, tc.backend, got["engine_block_backend"], "the host's allocator served the engine")
			assert.Equal(t, "1", got["done"])
		})
	}
}

// TestParamBldSecureCopy: exporting an Ed25519 or X25519 private key
// (EVP_PKEY_todata → OSSL_PARAM_BLD) copies it into the secure heap only if
// CRYPTO_secure_allocated says the key is there. In mode secure the library
// used to answer 0 for its own secure blocks, so the copy went to libc
// memory; it must be in secret memory in both modes.
func TestParamBldSecureCopy(t *testing.T) {
	lib := setup(t)
	prog := compileC(t, t.TempDir(), "param_copy.c", "-lcrypto", "-ldl")
	for _, tc := range []struct {
		name            string
		environ         []string
		backend, secure string
	}{
		{"all", env(lib), "1", "1"},
		{"secure", env(lib, "SECRETHEAP_OPENSSL=secure"), "1", "1"},
		{"no library", env(""), "-1", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", prog)
			requireOK(t, r, "param_copy")
			got := parseOutput(r.stdout)
			for _, alg := range []string{"ed", "x"} {
				assert.Equal(t, tc.backend, got[alg+"_copy_backend"], "%s copy: %s", alg, r.stdout)
				assert.Equal(t, tc.secure, got[alg+"_copy_secure"], "%s copy: %s", alg, r.stdout)
			}
		})
	}
}

// TestDlsymSetMemFunctions: CRYPTO_set_mem_functions found with dlsym on a
// libcrypto handle (CPython's ctypes shape) bypasses the interposed symbol.
// Called after libcrypto handed out blocks of ours it must be refused
// (answer 0: their free would get our blocks) and change nothing; called
// before, on a libcrypto that arrived by dlopen, it is honoured. Before, the
// call reached libcrypto, replaced our hooks, and their free() of our block
// crashed.
func TestDlsymSetMemFunctions(t *testing.T) {
	lib := setup(t)
	prog := compileC(t, t.TempDir(), "dlsym_set.c", "-ldl")
	for _, tc := range []struct {
		name, arg string
		environ   []string
		want      map[string]string
	}{
		{"used", "used", env(lib), map[string]string{"set_mem_functions": "0", "after_backend": "1", "their_calls": "0"}},
		{"fresh", "fresh", env(lib), map[string]string{"set_mem_functions": "1", "after_backend": "0", "their_calls": "2"}},
		{"used/no library", "used", env(""), map[string]string{"set_mem_functions": "0", "after_backend": "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", prog, tc.arg)
			_, crashed := r.signaled()
			require.False(t, crashed, "crashed\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
			requireOK(t, r, "dlsym_set")
			got := parseOutput(r.stdout)
			for k, v := range tc.want {
				assert.Equal(t, v, got[k], "%s\nstdout: %s\nstderr: %s", k, r.stdout, r.stderr)
			}
		})
	}
}

// TestUnloadLibrary: the library is linked -z nodelete, so dlclose does not
// unmap it. Before, a thread that had used the allocator crashed when it
// exited after the dlclose (its destructor was gone) and the next OpenSSL
// allocation jumped into unmapped hooks.
func TestUnloadLibrary(t *testing.T) {
	lib := setup(t)
	prog := compileC(t, t.TempDir(), "unload.c", "-lcrypto", "-ldl", "-pthread")
	r := run(t, env(""), "", prog, lib)
	_, crashed := r.signaled()
	require.False(t, crashed, "crashed after dlclose\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	requireOK(t, r, "unload")
	got := parseOutput(r.stdout)
	assert.Equal(t, "1", got["openssl_backend"], "the dlopen'ed library hooked the program's libcrypto")
	assert.Equal(t, "1", got["done"])
}

// TestLibcryptoReloaded: a libcrypto unloaded and loaded again comes back
// with OpenSSL's default allocator and must be hooked again (a stand-in
// libcrypto: Debian's is -z nodelete and never unloads). Before, the
// library remembered the address of the first copy and skipped the second.
func TestLibcryptoReloaded(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	prog := compileC(t, dir, "reload.c", "-ldl")
	fake := compileShared(t, dir, "fakecrypto.c")
	r := run(t, env(lib), "", prog, fake)
	requireOK(t, r, "reload")
	got := parseOutput(r.stdout)
	assert.Equal(t, "1", got["first_backend"], r.stdout)
	assert.Equal(t, "1", got["second_backend"], "loaded again, hooked again: %s", r.stdout)
}

// TestDlopenSiblingByOrigin: a library with DT_RUNPATH $ORIGIN loads its
// sibling by bare name and by "$ORIGIN/name"; glibc resolves both with the
// *calling* object's run path and directory, and our dlopen wrapper must
// keep that. Before, "$ORIGIN/libdep.so" was expanded with the wrapper's
// own directory.
func TestDlopenSiblingByOrigin(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "plugins")
	require.NoError(t, os.Mkdir(sub, 0o755))
	dep := compileShared(t, sub, "dep.c")
	require.NoError(t, os.Rename(dep, filepath.Join(sub, "libdep.so")))
	outer := compileShared(t, sub, "outer.c", "-Wl,--enable-new-dtags,-rpath,$ORIGIN", "-ldl")
	prog := compileC(t, dir, "sibling_main.c", "-ldl")
	for _, tc := range []struct {
		name    string
		environ []string
	}{
		{"no library", env("")},
		{"library", env(lib)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.environ, "", prog, outer)
			requireOK(t, r, "sibling_main")
			got := parseOutput(r.stdout)
			assert.Equal(t, "42", got["bare"], r.stdout)
			assert.Equal(t, "42", got["origin"], r.stdout)
		})
	}
}

// TestLazyStart: a process that never loads libcrypto and never calls the C
// API pays nothing under the preload: no arena reservation (VmSize within
// 64 MiB of the same program without the library; the 64 GiB reservation
// used to be made at start), no secret-memory descriptor or mapping.
func TestLazyStart(t *testing.T) {
	lib := setup(t)
	vmSize := func(r result) (uint64, string) {
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmSize:" {
				n, err := strconv.ParseUint(f[1], 10, 64)
				require.NoError(t, err)
				return n, r.stdout
			}
		}
		t.Fatalf("no VmSize in %q", r.stdout)
		return 0, ""
	}
	without, _ := vmSize(run(t, env(""), "", "cat", "/proc/self/status"))
	with, _ := vmSize(run(t, env(lib), "", "cat", "/proc/self/status"))
	assert.Less(t, with, without+64<<10, "VmSize %d KiB with the preload, %d KiB without", with, without)
	maps := run(t, env(lib), "", "cat", "/proc/self/maps")
	requireOK(t, maps, "cat /proc/self/maps")
	assert.NotContains(t, maps.stdout, "secretmem", "no secret memory mapped")
	// Asking for the stats report still starts the library (and reports).
	st := filepath.Join(t.TempDir(), "true.stats")
	requireOK(t, run(t, env(lib, statsEnv(st)), "", "true"), "true")
	b, err := os.ReadFile(st)
	require.NoError(t, err)
	assert.Contains(t, string(b), "secretheap stats (pid")
}

// TestForeignFree: a block of the library freed or reallocated by libc's
// free/realloc (code that does not know it) is handled by the library —
// released or moved, counted as misuse, named once on stderr — instead of
// glibc aborting with "free(): invalid pointer" as before.
func TestForeignFree(t *testing.T) {
	lib := setup(t)
	dir := t.TempDir()
	prog := compileC(t, dir, "foreign_free.c", "-lcrypto")
	st := filepath.Join(dir, "foreign.stats")
	r := run(t, env(lib, statsEnv(st)), "", prog)
	_, crashed := r.signaled()
	require.False(t, crashed, "crashed\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	requireOK(t, r, "foreign_free")
	got := parseOutput(r.stdout)
	assert.Equal(t, "1", got["realloc_kept"])
	assert.Equal(t, "1", got["done"])
	assert.Equal(t, 1, strings.Count(r.stderr, "by code that does not know it"), r.stderr)
	// free, realloc, and the free of what realloc returned (secret memory too).
	assert.Equal(t, uint64(3), readStats(t, st).num(t, "misuse_caught"))
	requireOK(t, run(t, env(""), "", prog), "foreign_free without the library")
}
