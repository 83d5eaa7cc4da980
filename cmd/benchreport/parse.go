package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Record is one JSON line printed by a C benchmark program (bench/c).
type Record map[string]any

// Str returns a string field ("" if missing or not a string).
func (r Record) Str(k string) string {
	s, _ := r[k].(string)
	return s
}

// Num returns a numeric field and whether it was present.
func (r Record) Num(k string) (float64, bool) {
	f, ok := r[k].(float64)
	return f, ok
}

// Nums returns a numeric array field.
func (r Record) Nums(k string) []float64 {
	arr, _ := r[k].([]any)
	out := make([]float64, 0, len(arr))
	for _, v := range arr {
		if f, ok := v.(float64); ok {
			out = append(out, f)
		}
	}
	return out
}

// ParseRecords reads the JSON lines of a C benchmark's stdout. Lines that do
// not start with '{' are ignored (a library may print stats on stdout); a
// line that starts with '{' but is not valid JSON is an error, since it means
// the program and this parser disagree.
func ParseRecords(out string) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("bad JSON line %q: %w", line, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

// GoBench is one result line of `go test -bench`.
type GoBench struct {
	Name    string             // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	Procs   int                // the -N suffix (GOMAXPROCS), 1 if absent
	Iters   int64              // b.N
	Metrics map[string]float64 // unit → value: "ns/op", "B/op", custom metrics
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-(\d+))?\s+(\d+)\s+(.*)$`)

// ParseGoBench reads `go test -bench` text output.
func ParseGoBench(out string) ([]GoBench, error) {
	var res []GoBench
	for _, line := range strings.Split(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		b := GoBench{Name: m[1], Procs: 1, Metrics: map[string]float64{}}
		if m[2] != "" {
			b.Procs, _ = strconv.Atoi(m[2])
		}
		b.Iters, _ = strconv.ParseInt(m[3], 10, 64)
		f := strings.Fields(m[4])
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("odd value/unit pairs in %q", line)
		}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bad value %q in %q", f[i], line)
			}
			b.Metrics[f[i+1]] = v
		}
		if _, ok := b.Metrics["ns/op"]; !ok {
			return nil, fmt.Errorf("no ns/op in %q", line)
		}
		res = append(res, b)
	}
	return res, nil
}

// goBackends maps a benchmark name segment to the label used in the report.
var goBackends = map[string]string{
	"secretheap": "alloc",
	"alloc":      "alloc",
	"make":       "make",
	"memguard":   "memguard",
	"memfd":      "memfd_secret/alloc",
	"secretnew":  "Secret New+Destroy",
	"secretwrap": "Secret Wrap+Destroy",
}

// goName classifies a Go benchmark into (section, workload, backend, threads).
//
// Names follow Benchmark<Func>/<backend>/<size> (alloc/bench_test.go and
// bench/go): the backend is the segment named in goBackends, the size a
// numeric segment, "Churn" in the function name makes the churn workload and
// "Parallel" a RunParallel run (threads = GOMAXPROCS). First-use benchmarks
// go to their own section. An unrecognised name is kept whole, so that it is
// reported rather than lost.
func goName(name string, procs int) (section, workload, backend string, threads int) {
	segs := strings.Split(name, "/")
	fn := strings.ToLower(segs[0])
	section, threads = "go-alloc", 1
	if strings.Contains(fn, "parallel") {
		threads = procs
	}
	if strings.Contains(fn, "first") {
		return "first-use", "Go: " + segs[0] + " (alloc/bench_test.go)", "alloc", 0
	}
	for _, seg := range segs[1:] {
		if l, ok := goBackends[strings.ToLower(seg)]; ok {
			backend = l
		} else if _, err := strconv.Atoi(seg); err == nil {
			workload = "pair" + seg
		}
	}
	if strings.Contains(fn, "churn") {
		workload = "churn"
	}
	if backend == "" || workload == "" {
		return section, name, name, threads
	}
	return section, workload, backend, threads
}
