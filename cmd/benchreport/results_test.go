package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{5, 1, 3}, 3},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{7}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			assert.Equal(t, tc.want, median(tc.in))
			assert.Equal(t, in, tc.in, "input not reordered")
		})
	}
	assert.True(t, math.IsNaN(median(nil)))
}

func TestSummariseRatiosPerRound(t *testing.T) {
	// Round 2 is twice as slow for everyone (a noisy machine): the ratio
	// per round stays 2, while a ratio of medians would not be exact.
	s := []Sample{
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "glibc", Round: 1, Value: 10, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "lib", Round: 1, Value: 20, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "glibc", Round: 2, Value: 100, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "lib", Round: 2, Value: 200, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "glibc", Round: 3, Value: 12, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "lib", Round: 3, Value: 30, Unit: "ns/op"},
		// Another thread count is another comparison.
		{Section: "c-alloc", Workload: "pair32", Threads: 2, Backend: "lib", Round: 1, Value: 5, Unit: "ns/op"},
		// A section without a baseline gets no ratio.
		{Section: "locked", Workload: "w", Backend: "x", Round: 1, Value: 4096, Unit: "B/secret"},
	}
	rows := Summarise(s, map[string]string{"c-alloc": "glibc"})
	require.Len(t, rows, 4)

	lib, ok := find(rows, "c-alloc", "pair32", 1, "lib")
	require.True(t, ok)
	assert.Equal(t, 30.0, lib.Median)
	assert.Equal(t, 20.0, lib.Min)
	assert.Equal(t, 200.0, lib.Max)
	assert.Equal(t, 3, lib.Rounds)
	assert.InDelta(t, 2.0, lib.Ratio, 1e-12, "median of 2, 2, 2.5")
	require.NotNil(t, lib.RatioJSON)

	base, _ := find(rows, "c-alloc", "pair32", 1, "glibc")
	assert.InDelta(t, 1.0, base.Ratio, 1e-12)

	two, _ := find(rows, "c-alloc", "pair32", 2, "lib")
	assert.True(t, math.IsNaN(two.Ratio), "no glibc at 2 threads: no ratio")
	assert.Nil(t, two.RatioJSON)

	locked, _ := find(rows, "locked", "w", 0, "x")
	assert.True(t, math.IsNaN(locked.Ratio))
	assert.Empty(t, locked.Baseline)
}

func TestRotate(t *testing.T) {
	xs := []string{"a", "b", "c"}
	assert.Equal(t, []string{"b", "c", "a"}, rotate(xs, 1))
	assert.Equal(t, []string{"a", "b", "c"}, rotate(xs, 3))
}

func TestRenderText(t *testing.T) {
	s := []Sample{
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "glibc", Round: 1, Value: 10, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "lib", Round: 1, Value: 15, Unit: "ns/op"},
		{Section: "locked", Workload: "C: VmLck", Backend: "sodium_malloc", Round: 1, Value: 4096, Unit: "B/secret"},
	}
	rep := Report{Machine: Machine{CPU: "cpu", Nproc: 2}, Rows: Summarise(s, baselines), Notes: []string{"x skipped"}}
	out := renderText(rep)
	assert.Contains(t, out, "| workload | glibc | lib |")
	assert.Contains(t, out, "| pair32 | 10.0 | 15.0 (1.50×) |")
	assert.Contains(t, out, "| C: VmLck | sodium_malloc | 4096 | B/secret |")
	assert.Contains(t, out, "- x skipped")
}

func TestCharts(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		log  bool
		ss   []series
	}{
		{"linear", false, []series{{"a", []float64{1, 2}}, {"b", []float64{3, math.NaN()}}}},
		{"log", true, []series{{"glibc", []float64{10, 12}}, {"memfd", []float64{38000, 0}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".svg")
			require.NoError(t, barChart(path, "title", "ns/op", []string{"pair32", "churn"}, tc.ss, tc.log))
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Contains(t, string(b), "<svg")
			assert.Contains(t, string(b), "title")
			if tc.log {
				assert.Contains(t, string(b), "10k", "log axis labelled in powers of ten")
			}
		})
	}
	require.Error(t, barChart(filepath.Join(dir, "x.svg"), "t", "y", nil, nil, false), "no data")
	require.Error(t, barChart(filepath.Join(dir, "y.svg"), "t", "y", []string{"g"}, []series{{"a", []float64{0}}}, true),
		"log scale without a positive value")

	// writeCharts: only charts with data, and stale ones removed.
	stale := filepath.Join(dir, "fork.svg")
	require.NoError(t, os.WriteFile(stale, []byte("old"), 0o644))
	rows := Summarise([]Sample{
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "glibc", Round: 1, Value: 10, Unit: "ns/op"},
		{Section: "c-alloc", Workload: "pair32", Threads: 1, Backend: "memfd", Round: 1, Value: 38000, Unit: "ns/op"},
		{Section: "locked", Workload: "C: x", Backend: "glibc", Round: 1, Value: 0, Unit: "B/secret"},
		{Section: "locked", Workload: "C: x", Backend: "sodium", Round: 1, Value: 4096, Unit: "B/secret"},
	}, baselines)
	require.NoError(t, writeCharts(dir, rows))
	assert.FileExists(t, filepath.Join(dir, "c_alloc_1thread.svg"))
	assert.FileExists(t, filepath.Join(dir, "locked_per_secret.svg"))
	assert.NoFileExists(t, filepath.Join(dir, "c_alloc_2threads.svg"))
	assert.NoFileExists(t, stale)
}

func TestSpansDecades(t *testing.T) {
	assert.True(t, spansDecades([]series{{"a", []float64{10, 100000}}}, 4))
	assert.False(t, spansDecades([]series{{"a", []float64{10, 1000, 0, math.NaN()}}}, 4))
}

func TestFmt(t *testing.T) {
	assert.Equal(t, "12.3", fmtVal(12.34))
	assert.Equal(t, "38000", fmtVal(38000))
	assert.Equal(t, " (1.50×)", fmtRatio(1.5))
	assert.Equal(t, " (3800×)", fmtRatio(3800))
	assert.Equal(t, "", fmtRatio(math.NaN()))
	assert.True(t, strings.HasPrefix(siLabel(1e4), "10k"))
}

func TestBackendsOfBaselineFirst(t *testing.T) {
	rows := Summarise([]Sample{
		{Section: "c-alloc", Workload: "w", Backend: "lib", Round: 1, Value: 2},
		{Section: "c-alloc", Workload: "w", Backend: "glibc", Round: 1, Value: 1},
		{Section: "c-alloc", Workload: "w", Backend: "sodium", Round: 1, Value: 3},
	}, baselines)
	assert.Equal(t, []string{"glibc", "lib", "sodium"}, backendsOf(rows, "c-alloc"))
}
