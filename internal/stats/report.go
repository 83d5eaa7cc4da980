package stats

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Report is one JSON stats report (SECRETHEAP_STATS=json:…) as read back.
type Report struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	// Summary is the human lines of the text report, as printed.
	Summary string `json:"summary"`
	// Values holds every unsigned value of Fields and the failures_<cause>
	// keys, by key (keys of a newer library included).
	Values map[string]uint64 `json:"-"`
	// Classes are the size classes' values, by ClassFields key.
	Classes []map[string]uint64 `json:"classes"`
	// OpenSSL is the OpenSSL hooks' block (nil when they are not linked in):
	// Text values as strings, the others as their decimal digits.
	OpenSSL map[string]string `json:"-"`
}

// UnmarshalJSON reads one report; every value but pid, version, summary,
// classes and openssl must be an unsigned integer.
func (r *Report) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	type plain Report // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*r = Report(p)
	r.Values = make(map[string]uint64)
	for k, v := range raw {
		switch k {
		case "pid", "version", "summary", "classes":
		case "openssl":
			var o map[string]json.RawMessage
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("stats report: openssl: %w", err)
			}
			r.OpenSSL = make(map[string]string, len(o))
			for ok, ov := range o {
				var s string
				if json.Unmarshal(ov, &s) != nil {
					s = string(ov)
				}
				r.OpenSSL[ok] = s
			}
		default:
			var n uint64
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("stats report: %s: %w", k, err)
			}
			r.Values[k] = n
		}
	}
	return nil
}

// Value returns the value of key and whether the report has it.
func (r *Report) Value(key string) (uint64, bool) {
	v, ok := r.Values[key]
	return v, ok
}

// ReadReports reads the JSON reports in b, one per line (a file the library
// appended to holds one per process that wrote there). A line that is not a
// report (a cut-short last line) is an error naming its number.
func ReadReports(b []byte) ([]Report, error) {
	var out []Report
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return out, fmt.Errorf("stats report line %d: %w", n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// ReadLast returns the last report in b: the one of the process that exited
// last (in a forking program, usually the parent).
func ReadLast(b []byte) (Report, error) {
	rs, err := ReadReports(b)
	if err != nil {
		return Report{}, err
	}
	if len(rs) == 0 {
		return Report{}, fmt.Errorf("no stats report (the library writes one at exit with SECRETHEAP_STATS=json:…)")
	}
	return rs[len(rs)-1], nil
}
