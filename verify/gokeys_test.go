package verify

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/testutil"
)

// gokeysArgsEnv carries verify/cmd/gokeys's arguments to the child (this
// test binary run again), one per line.
const gokeysArgsEnv = "SECRETHEAP_GOKEYS_ARGS"

// TestGoKeysOutsideScan is the Go keys target run from go test: this test
// binary, re-executed, holds an HMAC-SHA256 key, an Ed25519 seed and an
// ECDSA P-256 scalar (read with alloc.ReadFile, or os.ReadFile for the
// control) and uses each 1000 times; then this process reads all its memory
// through /proc/PID/mem and counts the copies of the keys, the HMAC pads and
// midstates, and the Ed25519 expanded key.
//
// Built with GOEXPERIMENT=runtimesecret (alloc.Erasing), the recipes must
// leave no copy of any of them. Without it the test reports what remains.
// Control: with the keys in Go []byte every live secret is found.
func TestGoKeysOutsideScan(t *testing.T) {
	if args := os.Getenv(gokeysArgsEnv); args != "" {
		fs := flag.NewFlagSet("gokeys", flag.ContinueOnError)
		mode := fs.String("mode", "", "")
		hmacKey := fs.String("hmac-key", "", "")
		seed := fs.String("seed", "", "")
		ec := fs.String("ecdsa", "", "")
		require.NoError(t, fs.Parse(strings.Split(args, "\n")))
		keep, err := KeyWorkload(os.Stdout, *mode, KeyFiles{HMAC: *hmacKey, Ed25519: *seed, ECDSA: *ec}, 1000)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, os.Stdin)
		runtime.KeepAlive(keep)
		return
	}
	testutil.RequireSecretMem(t)
	counts := map[string][]Copies{}
	for _, keys := range []string{KeysPlain, KeysNaive, KeysRecipe} {
		r, err := StartKeys(context.Background(), t.TempDir(), keys, alloc.Erasing(), func(args ...string) *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^TestGoKeysOutsideScan$", "-test.count=1")
			cmd.Env = append(os.Environ(), gokeysArgsEnv+"="+strings.Join(args, "\n"))
			return cmd
		})
		require.NoError(t, err, keys)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		im, err := ReadLive(ctx, r.Procs[0].PID, attack.ProcMem)
		cancel()
		r.Stop()
		require.NoError(t, err, keys)
		require.Greater(t, im.BytesRead, uint64(minBytesRead), "%s: the scan read the process", keys)
		counts[keys] = CountCopies(im, r.Needles)
	}
	t.Logf("copies found by /proc/PID/mem after 1000 uses of each key (alloc.Erasing() = %v):\n%s",
		alloc.Erasing(), copiesTable(counts))

	// Control: the scan finds every needle the plain program keeps live:
	// the keys, crypto/hmac's marshalled midstates, the expanded Ed25519
	// key in crypto/ed25519's cache, the ECDSA scalar in its big.Int and
	// FIPS key. (The pads and the little-endian midstates are garbage
	// after the first Reset, the clamped scalar and the SHA-512 output
	// live only in stack frames: whether they are still there depends on
	// what reused the memory, so they are not part of the control.)
	live := map[string]bool{"hmac.key": true, "hmac.inner-midstate-be": true, "hmac.outer-midstate-be": true,
		"ed25519.seed": true, "ed25519.prefix": true, "ed25519.scalar-montgomery": true, "ecdsa.d": true, "ecdsa.d-le": true}
	for _, c := range counts[KeysPlain] {
		if live[c.Needle] {
			assert.Positive(t, c.Whole, "control: %s found in the plain program", c.Needle)
			delete(live, c.Needle)
		}
	}
	assert.Empty(t, live, "control needles missing from the target's needles")
	if !alloc.Erasing() {
		t.Log("built without GOEXPERIMENT=runtimesecret: the recipe counts above are reported, not asserted")
		return
	}
	for _, c := range counts[KeysRecipe] {
		assert.Zero(t, c.Whole+c.Partial, "recipes with runtime/secret: %s still in memory: %s", c.Needle, c)
	}
}

func copiesTable(counts map[string][]Copies) string {
	modes := []string{KeysPlain, KeysNaive, KeysRecipe}
	rows := [][]string{append([]string{"needle"}, modes...)}
	for i, c := range counts[KeysPlain] {
		row := []string{c.Needle}
		for _, m := range modes {
			row = append(row, counts[m][i].String())
		}
		rows = append(rows, row)
	}
	return renderTable(rows)
}

// TestCountCopies: whole copies, and head or tail fragments outside them.
func TestCountCopies(t *testing.T) {
	n := Needle{Name: "n", Kind: KindGoDerived, Bytes: []byte("0123456789abcdefFEDCBA9876543210")}
	data := fmt.Sprintf("..%s..%s..%s..", n.Bytes, n.Bytes[:16], n.Bytes[16:])
	im := &Image{Segments: []Segment{{Mapping: Mapping{Name: "[heap]"}, Data: []byte(data)}}}
	c := CountCopies(im, []Needle{n})[0]
	assert.Equal(t, 1, c.Whole)
	assert.Equal(t, 2, c.Partial)
	assert.Equal(t, "1+2 partial ([heap])", c.String())
	assert.Equal(t, "0", CountCopies(&Image{}, []Needle{n})[0].String())
}
