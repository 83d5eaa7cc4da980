// Package scripttest tests fuzz/go-fuzz.sh, the script CI runs each Go fuzz
// target through: its retry rule, with a fake go command.
package scripttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeGo writes a go command that answers the seed-corpus run with seedRC
// and the n-th fuzzing run with the n-th of runs ("ok", "timeout", "crash",
// "fail"), counting fuzzing runs in a file.
func fakeGo(t *testing.T, seedRC int, runs ...string) (goCmd, counter string) {
	dir := t.TempDir()
	counter = filepath.Join(dir, "runs")
	script := `#!/bin/sh
case "$*" in *-fuzz*) ;; *) exit ` + string(rune('0'+seedRC)) + ` ;; esac
n=$(($(cat ` + counter + ` 2>/dev/null || echo 0) + 1)); echo $n > ` + counter + `
case $n in
`
	for i, r := range runs {
		script += string(rune('1'+i)) + ") kind=" + r + " ;;\n"
	}
	script += `*) kind=ok ;;
esac
case $kind in
ok) echo PASS; exit 0 ;;
timeout) echo "fuzz: elapsed: 20s, execs: 1000"; echo "context deadline exceeded"; exit 1 ;;
crash) echo "--- FAIL: FuzzX"; echo "context deadline exceeded"; echo "Failing input written to testdata/fuzz/FuzzX/abc"; exit 1 ;;
fail) echo "--- FAIL: FuzzX: panic"; exit 1 ;;
esac
`
	goCmd = filepath.Join(dir, "go")
	require.NoError(t, os.WriteFile(goCmd, []byte(script), 0o755))
	return goCmd, counter
}

func runScript(t *testing.T, goCmd string) (string, int) {
	cmd := exec.Command("../go-fuzz.sh", "./pkg", "FuzzX", "1s")
	cmd.Env = append(os.Environ(), "GO="+goCmd)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

func fuzzRuns(t *testing.T, counter string) string {
	b, err := os.ReadFile(counter)
	if os.IsNotExist(err) {
		return "0"
	}
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func TestGoFuzzRetry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		seedRC   int
		runs     []string
		wantRC   int
		wantRuns string
	}{
		{"passes", 0, []string{"ok"}, 0, "1"},
		{"coordinator timeout retried", 0, []string{"timeout", "ok"}, 0, "2"},
		{"timeout three times fails", 0, []string{"timeout", "timeout", "timeout"}, 1, "3"},
		{"crash never retried", 0, []string{"crash", "ok"}, 1, "1"},
		{"other failure never retried", 0, []string{"fail", "ok"}, 1, "1"},
		{"seed corpus failure stops before fuzzing", 1, []string{"ok"}, 1, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goCmd, counter := fakeGo(t, tc.seedRC, tc.runs...)
			out, rc := runScript(t, goCmd)
			assert.Equal(t, tc.wantRC, rc, out)
			assert.Equal(t, tc.wantRuns, fuzzRuns(t, counter), out)
		})
	}
}
