package alloc_test

import (
	"encoding/hex"
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// TestOtherProcessCannotReadBlock: a block from Alloc (small class, page run,
// region) cannot be read by another process (this test binary re-executed)
// through /proc/PID/mem, process_vm_readv or ptrace(PEEKDATA). Control: each
// method reads a Go-heap buffer of the same process.
func TestOtherProcessCannotReadBlock(t *testing.T) {
	testutil.RequireSecretMem(t)
	if testutil.InChild(t) {
		pid, err := strconv.Atoi(os.Getenv("TARGET_PID"))
		require.NoError(t, err)
		out := map[string]map[string]bool{}
		for _, name := range []string{"SMALL", "RUN", "REGION", "HEAP"} {
			addr, err := strconv.ParseUint(os.Getenv(name+"_ADDR"), 10, 64)
			require.NoError(t, err)
			needle, err := hex.DecodeString(os.Getenv(name + "_HEX"))
			require.NoError(t, err)
			out[name] = map[string]bool{}
			for _, m := range attack.Methods() {
				b, err := attack.Read(pid, uintptr(addr), len(needle), m)
				var re *attack.ReadError
				if err != nil && !errors.As(err, &re) {
					t.Fatalf("%s: %v", m, err)
				}
				out[name][m.String()] = err == nil && string(b) == string(needle)
			}
		}
		testutil.Report("reads", out)
		return
	}
	h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
	require.NoError(t, err)
	defer h.Close()
	env := []string{"TARGET_PID=" + strconv.Itoa(os.Getpid())}
	heap := make([]byte, 32)
	var blocks [][]byte
	for _, x := range []struct {
		name string
		n    int
	}{{"SMALL", 32}, {"RUN", alloc.MaxSmallSize + 100}, {"REGION", alloc.LargeMin + 100}, {"HEAP", 0}} {
		b := heap
		if x.n > 0 {
			b, err = h.Alloc(x.n)
			require.NoError(t, err)
			blocks = append(blocks, b)
		}
		// getrandom writes straight into the block: the needle never
		// exists on the Go heap (except the control's).
		_, err = unix.Getrandom(b[:32], 0)
		require.NoError(t, err)
		env = append(env,
			x.name+"_ADDR="+strconv.FormatUint(uint64(uintptr(unsafe.Pointer(&b[0]))), 10),
			x.name+"_HEX="+hex.EncodeToString(b[:32]))
	}
	_ = unix.Prctl(unix.PR_SET_PTRACER, unix.PR_SET_PTRACER_ANY, 0, 0, 0)
	res := testutil.RunChild(t, testutil.ChildOptions{Env: env})
	runtime.KeepAlive(heap)
	require.True(t, res.Clean(), res.Output)
	var got map[string]map[string]bool
	require.True(t, res.Report("reads", &got), res.Output)
	for _, m := range attack.Methods() {
		t.Run(m.String(), func(t *testing.T) {
			for _, name := range []string{"SMALL", "RUN", "REGION"} {
				assert.False(t, got[name][m.String()], "%s block read by %s", name, m.Describe())
			}
			assert.True(t, got["HEAP"][m.String()], "control: %s reads the Go heap", m.Describe())
		})
	}
	for _, b := range blocks {
		require.NoError(t, h.Free(b))
	}
}
