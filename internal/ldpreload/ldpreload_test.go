package ldpreload

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnv(t *testing.T) {
	const lib = "/x/libsecretheap.so"
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"none", []string{"A=1"}, "LD_PRELOAD=" + lib},
		{"empty", []string{"LD_PRELOAD="}, "LD_PRELOAD=" + lib},
		{"existing kept after", []string{"LD_PRELOAD=/a.so"}, "LD_PRELOAD=" + lib + ":/a.so"},
		{"space separated", []string{"LD_PRELOAD=/a.so /b.so"}, "LD_PRELOAD=" + lib + ":/a.so:/b.so"},
		{"already present", []string{"LD_PRELOAD=/a.so:" + lib}, "LD_PRELOAD=" + lib + ":/a.so"},
		{"two entries merged", []string{"LD_PRELOAD=/a.so", "B=2", "LD_PRELOAD=/b.so"}, "LD_PRELOAD=" + lib + ":/a.so:/b.so"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := Env(tc.env, lib)
			var preloads []string
			for _, kv := range out {
				if strings.HasPrefix(kv, "LD_PRELOAD=") {
					preloads = append(preloads, kv)
				}
			}
			require.Equal(t, []string{tc.want}, preloads)
			for _, kv := range tc.env {
				if !strings.HasPrefix(kv, "LD_PRELOAD=") {
					assert.Contains(t, out, kv, "other variables kept")
				}
			}
		})
	}
}

// libcPath returns a shared object every Linux test machine has, to stand in
// for the library where only its ELF type matters.
func libcPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{
		"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6",
	} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no libc.so.6 found to stand in for a shared object")
	return ""
}

func TestLibraryPathOverride(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "libsecretheap.so")
	require.NoError(t, os.WriteFile(notELF, []byte("not a library\n"), 0o644))
	libc := libcPath(t)

	cases := []struct {
		name    string
		value   string
		want    string
		wantErr string
	}{
		{"shared object", libc, libc, ""},
		{"missing", filepath.Join(dir, "nope.so"), "", "no such file"},
		{"not ELF", notELF, "", "not an ELF file"},
		{"directory", dir, "", "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(LibraryEnv, tc.value)
			got, err := LibraryPath()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Contains(t, err.Error(), LibraryEnv, "error names the variable")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestLibraryCandidates(t *testing.T) {
	wd, err := os.Getwd()
	require.NoError(t, err)
	root, ok := moduleRoot(wd)
	require.True(t, ok, "go test runs inside the module")
	require.FileExists(t, filepath.Join(root, "go.mod"))
	c := Candidates()
	assert.Contains(t, c, filepath.Join(root, "build", LibraryName))
	assert.Contains(t, c, filepath.Join(defaultPrefix, "lib", LibraryName))

	t.Setenv("PREFIX", "/opt/sh")
	assert.Contains(t, Candidates(), "/opt/sh/lib/"+LibraryName)

	// Control: a directory outside the module has no root.
	_, ok = moduleRoot(t.TempDir())
	assert.False(t, ok)
}

func TestLibraryPathNotFound(t *testing.T) {
	// Move the working directory out of the module and point PREFIX at an
	// empty directory; the test binary's directory holds no library. The
	// search can still find an installed /usr/local/lib copy: then there is
	// nothing to test.
	if _, err := os.Stat(filepath.Join(defaultPrefix, "lib", LibraryName)); err == nil {
		t.Skip("an installed " + LibraryName + " in " + defaultPrefix + "/lib would be found")
	}
	t.Chdir(t.TempDir())
	t.Setenv("PREFIX", t.TempDir())
	t.Setenv(LibraryEnv, "")
	_, err := LibraryPath()
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrLibraryNotFound))
	assert.Contains(t, err.Error(), "run make")
}

// TestCommand runs a child with the library preloaded and checks, from the
// child's own /proc/self/maps, that the loader mapped it. It needs `make`
// to have built the library.
func TestCommand(t *testing.T) {
	lib, err := LibraryPath()
	if err != nil {
		if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
			require.NoError(t, err)
		}
		t.Skipf("library not built: %v", err)
	}
	t.Setenv("LD_PRELOAD", "")
	cmd, err := Command("cat", "/proc/self/maps")
	require.NoError(t, err)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), lib, "child's mappings include the preloaded library")

	// Control: the same command without Command's environment does not
	// map the library, so the check above can fail.
	plain, err := exec.Command("cat", "/proc/self/maps").CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(plain), lib)
}

func TestResolve(t *testing.T) {
	libc := libcPath(t)
	t.Setenv(LibraryEnv, "")
	got, err := Resolve(libc)
	require.NoError(t, err)
	assert.Equal(t, libc, got)

	_, err = Resolve(filepath.Join(t.TempDir(), "missing.so"))
	require.Error(t, err, "an explicit path must exist: no fallback to the search")

	// Empty explicit: the environment override applies.
	t.Setenv(LibraryEnv, libc)
	got, err = Resolve("")
	require.NoError(t, err)
	assert.Equal(t, libc, got)
}

// TestCheckLibrarySafety: the library is opened once, non-blocking, and
// must be a regular file that is not world-writable and is owned by root,
// us or this command's owner. A FIFO in its place once hung the search
// (os.Stat, then elf.Open of whatever was there by then).
func TestCheckLibrarySafety(t *testing.T) {
	lib, err := LibraryPath()
	if err != nil {
		t.Skipf("needs build/libsecretheap.so (run make): %v", err)
	}
	b, err := os.ReadFile(lib)
	require.NoError(t, err)
	dir := t.TempDir()

	fifo := filepath.Join(dir, "fifo.so")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	done := make(chan error, 1)
	go func() { done <- checkLibrary(fifo) }()
	select {
	case err := <-done:
		assert.ErrorContains(t, err, "not a regular file")
	case <-time.After(10 * time.Second):
		t.Fatal("checkLibrary hung on a FIFO")
	}

	open := filepath.Join(dir, "world-writable.so")
	require.NoError(t, os.WriteFile(open, b, 0o755))
	require.NoError(t, os.Chmod(open, 0o757))
	assert.ErrorContains(t, checkLibrary(open), "writable by anyone")

	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other.so")
		require.NoError(t, os.WriteFile(other, b, 0o755))
		require.NoError(t, os.Chown(other, 65534, 65534))
		assert.ErrorContains(t, checkLibrary(other), "owned by uid 65534")
	}

	mine := filepath.Join(dir, "mine.so")
	require.NoError(t, os.WriteFile(mine, b, 0o755))
	assert.NoError(t, checkLibrary(mine))
}
