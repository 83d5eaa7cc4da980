package attack

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fakeMem is a reader over a byte slice at address base that fails with
// EIO from address bad onwards (0: never).
type fakeMem struct {
	base, bad uintptr
	mem       []byte
}

func (f *fakeMem) readAt(buf []byte, addr uintptr) (int, error) {
	end := addr + uintptr(len(buf))
	if f.bad != 0 && end > f.bad {
		n := 0
		if f.bad > addr {
			n = copy(buf, f.mem[addr-f.base:f.bad-f.base])
		}
		return n, readErr(ProcMem, "pread", 1, addr+uintptr(n), len(buf)-n, unix.EIO)
	}
	return copy(buf, f.mem[addr-f.base:end-f.base]), nil
}

func (f *fakeMem) close() {}

func TestScanLogic(t *testing.T) {
	const base = 0x10000
	mem := make([]byte, 3*blockSize)
	needle := []byte("NEEDLE-0123456789")
	at := []int{5, blockSize - 7, 2*blockSize - 1, 3*blockSize - len(needle)} // straddling both block edges, and the end
	for _, a := range at {
		copy(mem[a:], needle)
	}
	maps := []Mapping{{Start: base, End: base + uintptr(len(mem)), Perms: "rw-p"}}
	for _, tc := range []struct {
		name string
		bad  uintptr
		want []int
		errs int
	}{
		{"all", 0, at, 0},
		{"fails at 1.5 blocks", base + blockSize + blockSize/2, at[:2], 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := scan(&fakeMem{base: base, bad: tc.bad, mem: mem}, maps, needle, ProcMem, ScanOptions{})
			var got []int
			for _, h := range res.Hits {
				got = append(got, int(h.Addr-base))
			}
			assert.Equal(t, tc.want, got)
			require.Len(t, res.Errors, tc.errs)
			if tc.errs > 0 {
				assert.ErrorIs(t, res.Errors[0].Err, unix.EIO)
			}
		})
	}
	t.Run("options", func(t *testing.T) {
		big := Mapping{Start: base, End: base + uintptr(len(mem)), Perms: "rw-p", Name: "big"}
		res := scan(&fakeMem{base: base, mem: mem}, []Mapping{big, {Start: 0, End: 0x1000, Perms: "---p"}, {Start: 0, End: 0x1000, Perms: "r--p", Name: "[vvar]"}},
			needle, ProcMem, ScanOptions{MaxMapping: blockSize})
		assert.Empty(t, res.Hits)
		assert.Equal(t, []Mapping{big}, res.Skipped)
		res = scan(&fakeMem{base: base, mem: mem}, []Mapping{big}, needle, ProcMem, ScanOptions{Filter: func(Mapping) bool { return false }})
		assert.Len(t, res.Skipped, 1)
		// Control: the same mapping without options is scanned.
		res = scan(&fakeMem{base: base, mem: mem}, []Mapping{big}, needle, ProcMem, ScanOptions{})
		assert.Len(t, res.Hits, len(at))
		assert.Equal(t, uint64(len(mem)), res.BytesRead)
	})
	assert.False(t, bytes.Contains(mem[:4], needle))
}

func TestMethods(t *testing.T) {
	for _, m := range Methods() {
		got, err := ParseMethod(m.String())
		require.NoError(t, err)
		assert.Equal(t, m, got)
		assert.NotEmpty(t, m.Describe())
	}
	_, err := ParseMethod("gdb")
	require.Error(t, err)
}
