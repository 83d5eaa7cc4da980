package main

import (
	"encoding/json"
	"math"
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/stats"
)

// smapsSample is a cut of a real /proc/PID/smaps (Linux 6.18) holding a
// memfd_secret mapping with five committed OS pages, a locked-backend
// mapping, and the library.
const smapsSample = `55d0c0000000-55d0c0021000 r--p 00000000 08:01 131 /usr/bin/openssl
Rss:                  20 kB
VmFlags: rd mr mw me sd
7fae923a0000-7fae925a0000 rw-s 00000000 00:0e 19843                      /secretmem (deleted)
Size:               2048 kB
KernelPageSize:        4 kB
Rss:                  20 kB
Locked:                0 kB
VmFlags: rd wr sh mr mw me ms sd
7fae92600000-7fae92800000 rw-p 00000000 00:00 0 
Rss:                  12 kB
VmFlags: rd wr mr mw me lo ac dd wf
7fae92800000-7fae92900000 rw-p 00000000 00:00 0 
Rss:                 100 kB
VmFlags: rd wr mr mw me ac
7fae93000000-7fae93010000 r-xp 00000000 08:01 777                        /work/main/build/libsecretheap.so
Rss:                   8 kB
VmFlags: rd ex mr mw me sd
`

func TestParseMaps(t *testing.T) {
	maps, err := parseMaps([]byte(smapsSample))
	require.NoError(t, err)
	require.Len(t, maps, 5)

	sec := maps[1]
	assert.True(t, sec.isSecretmem())
	assert.Equal(t, "/secretmem (deleted)", sec.Path)
	assert.Equal(t, uint64(2<<20), sec.Size())
	assert.Equal(t, uint64(20*1024), sec.Rss)
	assert.False(t, sec.isLocked())

	assert.True(t, maps[2].isLocked(), "lo+dd anonymous mapping is the locked backend")
	assert.False(t, maps[3].isLocked(), "plain anonymous memory is not")
	assert.False(t, maps[0].isSecretmem())
	assert.Equal(t, "/work/main/build/libsecretheap.so", maps[4].Path)
}

func TestParseMapsErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"field first", "Rss: 4 kB\n"},
		{"bad range", "zz-10 r--p 0 0:0 0\n"},
		{"short", "1000-2000 r--p\n"},
		{"bad rss", "1000-2000 r--p 0 0:0 0\nRss: x kB\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseMaps([]byte(tc.in))
			assert.Error(t, err)
		})
	}
}

func TestParseOwnMaps(t *testing.T) {
	// Our own smaps must parse: it is the format of this kernel, not a sample.
	b, err := os.ReadFile("/proc/self/smaps")
	require.NoError(t, err)
	maps, err := parseMaps(b)
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
	l, err := parseMemlockLimit([]byte(limits))
	require.NoError(t, err)
	assert.Equal(t, limit{Soft: 65536, Hard: 131072}, l)

	l, err = parseMemlockLimit([]byte("Max locked memory         unlimited            unlimited            bytes\n"))
	require.NoError(t, err)
	assert.True(t, l.SoftInf)
	assert.Equal(t, uint64(math.MaxUint64), l.Soft)

	_, err = parseMemlockLimit([]byte("Max cpu time unlimited unlimited seconds\n"))
	assert.Error(t, err)

	b, err := os.ReadFile("/proc/self/limits")
	require.NoError(t, err)
	_, err = parseMemlockLimit(b)
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
			got, err := hasCap(tc.mask, capIPCLock)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := hasCap("xyz", capIPCLock)
	assert.Error(t, err)
}

func TestParseEnviron(t *testing.T) {
	env := parseEnviron([]byte("A=1\x00SECRETHEAP_BACKEND=secret\x00EMPTY=\x00junk\x00"))
	assert.Equal(t, map[string]string{"A": "1", "SECRETHEAP_BACKEND": "secret", "EMPTY": ""}, env)
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{64 << 10, "64 KiB"},
		{1536, "1.5 KiB"},
		{2 << 20, "2 MiB"},
		{3 << 30, "3 GiB"},
		{math.MaxUint64, "unlimited"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, formatBytes(tc.n))
		})
	}
}

