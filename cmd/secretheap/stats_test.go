package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/stats"
)

// TestStatsJSONFromLibrary: the JSON report the C library writes at exit
// (run --stats json:FILE, a real OpenSSL program) read back with the
// command's own reader has exactly the keys of the stats table: every C
// value, a failures_<cause> per cause, every class with the class members,
// and the OpenSSL hooks' block. A value added to the C side or to the table
// alone fails here (or, for the struct, at compile time).
func TestStatsJSONFromLibrary(t *testing.T) {
	requireLibrary(t)
	ossl := requireOpenSSL(t)
	p := filepath.Join(t.TempDir(), "stats.json")
	r := runCLI(t, nil, "run", "--stats", "json:"+p, "--", ossl, "version")
	require.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "secretheap stats", "the report went to the file")
	rs, err := readStats(p)
	require.NoError(t, err)
	require.Len(t, rs, 1)
	rep := rs[0]
	assert.Positive(t, rep.PID)
	assert.NotEmpty(t, rep.Version)
	assert.Regexp(t, `^secretheap stats \(pid \d+, version .*\)\n(  .*\n)+secretheap openssl \(pid \d+\): mode all;`, rep.Summary)

	var want, got []string
	for _, f := range stats.Fields {
		if f.C && f.Key != "struct_size" {
			want = append(want, f.Key)
		}
	}
	for i := 1; i < len(stats.Causes); i++ {
		want = append(want, stats.FailureKey(i))
	}
	for k := range rep.Values {
		got = append(got, k)
	}
	assert.ElementsMatch(t, want, got)

	require.Len(t, rep.Classes, stats.NumClasses)
	var classKeys []string
	for _, f := range stats.ClassFields {
		classKeys = append(classKeys, f.Key)
	}
	for _, c := range rep.Classes {
		var ks []string
		for k := range c {
			ks = append(ks, k)
		}
		assert.ElementsMatch(t, classKeys, ks)
	}
	assert.Equal(t, uint64(16), rep.Classes[0]["size"])

	var osslKeys, gotOssl []string
	for _, f := range stats.OpenSSL {
		osslKeys = append(osslKeys, f.Key)
	}
	for k := range rep.OpenSSL {
		gotOssl = append(gotOssl, k)
	}
	assert.ElementsMatch(t, osslKeys, gotOssl)
	assert.Equal(t, "all", rep.OpenSSL["mode"])
	hooked, ok := statsHooked(rs)
	require.True(t, ok)
	assert.Equal(t, "1", hooked, "Debian's libcrypto routes its allocations through the hooks")
}

// TestLiveCountersInTable: the counters inspect reads from a live process
// are stats values under their table keys, the refusals one per cause in
// SECRETHEAP_CAUSE_* order (the order of secretheap_ident in stats.c).
func TestLiveCountersInTable(t *testing.T) {
	failures := 0
	for _, c := range liveCounters {
		if c.symbol == "sh_stat_failures" {
			failures++
			assert.Equal(t, stats.FailureKey(c.index), c.field)
			assert.Equal(t, failures, c.index, "causes in order from 1")
			continue
		}
		f := stats.Lookup(c.field)
		if assert.NotNil(t, f, "live counter %s is not a stats value", c.field) {
			assert.True(t, f.C, c.field)
		}
	}
	assert.Equal(t, len(stats.Causes)-1, failures, "one live counter per cause")
}
