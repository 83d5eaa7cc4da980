package stats_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/stats"
)

// TestCHeaderUpToDate: cshim/stats_table.h is what the table generates.
func TestCHeaderUpToDate(t *testing.T) {
	got, err := os.ReadFile("../../cshim/stats_table.h")
	require.NoError(t, err)
	assert.Equal(t, string(stats.CHeader()), string(got), "run make generate (go generate ./internal/stats)")
}

// TestTable: keys are unique snake_case, every row has a meaning, classes
// sit where the struct has them.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range stats.Fields {
		assert.Regexp(t, `^[a-z][a-z0-9_]*$`, f.Key)
		assert.False(t, seen[f.Key], "duplicate key %s", f.Key)
		seen[f.Key] = true
		assert.NotEmpty(t, f.Meaning, f.Key)
		assert.True(t, f.C || f.Go != "", "%s is in neither struct", f.Key)
	}
	for i := 1; i < len(stats.Causes); i++ {
		assert.False(t, seen[stats.FailureKey(i)], "failure key %s", stats.FailureKey(i))
	}
	require.NotNil(t, stats.Lookup(stats.ClassesAfter))
	assert.Equal(t, "failures_no_support", stats.FailureKey(1))
}

// TestReadReports: one report per line, the last is the process that
// exited last; a report cut short is an error naming its line.
func TestReadReports(t *testing.T) {
	two := `{"pid":10,"version":"0.1.0","summary":"secretheap stats (pid 10, version 0.1.0)\n","openssl_hooked":0,"classes":[]}
{"pid":11,"version":"0.1.0","summary":"s","openssl_hooked":1,"memlock_limit":18446744073709551615,"classes":[{"size":16,"slabs":2}],"openssl":{"mode":"all","secure_interposed":"yes","refused":0}}
`
	rs, err := stats.ReadReports([]byte(two))
	require.NoError(t, err)
	require.Len(t, rs, 2)
	last, err := stats.ReadLast([]byte(two))
	require.NoError(t, err)
	assert.Equal(t, 11, last.PID)
	v, ok := last.Value("openssl_hooked")
	assert.True(t, ok)
	assert.Equal(t, uint64(1), v)
	assert.Equal(t, ^uint64(0), last.Values["memlock_limit"])
	assert.Equal(t, "yes", last.OpenSSL["secure_interposed"])
	assert.Equal(t, "0", last.OpenSSL["refused"])
	assert.Equal(t, uint64(2), last.Classes[0]["slabs"])
	assert.Nil(t, rs[0].OpenSSL, "no OpenSSL block")

	_, err = stats.ReadLast([]byte(two + `{"pid":12,"versi`))
	assert.ErrorContains(t, err, "line 3")
	_, err = stats.ReadLast(nil)
	assert.ErrorContains(t, err, "no stats report")
	_, err = stats.ReadLast([]byte(`{"pid":1,"live_blocks":-1}`))
	assert.ErrorContains(t, err, "live_blocks")
}

// TestDocs: docs/tuning.md's Statistics section names every value with its
// key and Go name, every cause and every OpenSSL key, and documents no key
// the table lacks.
func TestDocs(t *testing.T) {
	b, err := os.ReadFile("../../docs/tuning.md")
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, "## Statistics")
	require.GreaterOrEqual(t, start, 0)
	doc = doc[start:]
	if end := strings.Index(doc[3:], "\n## "); end >= 0 {
		doc = doc[:end+3]
	}
	for _, f := range stats.Fields {
		if f.C && f.Key != "struct_size" {
			assert.Contains(t, doc, "`"+f.Key+"`", "docs/tuning.md: stats value %s", f.Key)
		}
		if f.Go != "" {
			assert.Contains(t, doc, "`"+f.Go+"`", "docs/tuning.md: alloc.Stats.%s", f.Go)
		}
	}
	for _, f := range stats.ClassFields {
		assert.Contains(t, doc, "| `"+f.Key+"` / `"+f.Go+"` |", "docs/tuning.md: class value %s", f.Key)
	}
	for i := 1; i < len(stats.Causes); i++ {
		assert.Contains(t, doc, "`"+strings.TrimPrefix(stats.FailureKey(i), "failures_")+"`", "docs/tuning.md: cause %s", stats.Causes[i])
	}
	for _, f := range stats.OpenSSL {
		assert.Contains(t, doc, "`"+f.Key+"`", "docs/tuning.md: OpenSSL value %s", f.Key)
	}
	// The first column of the tables: C keys only.
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line, "|", 3)[1]
		for _, part := range strings.Split(cell, "`") {
			if part == "" || strings.ContainsAny(part, " ()/") || strings.ToLower(part) != part {
				continue
			}
			known := stats.Lookup(part) != nil || part == "failures_<cause>"
			for _, f := range stats.ClassFields {
				known = known || f.Key == part
			}
			assert.True(t, known, "docs/tuning.md documents %q, which is not in internal/stats", part)
		}
	}
}
