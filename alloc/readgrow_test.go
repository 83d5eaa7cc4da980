package alloc_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
)

// pattern is n non-zero bytes that differ from one offset to the next.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i%251) + 1
	}
	return b
}

// blockOf is the whole block a Secret from the growth path sits in: it
// starts at 512 B and doubles, so it is the first 512·2^k ≥ n (at least
// 512). Reached through unsafe, as Bytes is cut to the bytes read.
func blockOf(s *alloc.Secret) []byte {
	n := 512
	for n < s.Len() {
		n *= 2
	}
	return unsafe.Slice(unsafe.SliceData(s.Bytes()), n)
}

// TestReadFileGrowthWipes: ReadFile of a file without a size (a FIFO here;
// /proc files take the same path) grows its secret memory by doubling. Every
// outgrown block must be wiped, and the block it returns must be zero past
// the bytes read. Blocks of every size the growth passes through are kept
// live around the read, so the outgrown blocks stay in mapped slabs and
// chunks, where Check reads them (free slab blocks must be wiped, free
// committed OS pages zero). Controls: TestCheckCatches shows Check reports
// an unwiped free block or OS page; here, before the read, the keepers hold
// the pattern, so a wipe that hit the wrong block would show.
func TestReadFileGrowthWipes(t *testing.T) {
	for _, n := range []int{1, 511, 512, 513, 3000, 40_000, 300_000, 1_200_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			h := newHeap(t, alloc.Config{})
			var keepers [][]byte
			for k := 512; k < 2*n; k *= 2 {
				b, err := h.Alloc(k)
				require.NoError(t, err)
				copy(b, pattern(k))
				keepers = append(keepers, b)
			}
			p := filepath.Join(t.TempDir(), "fifo")
			require.NoError(t, syscall.Mkfifo(p, 0o600))
			payload := pattern(n)
			go func() {
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err == nil {
					// Small writes: the reader sees many short reads.
					for off := 0; off < len(payload); off += 1000 {
						_, _ = f.Write(payload[off:min(off+1000, len(payload))])
					}
					_ = f.Close()
				}
			}()
			s, err := h.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, payload, s.Bytes())
			blk := blockOf(s)
			assert.True(t, isZero(blk[n:]), "block not zero past the %d bytes read", n)
			require.NoError(t, h.Check(), "outgrown blocks wiped")
			for _, b := range keepers {
				assert.Equal(t, pattern(len(b)), b, "keeper of %d B untouched", len(b))
			}
			s.Destroy()
			require.NoError(t, h.Check())
			for _, b := range keepers {
				require.NoError(t, h.Free(b))
			}
			assert.Zero(t, h.Stats().LiveBlocks)
		})
	}
}

// scribbler returns at most chunk bytes per Read but, as io.Reader allows,
// uses all of p as scratch space first.
type scribbler struct {
	data  []byte
	chunk int
	err   error // returned once data is used up (nil: io.EOF)
}

func (s *scribbler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0xee
	}
	if len(s.data) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.chunk)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestReadAllLeavesNothingBehind drives the growth path with readers that
// use their buffer as scratch space (io.Reader allows it; *os.File does
// not): the returned block must still be zero past the bytes read, and a
// read error must leave nothing behind.
func TestReadAllLeavesNothingBehind(t *testing.T) {
	errBroken := errors.New("broken")
	for _, tc := range []struct {
		name string
		n    int
		err  error
	}{
		{"eof inside the first block", 100, nil},
		{"eof after growing", 5000, nil},
		{"error after growing", 5000, errBroken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeap(t, alloc.Config{})
			keep, err := h.Alloc(8192) // keeps the slabs of the outgrown blocks mapped
			require.NoError(t, err)
			s, err := h.ReadAll(&scribbler{data: pattern(tc.n), chunk: 700, err: tc.err}, "test")
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.Nil(t, s)
				require.NoError(t, h.Check(), "everything read was wiped")
				assert.EqualValues(t, 1, h.Stats().LiveBlocks)
				return
			}
			require.NoError(t, err)
			require.Equal(t, pattern(tc.n), s.Bytes())
			assert.True(t, isZero(blockOf(s)[tc.n:]), "scratch bytes left past the %d bytes read", tc.n)
			require.NoError(t, h.Check())
			s.Destroy()
			require.NoError(t, h.Free(keep))
			require.NoError(t, h.Check())
		})
	}
	// Control: the scribbler does dirty its buffer beyond what it returns.
	b := make([]byte, 10)
	n, _ := (&scribbler{data: []byte{1}, chunk: 1}).Read(b)
	require.Equal(t, 1, n)
	require.Equal(t, byte(0xee), b[5])
}
