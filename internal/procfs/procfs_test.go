package procfs_test

import (
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/procfs"
)

func TestParseMapsErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"field first", "Rss: 4 kB\n"},
		{"bad range", "zz-10 r--p 0 0:0 0\n"},
		{"short", "1000-2000 r--p\n"},
		{"bad rss", "1000-2000 r--p 0 0:0 0\nRss: x kB\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := procfs.ParseMaps([]byte(tc.in))
			assert.Error(t, err)
		})
	}
}

func TestParseOwnMaps(t *testing.T) {
	// Our own smaps must parse: it is the format of this kernel, not a sample.
	b, err := os.ReadFile("/proc/self/smaps")
	require.NoError(t, err)
	maps, err := procfs.ParseMaps(b)
	require.NoError(t, err)
	require.NotEmpty(t, maps)
	var rss uint64
	for _, m := range maps {
		rss += m.Rss
		assert.Less(t, m.Start, m.End)
	}
	assert.Positive(t, rss)
}

func TestParseMemlockLimit(t *testing.T) {
	const limits = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max locked memory         65536                131072               bytes     
Max address space         unlimited            unlimited            bytes     
`
	l, err := procfs.ParseMemlockLimit([]byte(limits))
	require.NoError(t, err)
	assert.Equal(t, procfs.Limit{Soft: 65536, Hard: 131072}, l)

	l, err = procfs.ParseMemlockLimit([]byte("Max locked memory         unlimited            unlimited            bytes\n"))
	require.NoError(t, err)
	assert.True(t, l.SoftInf)
	assert.Equal(t, uint64(math.MaxUint64), l.Soft)

	_, err = procfs.ParseMemlockLimit([]byte("Max cpu time unlimited unlimited seconds\n"))
	assert.Error(t, err)

	b, err := os.ReadFile("/proc/self/limits")
	require.NoError(t, err)
	_, err = procfs.ParseMemlockLimit(b)
	assert.NoError(t, err, "this kernel's own limits file")
}

func TestHasCap(t *testing.T) {
	for _, tc := range []struct {
		mask string
		want bool
	}{
		{"000001fffeffffff", true},
		{"0000000000004000", true},
		{"0000000000000000", false},
		{"000001fffeffbfff", false},
	} {
		t.Run(tc.mask, func(t *testing.T) {
			got, err := procfs.HasCap(tc.mask, procfs.CapIPCLock)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := procfs.HasCap("xyz", procfs.CapIPCLock)
	assert.Error(t, err)
}

func TestParseEnviron(t *testing.T) {
	env := procfs.ParseEnviron([]byte("A=1\x00SECRETHEAP_BACKEND=secret\x00EMPTY=\x00junk\x00"))
	assert.Equal(t, map[string]string{"A": "1", "SECRETHEAP_BACKEND": "secret", "EMPTY": ""}, env)
}

// TestParseMapsNames: names are kept as the kernel wrote them, spaces and all.
func TestParseMapsNames(t *testing.T) {
	in := []byte(`55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234                       /usr/bin/cat
7f00aa000000-7f00aa200000 rw-s 00000000 00:01 77                         /secretmem (deleted)
7f00ab000000-7f00ab010000 rw-p 00000000 00:00 0 
7ffc1000-7ffc3000 rw-p 00000000 00:00 0                          [stack]
7f00ac000000-7f00ac001000 r--p 00001000 08:01 99                         /tmp/a file with spaces
`)
	maps, err := procfs.ParseMaps(in)
	require.NoError(t, err)
	require.Len(t, maps, 5)
	assert.Equal(t, procfs.Mapping{Start: 0x55d0c0a00000, End: 0x55d0c0a21000, Perms: "r--p", Inode: 1234, Path: "/usr/bin/cat"}, maps[0])
	assert.True(t, maps[1].Secretmem())
	assert.Equal(t, "/secretmem (deleted)", maps[1].Path)
	assert.False(t, maps[2].Secretmem())
	assert.Equal(t, "", maps[2].Path)
	assert.Equal(t, "[stack]", maps[3].Path)
	assert.Equal(t, "/tmp/a file with spaces", maps[4].Path)
	assert.Equal(t, uint64(0x1000), maps[4].Offset)
	assert.True(t, maps[0].Readable())
	assert.Equal(t, uint64(0x200000), maps[1].Size())
	_, err = procfs.ParseMaps([]byte("garbage\n"))
	require.Error(t, err)
}
