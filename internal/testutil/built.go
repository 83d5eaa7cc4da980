package testutil

import (
	"os"
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
