package repo_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/repo"
)

// TestRoot: the root is found from this package's directory, and not from
// a directory outside the tree, nor from one whose go.mod is another
// module's (the benchmark report's own go.mod must be passed by).
func TestRoot(t *testing.T) {
	root, err := repo.Root()
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(root, "go.mod"))
	assert.DirExists(t, filepath.Join(root, "internal", "repo"))

	got, ok := repo.RootFrom(filepath.Join(root, "cmd", "benchreport"))
	assert.True(t, ok)
	assert.Equal(t, root, got, "cmd/benchreport's go.mod is not the root's")

	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o600))
	_, ok = repo.RootFrom(other)
	assert.False(t, ok)
}

// TestBuilt: a missing artefact is an error naming make.
func TestBuilt(t *testing.T) {
	_, err := repo.Built("no-such-artefact")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "run make")
}