func TestStatsHooked(t *testing.T) {
	// Two reports in one file (a parent and a child that exited later):
	// the last one is the answer.
	const two = `{"pid":10,"version":"0.1.0","summary":"secretheap stats (pid 10, version 0.1.0)\n","openssl_hooked":0,"classes":[]}
{"pid":11,"version":"0.1.0","summary":"secretheap stats (pid 11, version 0.1.0)\n","openssl_hooked":1,"fork_reprivatised":1,"classes":[]}
`
	rs, err := stats.ReadReports([]byte(two))
	require.NoError(t, err)
	v, ok := statsHooked(rs)
	require.True(t, ok)
	assert.Equal(t, "1", v)
	_, ok = statsHooked(reports(t, `{"pid":10,"classes":[]}`))
	assert.False(t, ok)
	v, ok = statsSecureInterposed(reports(t, `{"pid":1,"openssl":{"mode":"all","hooks":"yes","refused":0,"secure_interposed":"bound-inside-libcrypto"}}`))
	require.True(t, ok)
	assert.Equal(t, "bound-inside-libcrypto", v)
	// The block goes on with secure_served_by since the -Bsymbolic fallback.
	v, ok = statsSecureInterposed(reports(t, `{"pid":1,"openssl":{"mode":"secure","hooks":"yes","refused":0,"secure_interposed":"yes","secure_served_by":"interposition"}}`))
	require.True(t, ok)
	assert.Equal(t, "yes", v)
	_, ok = statsSecureInterposed(nil)
	assert.False(t, ok)
}

func reports(t *testing.T, s string) []stats.Report {
	t.Helper()
	rs, err := stats.ReadReports([]byte(s))
	require.NoError(t, err)
	return rs
}

// TestInWritableMapping: live counters are read only from the library's
// writable data segment; while ld.so is still mapping the library the same
// address lies in a read-only mapping of the file, whose bytes are not
// counters.
func TestInWritableMapping(t *testing.T) {
	maps := []mapping{
		{Start: 0x1000, End: 0x3000, Perms: "r--p", Path: "/lib/libsecretheap.so"},
		{Start: 0x3000, End: 0x4000, Perms: "rw-p", Path: "/lib/libsecretheap.so"},
		{Start: 0x4000, End: 0x5000, Perms: "rw-p"},
	}
	for _, tc := range []struct {
		name string
		addr uint64
		want bool
	}{
		{"read-only file mapping", 0x2ff8, false},
		{"data segment", 0x3008, true},
		{"bss", 0x4ff8, true},
		{"unmapped", 0x9000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, inWritableMapping(maps, tc.addr))
		})
	}
}

// TestHumanStats: the exit report shown by run is the human lines of each
// report (the JSON's summary), none of its machine-readable values.
func TestHumanStats(t *testing.T) {
	human := "secretheap stats (pid 7, version 0.1.0)\n" +
		"  backend secret; chunks 1 secret + 0 locked (0 idle) + 0 large regions; mapped 2048 KiB; committed 1536 KiB\n" +
		"  live 0 blocks: 0 B requested, 0 B reserved\n" +
		"  fallbacks 0; fork re-privatisations 0; misuse caught 0; openssl hooked 1\n" +
		"secretheap openssl (pid 7): mode all; hooks yes; refused 0; secure interposed yes\n" +
		"  calls: malloc 242626, realloc 5122, free 260371\n"
	summary, err := json.Marshal(human)
	require.NoError(t, err)
	report := `{"pid":7,"version":"0.1.0","summary":` + string(summary) + `,"backend":1,"committed_bytes":1572864,"openssl_hooked":1,` +
		`"classes":[{"size":3072,"slabs":2}],"openssl":{"hooks":"yes"}}` + "\n"
	got := string(statsSummary(reports(t, report)))
	assert.Equal(t, "secretheap stats (pid 7, version 0.1.0)\n"+
		"  backend secret; chunks 1 secret + 0 locked (0 idle) + 0 large regions; mapped 2048 KiB; committed 1536 KiB\n"+
		"  live 0 blocks: 0 B requested, 0 B reserved\n"+
		"  fallbacks 0; fork re-privatisations 0; misuse caught 0; openssl hooked 1\n"+
		"secretheap openssl (pid 7): mode all; hooks yes; refused 0; secure interposed yes\n"+
		"  calls: malloc 242626, realloc 5122, free 260371\n", got)
	// The verdict users read is in the human lines.
	hooked, ok := shownHooked(got)
	assert.True(t, ok)
	assert.Equal(t, "1", hooked)
}

// shownHooked returns the last "openssl hooked N" of the human lines run
// printed: what a user sees (the command itself reads the JSON).
func shownHooked(s string) (string, bool) {
	m := regexp.MustCompile(`openssl hooked (\d+)`).FindAllStringSubmatch(s, -1)
	if len(m) == 0 {
		return "", false
	}
	return m[len(m)-1][1], true
}
