package main

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/options"
)

// TestRunFlagsFromTable: `secretheap run` has one flag per option of the
// table (SECRETHEAP_STATS is --stats), each naming its variable and default
// in --help.
func TestRunFlagsFromTable(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, dispatch([]string{"run", "--help"}, &out, &errb))
	help := errb.String()
	for _, o := range options.Table {
		line := "  -" + o.Flag() + " string\n"
		if o.IsBool() {
			line = "  -" + o.Flag() + "\n"
		}
		assert.True(t, strings.Contains(help, line), "run has no --%s for %s", o.Flag(), o.Name)
		assert.True(t, strings.Contains(help, "["+o.Name), "run --help names %s", o.Name)
		if o.Kind != options.Output && !o.IsBool() {
			assert.True(t, strings.Contains(help, "(default "+o.Default+") ["+o.Name+"]"), "run --help: default of %s", o.Name)
		}
	}
	assert.Len(t, runOptions, len(options.Table)-1-len(runBoolOptions), "every option but --stats is a run flag")
}

// TestRunFlagVectors runs the options' shared test vectors
// (internal/options/testdata/vectors.tsv, which the Go and C parsers run
// too) through run's flags: a valid value is exported in its canonical
// form, an invalid one is refused; a blank flag value is refused (blank in
// the environment would mean the default).
func TestRunFlagVectors(t *testing.T) {
	byEnv := map[string]runOption{}
	for _, o := range append(append([]runOption{}, runOptions...), runBoolOptions...) {
		byEnv[o.env] = o
	}
	f, err := os.Open("../../internal/options/testdata/vectors.tsv")
	require.NoError(t, err)
	defer f.Close()
	unescape := strings.NewReplacer(`\s`, " ", `\t`, "\t", `\n`, "\n").Replace
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		require.Len(t, cols, 3)
		o, ok := byEnv[cols[0]]
		if !ok {
			require.Equal(t, "SECRETHEAP_STATS", cols[0], "%s has no run flag", cols[0])
			continue
		}
		raw := unescape(cols[1])
		got, err := o.check(raw)
		switch {
		case cols[2] == "error" || strings.TrimSpace(raw) == "":
			assert.Error(t, err, "--%s=%q", o.flag, raw)
		default:
			if assert.NoError(t, err, "--%s=%q", o.flag, raw) {
				assert.Equal(t, strings.TrimPrefix(cols[2], "="), got, "--%s=%q", o.flag, raw)
			}
		}
		n++
	}
	require.NoError(t, sc.Err())
	assert.Greater(t, n, 50)
}
