package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRecords(t *testing.T) {
	out := `secretheap: stats at exit (not JSON, ignored)
{"kind":"time","backend":"glibc","workload":"pair32","threads":2,"ns_per_op":6.5,"ops":100}
{"kind":"fork","backend":"glibc","mib":1,"ns":[3,1,2],"reprivatised_chunks":0}
`
	recs, err := ParseRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "glibc", recs[0].Str("backend"))
	v, ok := recs[0].Num("ns_per_op")
	assert.True(t, ok)
	assert.Equal(t, 6.5, v)
	_, ok = recs[0].Num("missing")
	assert.False(t, ok)
	assert.Equal(t, []float64{3, 1, 2}, recs[1].Nums("ns"))

	_, err = ParseRecords("{\"kind\": broken\n")
	assert.Error(t, err, "a JSON-looking line that does not parse is an error")
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
pkg: github.com/secretheap/secretheap/alloc
BenchmarkAllocFree/secretheap/32-2         	 1000000	        35.20 ns/op	       0 B/op	       0 allocs/op
BenchmarkChurn/secretheap-2                	  500000	        88.10 ns/op	         1.120 committed/live	         1.050 reserved/live
BenchmarkFirstAllocFreshProcess            	      10	     95000 ns/op
PASS
`
	res, err := ParseGoBench(out)
	require.NoError(t, err)
	require.Len(t, res, 3)
	assert.Equal(t, GoBench{Name: "AllocFree/secretheap/32", Procs: 2, Iters: 1000000,
		Metrics: map[string]float64{"ns/op": 35.2, "B/op": 0, "allocs/op": 0}}, res[0])
	assert.Equal(t, 1.12, res[1].Metrics["committed/live"])
	assert.Equal(t, 1, res[2].Procs)

	_, err = ParseGoBench("BenchmarkX-2 10 5 B/op\n")
	assert.Error(t, err, "no ns/op")
}

func TestGoName(t *testing.T) {
	for _, tc := range []struct {
		name            string
		procs           int
		section, wl, be string
		threads         int
	}{
		{"AllocFree/secretheap/32", 2, "go-alloc", "pair32", "alloc", 1},
		{"AllocFree/make/17000", 2, "go-alloc", "pair17000", "make", 1},
		{"AllocFree/memguard/4096", 2, "go-alloc", "pair4096", "memguard", 1},
		{"AllocFreeParallel/secretheap/32", 2, "go-alloc", "pair32", "alloc", 2},
		{"Churn/secretheap", 2, "go-alloc", "churn", "alloc", 1},
		{"ChurnBaselines/memfd", 2, "go-alloc", "churn", "memfd_secret/alloc", 1},
		{"NaiveAllocFreeParallel/memfd/32", 2, "go-alloc", "pair32", "memfd_secret/alloc", 2},
		{"Secret/secretwrap/32", 2, "go-alloc", "pair32", "Secret Wrap+Destroy", 1},
		{"FirstAllocFreshProcess", 1, "first-use", "Go: FirstAllocFreshProcess (alloc/bench_test.go)", "alloc", 0},
		{"Mystery/thing", 2, "go-alloc", "Mystery/thing", "Mystery/thing", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, wl, be, th := goName(tc.name, tc.procs)
			assert.Equal(t, []any{tc.section, tc.wl, tc.be, tc.threads}, []any{sec, wl, be, th})
		})
	}
}

func TestParseHyperfine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"results":[
		{"command":"env openssl version","median":0.0021,"mean":0.0023,"user":0.001,"system":0.0005},
		{"command":"env LD_PRELOAD=/x.so openssl version","median":0.0025}]}`), 0o644))
	res, err := parseHyperfine(path)
	require.NoError(t, err)
	assert.Equal(t, map[string]hyperTimes{
		"env openssl version":                  {median: 0.0021, user: 0.001, system: 0.0005},
		"env LD_PRELOAD=/x.so openssl version": {median: 0.0025},
	}, res)

	require.NoError(t, os.WriteFile(path, []byte(`{"results":[]}`), 0o644))
	_, err = parseHyperfine(path)
	assert.Error(t, err)
}

func TestParseServerMemory(t *testing.T) {
	assert.Equal(t, 123456.0, parsePeak(`{"openssl_allocations":9,"openssl_peak_live_bytes":123456}`+"\n"))
	assert.Equal(t, 0.0, parsePeak("nothing"))
	stats := `{"pid":1,"version":"0.1.0","summary":"","committed_bytes":1089536,"classes":[]}
{"pid":2,"version":"0.1.0","summary":"","committed_bytes":954368,"classes":[]}
`
	assert.Equal(t, 932.0*1024, parseCommitted(stats), "the last report is the process's final one")
	assert.Equal(t, 151552.0, parseCommitted(stats+`{"pid":3,"committed_bytes":151552}`+"\n"), "the exact field")
	assert.Equal(t, 0.0, parseCommitted(""))
}
