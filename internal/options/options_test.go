package options_test

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/options"
)

// vector is one line of testdata/vectors.tsv.
type vector struct {
	line      int
	name, raw string
	want      string // "=canonical" or "error"
}

// unescape decodes the vectors' \s, \t and \n.
func unescape(s string) string {
	return strings.NewReplacer(`\s`, " ", `\t`, "\t", `\n`, "\n").Replace(s)
}

func readVectors(t *testing.T) []vector {
	f, err := os.Open("testdata/vectors.tsv")
	require.NoError(t, err)
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		require.Len(t, cols, 3, "vectors.tsv:%d", n)
		vs = append(vs, vector{n, cols[0], unescape(cols[1]), cols[2]})
	}
	require.NoError(t, sc.Err())
	return vs
}

// TestVectors runs the shared vectors against the Go parser (the C core
// runs the same file in cshim/tests/test_options.c). Every option has a
// valid and an invalid vector.
func TestVectors(t *testing.T) {
	valid, invalid := map[string]bool{}, map[string]bool{}
	for _, v := range readVectors(t) {
		o := options.Lookup(v.name)
		require.NotNil(t, o, "vectors.tsv:%d: %s is no option", v.line, v.name)
		got, err := o.Parse(v.raw)
		if v.want == "error" {
			invalid[v.name] = true
			if assert.Error(t, err, "vectors.tsv:%d: %s=%q", v.line, v.name, v.raw) {
				assert.Equal(t, "secretheap: "+o.ErrorText(v.raw), err.Error())
				assert.Contains(t, err.Error(), o.Name)
				assert.Contains(t, err.Error(), "(accepted: "+o.Accepted()+")")
			}
			continue
		}
		valid[v.name] = true
		if assert.NoError(t, err, "vectors.tsv:%d", v.line) {
			assert.Equal(t, strings.TrimPrefix(v.want, "="), o.Canonical(got), "vectors.tsv:%d: %s=%q", v.line, v.name, v.raw)
		}
	}
	for _, o := range options.Table {
		assert.True(t, valid[o.Name] && invalid[o.Name], "%s needs a valid and an invalid vector", o.Name)
		_, err := o.Parse("")
		assert.NoError(t, err, "%s: the default %q parses", o.Name, o.Default)
	}
}

// TestCHeaderUpToDate: cshim/options_table.h is what the table generates.
func TestCHeaderUpToDate(t *testing.T) {
	got, err := os.ReadFile("../../cshim/options_table.h")
	require.NoError(t, err)
	assert.Equal(t, string(options.CHeader()), string(got), "run go generate ./internal/options")
	got, err = os.ReadFile("../../cshim/options.h")
	require.NoError(t, err)
	assert.Equal(t, string(options.CStruct()), string(got), "run go generate ./internal/options")
	for _, o := range options.Table {
		assert.Equal(t, o.Kind == options.Enum, o.CEnum != "", "%s: CEnum for enums only", o.Name)
	}
}

// TestDocs: README's options table and docs/tuning.md have a row and a
// section for every option, with its default, and no option that is gone.
func TestDocs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	tuning, err := os.ReadFile("../../docs/tuning.md")
	require.NoError(t, err)
	for _, o := range options.Table {
		assert.Contains(t, string(readme), "| "+o.Name+" | "+o.Default+" |", "README.md row of %s", o.Name)
		assert.Contains(t, string(tuning), "### "+o.Name+" — `"+o.Default+"` (default)", "docs/tuning.md section of %s", o.Name)
		if o.Scope == options.COnly {
			assert.Contains(t, lineOf(string(tuning), "### "+o.Name+" "), "(C library only)", "docs/tuning.md: %s is C-only", o.Name)
		}
	}
	for _, doc := range []string{string(readme), string(tuning)} {
		for _, line := range strings.Split(doc, "\n") {
			if name, ok := strings.CutPrefix(line, "| SECRETHEAP_"); ok {
				name, _, _ = strings.Cut(name, " ")
				assert.NotNil(t, options.Lookup("SECRETHEAP_"+name), "documented option SECRETHEAP_%s is not in the table", name)
			}
		}
	}
}

func lineOf(doc, prefix string) string {
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// TestRead: every option parsed or defaulted; unknown SECRETHEAP_* names
// reported (the tools' own variables not); the first invalid value is the
// error.
func TestRead(t *testing.T) {
	env := map[string]string{"SECRETHEAP_LIMIT": "64K", "SECRETHEAP_BACKND": "secret", "SECRETHEAP_REQUIRE": "1", "SECRETHEAP_TESTUTIL_CHILD": "x"}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	e, err := options.Read(lookup, append(environ, "PATH=/bin"))
	require.NoError(t, err)
	assert.Equal(t, uint64(64<<10), e.Values["SECRETHEAP_LIMIT"].N)
	assert.True(t, e.Set["SECRETHEAP_LIMIT"])
	assert.False(t, e.Set["SECRETHEAP_BACKEND"])
	assert.Equal(t, "auto", options.Lookup("SECRETHEAP_BACKEND").Canonical(e.Values["SECRETHEAP_BACKEND"]))
	require.Len(t, e.Notes, 1)
	assert.Contains(t, e.Notes[0], "SECRETHEAP_BACKND is not an option of secretheap and is ignored (options: SECRETHEAP_ + BACKEND, LIMIT")

	env["SECRETHEAP_FORK"] = "spoon"
	_, err = options.Read(lookup, environ)
	assert.EqualError(t, err, `secretheap: SECRETHEAP_FORK="spoon" is invalid (accepted: copy, dontfork)`)
}
