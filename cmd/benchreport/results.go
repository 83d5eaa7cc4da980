package main

import (
	"math"
	"sort"
)

// Sample is one measurement: one backend, one workload, one round.
type Sample struct {
	Section  string  `json:"section"`           // "c-alloc", "go-alloc", "tls-inproc", ...
	Workload string  `json:"workload"`          // "pair32", "churn", "handshake", ...
	Threads  int     `json:"threads,omitempty"` // threads or goroutines; 0 where it does not apply
	Backend  string  `json:"backend"`
	Round    int     `json:"round"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"` // "ns/op", "handshakes/s", "ms", ...
}

// key identifies a comparison: every backend of one workload at one thread count.
type key struct {
	Section, Workload string
	Threads           int
}

// Row summarises one backend of one comparison over its rounds.
type Row struct {
	Section  string  `json:"section"`
	Workload string  `json:"workload"`
	Threads  int     `json:"threads,omitempty"`
	Backend  string  `json:"backend"`
	Unit     string  `json:"unit"`
	Median   float64 `json:"median"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	Rounds   int     `json:"rounds"`
	Baseline string  `json:"baseline,omitempty"`
	// Ratio is the median over rounds of value ÷ the baseline's value in the
	// same round (the machine is noisy; a round's backends ran back to
	// back). NaN (omitted from JSON as null) when no round had a baseline.
	Ratio float64 `json:"-"`
	// RatioJSON carries Ratio for encoding/json, which rejects NaN.
	RatioJSON *float64 `json:"ratio,omitempty"`
}

// median of xs (NaN for none); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Summarise turns samples into rows, one per (section, workload, threads,
// backend), in the order in which each first appears. baselines names the
// baseline backend of each section; ratios are taken against it round by round.
func Summarise(samples []Sample, baselines map[string]string) []Row {
	type rowKey struct {
		k       key
		backend string
	}
	var order []rowKey
	values := map[rowKey][]float64{}
	units := map[rowKey]string{}
	perRound := map[rowKey]map[int]float64{}
	for _, s := range samples {
		rk := rowKey{key{s.Section, s.Workload, s.Threads}, s.Backend}
		if _, ok := values[rk]; !ok {
			order = append(order, rk)
			perRound[rk] = map[int]float64{}
		}
		values[rk] = append(values[rk], s.Value)
		units[rk] = s.Unit
		perRound[rk][s.Round] = s.Value
	}
	rows := make([]Row, 0, len(order))
	for _, rk := range order {
		vs := values[rk]
		r := Row{
			Section: rk.k.Section, Workload: rk.k.Workload, Threads: rk.k.Threads,
			Backend: rk.backend, Unit: units[rk], Median: median(vs),
			Min: minOf(vs), Max: maxOf(vs), Rounds: len(vs), Ratio: math.NaN(),
		}
		if base, ok := baselines[rk.k.Section]; ok {
			r.Baseline = base
			if bv, ok := perRound[rowKey{rk.k, base}]; ok {
				var ratios []float64
				for round, v := range perRound[rk] {
					if b, ok := bv[round]; ok && b != 0 {
						ratios = append(ratios, v/b)
					}
				}
				r.Ratio = median(ratios)
			}
		}
		if !math.IsNaN(r.Ratio) {
			x := r.Ratio
			r.RatioJSON = &x
		}
		rows = append(rows, r)
	}
	return rows
}

func minOf(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		m = math.Min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}

// find returns the row of one backend in one comparison, if present.
func find(rows []Row, section, workload string, threads int, backend string) (Row, bool) {
	for _, r := range rows {
		if r.Section == section && r.Workload == workload && r.Threads == threads && r.Backend == backend {
			return r, true
		}
	}
	return Row{}, false
}

// distinct returns the distinct values of f over the rows of a section, in
// order of first appearance.
func distinct(rows []Row, section string, f func(Row) string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Section != section || seen[f(r)] {
			continue
		}
		seen[f(r)] = true
		out = append(out, f(r))
	}
	return out
}

// backendsOf returns the backends of a section's rows, the section's
// baseline first, then in order of first appearance.
func backendsOf(rows []Row, section string) []string {
	bs := distinct(rows, section, func(r Row) string { return r.Backend })
	base, ok := baselines[section]
	if !ok {
		return bs
	}
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		if b == base {
			out = append([]string{b}, out...)
		} else {
			out = append(out, b)
		}
	}
	return out
}
