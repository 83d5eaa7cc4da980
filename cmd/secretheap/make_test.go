package main

// The first hour of a new user, checked: `make` alone builds what the README
// uses next (build/secretheap), a missing tool stops make at once naming the
// package, and the pkg-config file follows PREFIX. Each make run writes to a
// build directory of its own (BUILD=…), never the tree's build/.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/ldpreload"
)

const repoRoot = "../.."

func requireMake(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("needs make: %v", err)
	}
}

func runMake(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-C", repoRoot, "--no-print-directory"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMakeDefaultBuildsCLI: plain `make` once built only the shared library
// (the first rule of an included fragment was the default goal).
func TestMakeDefaultBuildsCLI(t *testing.T) {
	requireMake(t)
	b := t.TempDir()
	out, err := runMake(t, "-n", "PREREQ=0", "BUILD="+b)
	require.NoError(t, err, out)
	assert.Contains(t, out, "-o "+b+"/secretheap ./cmd/secretheap")
	assert.Contains(t, out, b+"/libsecretheap.so")
}

// TestMakeMissingTool: a missing compiler stops make before it builds
// anything, in seconds, naming the package to install.
func TestMakeMissingTool(t *testing.T) {
	requireMake(t)
	for _, tc := range []struct {
		goal, knob, pkg string
	}{
		{"all", "CC=secretheap-no-such-cc", "build-essential"},
		{"test", "FUZZ_CC=secretheap-no-such-clang", "apt-get install clang"},
	} {
		t.Run(tc.goal, func(t *testing.T) {
			start := time.Now()
			out, err := runMake(t, "BUILD="+t.TempDir(), tc.knob, tc.goal)
			require.Error(t, err, out)
			assert.Contains(t, out, tc.pkg)
			assert.Contains(t, out, "missing prerequisites")
			assert.NotContains(t, out, "go build", "nothing is built before the check")
			t.Logf("make %s stopped after %v", tc.goal, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestMakePkgConfigFollowsPrefix: the pkg-config file once kept the prefix
// of its first build after `make install PREFIX=…` changed it.
func TestMakePkgConfigFollowsPrefix(t *testing.T) {
	requireMake(t)
	b := t.TempDir()
	pc := filepath.Join(b, "secretheap.pc")
	for _, prefix := range []string{"/opt/first", "/opt/second"} {
		out, err := runMake(t, "PREREQ=0", "BUILD="+b, "PREFIX="+prefix, pc)
		require.NoError(t, err, out)
		got, err := os.ReadFile(pc)
		require.NoError(t, err)
		assert.Contains(t, string(got), "prefix="+prefix+"\n")
	}
	got, err := os.ReadFile(pc)
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(got), "Version: "+ldpreload.Version+"\n"), "pkg-config has the one version: %s", got)
}

// TestMainModuleHasNoBenchDeps: the benchmark report's plotting library
// (gonum, ~40 MB of modules) once made `make demo` and `go get` download it.
func TestMainModuleHasNoBenchDeps(t *testing.T) {
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		require.NoError(t, err)
		assert.NotContains(t, string(b), "gonum.org", "%s of the main module", f)
	}
}
