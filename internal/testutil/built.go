package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/secretheap/secretheap/internal/repo"
)

// RepoRoot returns the root of the source tree (where go.mod is).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// Built returns the path of a file `make` puts in build/ (name may hold a
// subdirectory: "verify-c/guard"). Missing: the test fails under
// SECRETHEAP_REQUIRE=1 (CI runs make first), else it skips, naming the fix.
func Built(t testing.TB, name string) string {
	t.Helper()
	p, err := repo.Built(name)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

// LookTool returns the path of the program name (searched in PATH, then in
// /usr/sbin and /sbin, where sshd lives). Missing: the test fails under
// SECRETHEAP_REQUIRE=1 (CI installs it), else it skips, naming the package
// (pkg) to install.
func LookTool(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s missing (apt-get install %s)", name, pkg)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
