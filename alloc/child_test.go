package alloc_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// memlockReport is what the memlock child reports.
type memlockReport struct {
	Allocs, Bytes int
	Exhausted     bool
	Err           string
	ChunkBytes    uint64
	Committed     uint64
	ReusedAfter   bool
}

// TestMemlockChild: an unprivileged child (uid 65534) with a small
// RLIMIT_MEMLOCK gets working (smaller) chunks, allocates until the limit,
// then a clean ErrExhausted — never a signal — and can allocate again after
// freeing.
func TestMemlockChild(t *testing.T) {
	for _, limit := range []uint64{64 << 10, 8 << 20} {
		t.Run(fmt.Sprint(limit>>10, "KiB"), func(t *testing.T) {
			if testutil.InChild(t) {
				h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
				require.NoError(t, err)
				var rep memlockReport
				var held [][]byte
				sizes := []int{32, 4096, 40 << 10, 700, 30000}
				for i := 0; i < 100000; i++ {
					b, err := h.Alloc(sizes[i%len(sizes)])
					if err != nil {
						rep.Exhausted = errors.Is(err, alloc.ErrExhausted)
						rep.Err = err.Error()
						break
					}
					b[0] = 1
					held = append(held, b)
					rep.Allocs++
					rep.Bytes += len(b)
				}
				rep.ChunkBytes = h.Stats().BytesMapped
				rep.Committed = h.Stats().CommittedBytes
				require.NoError(t, h.Check())
				for _, b := range held {
					require.NoError(t, h.Free(b))
				}
				if b, err := h.Alloc(32); err == nil {
					rep.ReusedAfter = true
					_ = h.Free(b)
				}
				require.NoError(t, h.Check())
				testutil.Report("memlock", rep)
				return
			}
			testutil.RequireSecretMem(t)
			res := testutil.RunChild(t, testutil.ChildOptions{Nobody: true, SetMemlock: true, Memlock: limit})
			require.True(t, res.Clean(), "child died: exit %d signal %v fatal %q\n%s", res.ExitCode, res.Signal, res.FatalSignal, res.Output)
			var rep memlockReport
			require.True(t, res.Report("memlock", &rep), res.Output)
			assert.Positive(t, rep.Allocs, "some allocations fit")
			assert.True(t, rep.Exhausted, "the end is ErrExhausted, got %q", rep.Err)
			if secretmem.Detect().Model == secretmem.ModelOld {
				assert.LessOrEqual(t, rep.ChunkBytes, limit, "old model: mapped within the limit")
			} else {
				assert.LessOrEqual(t, rep.Committed, limit, "new model: committed within the limit (mapping is free)")
			}
			assert.True(t, rep.ReusedAfter, "memory is usable again after the frees")
			t.Logf("limit %d: %d allocations, %d bytes, %d mapped; %s", limit, rep.Allocs, rep.Bytes, rep.ChunkBytes, rep.Err)
		})
	}
}

// TestPolicyWithoutMemfdSecret: with memfd_secret blocked (seccomp, ENOSYS
// and EPERM), policy secret fails clearly and auto falls back to locked
// memory and says so. Control: without the filter, auto gives secret memory.
func TestPolicyWithoutMemfdSecret(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
	}{{"ENOSYS", syscall.ENOSYS}, {"EPERM", syscall.EPERM}, {"control", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			if testutil.InChild(t) {
				hs, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
				require.NoError(t, err)
				_, err = hs.Alloc(32)
				testutil.Report("secretErr", fmt.Sprint(err))
				testutil.Report("unsupported", errors.Is(err, secretmem.ErrUnsupported))
				ha, err := alloc.New(alloc.Config{})
				require.NoError(t, err)
				b, err := ha.Alloc(32)
				require.NoError(t, err)
				be, ok := ha.Backend(b)
				require.True(t, ok)
				testutil.Report("autoBackend", be.String())
				return
			}
			testutil.RequireSecretMem(t)
			res := testutil.RunChild(t, testutil.ChildOptions{BlockMemfdSecret: tc.errno})
			require.True(t, res.Clean(), res.Output)
			var secretErr, autoBackend string
			var unsupported bool
			require.True(t, res.Report("secretErr", &secretErr), res.Output)
			require.True(t, res.Report("unsupported", &unsupported))
			require.True(t, res.Report("autoBackend", &autoBackend))
			if tc.errno == 0 {
				assert.Equal(t, "<nil>", secretErr)
				assert.Equal(t, "secret", autoBackend)
				assert.NotContains(t, res.Output, "falls back")
				return
			}
			assert.True(t, unsupported, "policy secret: %s", secretErr)
			assert.Contains(t, secretErr, "memfd_secret")
			assert.Equal(t, "locked", autoBackend)
			assert.Contains(t, res.Output, "falls back to the locked backend", "auto says so")
		})
	}
}
