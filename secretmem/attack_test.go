package secretmem_test

import (
	"encoding/hex"
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// readResult is what the attacking child saw for one target and method.
type readResult struct {
	Match bool   // read succeeded and returned the needle
	Errno string // errno name of the failure, if any
	Hits  int    // scan hits for the needle (procmem and vmreadv scan everything)
	Met   string // errno met on a /secretmem mapping during the scan
}

// TestOtherProcessCannotRead maps a secret, a locked and an ordinary Go-heap
// buffer, each holding random bytes, and has another process (this test
// binary re-executed, running as root like the parent) try every attack.
// memfd_secret memory must resist all of them; the Go-heap buffer is the
// control that shows each attack works; the locked backend is readable,
// which is exactly why it is the weaker fallback.
func TestOtherProcessCannotRead(t *testing.T) {
	testutil.RequireSecretMem(t)
	if testutil.InChild(t) {
		attackChild(t)
		return
	}
	const n = 32
	fill := func(p secretmem.Policy) (*secretmem.Region, []byte) {
		r, err := secretmem.MapAt(nil, 64<<10, p)
		require.NoError(t, err)
		require.NoError(t, r.Commit(0, secretmem.PageSize()))
		b := bytesOf(r.Base(), n)
		// getrandom writes straight into the region: the raw needle never
		// exists on the Go heap, where a scan would find it.
		_, err = unix.Getrandom(b, 0)
		require.NoError(t, err)
		return r, b
	}
	sec, secB := fill(secretmem.PolicySecret)
	defer sec.Close()
	require.Equal(t, secretmem.BackendSecret, sec.Backend())
	lck, lckB := fill(secretmem.PolicyLocked)
	defer lck.Close()
	// The control must live on the heap: a slice that does not escape is
	// on the goroutine's stack, which is copied elsewhere when it grows
	// (RunChild below grows it), so the child read stale bytes at the old
	// address (seen on the 6.1.176 boot of make vmtest).
	heap := make([]byte, n)
	heapControl = heap
	defer func() { heapControl = nil }()
	_, err := unix.Getrandom(heap, 0)
	require.NoError(t, err)

	env := []string{"TARGET_PID=" + strconv.Itoa(os.Getpid())}
	for _, x := range []struct {
		name string
		b    []byte
	}{{"SECRET", secB}, {"LOCKED", lckB}, {"HEAP", heap}} {
		env = append(env,
			x.name+"_ADDR="+strconv.FormatUint(uint64(uintptr(unsafePointer(x.b))), 10),
			x.name+"_HEX="+hex.EncodeToString(x.b))
	}
	// Under Yama ptrace_scope=1 a non-root child may not trace its parent
	// unless the parent allows it (EINVAL without Yama: nothing to allow).
	_ = unix.Prctl(unix.PR_SET_PTRACER, unix.PR_SET_PTRACER_ANY, 0, 0, 0)
	res := testutil.RunChild(t, testutil.ChildOptions{Env: env})
	runtime.KeepAlive(heap)
	require.True(t, res.Clean(), res.Output)
	var got map[string]map[string]readResult
	require.True(t, res.Report("reads", &got), res.Output)

	wantErrno := map[string]string{"procmem": "EIO", "vmreadv": "EFAULT", "ptrace": "EIO"}
	for _, m := range attack.Methods() {
		t.Run(m.String(), func(t *testing.T) {
			s, h, l := got["SECRET"][m.String()], got["HEAP"][m.String()], got["LOCKED"][m.String()]
			assert.False(t, s.Match, "secret memory read by %s", m.Describe())
			assert.Equal(t, wantErrno[m.String()], s.Errno, "%s on secret memory", m.Describe())
			assert.True(t, h.Match, "control: %s reads the Go heap (%s)", m.Describe(), h.Errno)
			assert.True(t, l.Match, "the locked backend is readable by %s (%s)", m.Describe(), l.Errno)
			if m != attack.PtracePeek {
				assert.Zero(t, s.Hits, "scan found the secret")
				assert.Equal(t, wantErrno[m.String()], s.Met, "scan met on /secretmem")
				assert.Positive(t, h.Hits, "control: scan finds the Go-heap needle")
			}
		})
	}
}

// heapControl keeps TestOtherProcessCannotRead's control buffer referenced
// from a global, so that escape analysis puts it on the heap.
var heapControl []byte

func attackChild(t *testing.T) {
	pid, err := strconv.Atoi(os.Getenv("TARGET_PID"))
	require.NoError(t, err)
	out := map[string]map[string]readResult{}
	for _, name := range []string{"SECRET", "LOCKED", "HEAP"} {
		addr, err := strconv.ParseUint(os.Getenv(name+"_ADDR"), 10, 64)
		require.NoError(t, err)
		needle, err := hex.DecodeString(os.Getenv(name + "_HEX"))
		require.NoError(t, err)
		out[name] = map[string]readResult{}
		for _, m := range attack.Methods() {
			var r readResult
			b, err := attack.Read(pid, uintptr(addr), len(needle), m)
			r.Match = err == nil && string(b) == string(needle)
			var re *attack.ReadError
			if errors.As(err, &re) {
				r.Errno = unix.ErrnoName(re.Errno)
			} else if err != nil {
				r.Errno = err.Error()
			}
			// PEEKDATA word by word over the whole process is too slow; the
			// locked backend is known readable (asserted by the direct read).
			if m != attack.PtracePeek && name != "LOCKED" {
				sr, err := attack.Scan(pid, needle, m)
				require.NoError(t, err)
				r.Hits = len(sr.Hits)
				for _, me := range sr.Errors {
					if me.Mapping.Secret() && errors.As(me.Err, &re) && r.Met == "" {
						r.Met = unix.ErrnoName(re.Errno)
					}
				}
			}
			out[name][m.String()] = r
		}
	}
	testutil.Report("reads", out)
}
