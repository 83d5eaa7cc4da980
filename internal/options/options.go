// Package options is the one table of secretheap's options: the
// SECRETHEAP_* environment variables, their syntax, defaults and meaning.
// The Go allocator parses them here (alloc.ConfigFromEnv); the C library
// parses them with the same rules from cshim/options_table.h, which
// mkoptions.go generates from Table (`go generate ./internal/options`;
// TestCHeaderUpToDate fails when the two differ). One set of test vectors,
// testdata/vectors.tsv, is run against both parsers (TestVectors here,
// cshim/tests/test_options.c in C).
//
// Syntax, the same in both languages:
//   - surrounding blanks (space, tab, CR, LF, VT, FF) are ignored; a variable
//     that is unset or blank keeps its default;
//   - enum: one of the listed words, case-insensitive;
//   - size: decimal digits, then optionally K, M or G (powers of 1024) and
//     optionally B or iB after it, or a plain B; nothing else ("16 K" and
//     "1.5G" are errors), and no overflow of 64 bits;
//   - int: decimal digits only, within the option's range;
//   - output: off or 0, stderr, or a file path containing a '/' (so that a
//     misspelt "stderr" is an error, not a file of that name); stderr or the
//     path may follow "json:" (case-insensitive) for the JSON form.
//
// Anything else is an error naming the variable and the accepted values:
// alloc.ConfigFromEnv returns it; the C library prints it and aborts at
// start-up (fail closed: a typo never silently means the defaults). A
// SECRETHEAP_* name that is neither an option nor one of the project's tool
// variables (ToolNames) is reported, once, by both.
package options

//go:generate go run mkoptions.go

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the syntax of an option's value.
type Kind uint8

const (
	// Enum is one word of Option.Values (case-insensitive).
	Enum Kind = iota
	// Size is a byte count with an optional K, M or G suffix.
	Size
	// Int is a decimal integer in [Option.Min, Option.Max].
	Int
	// Output is off, stderr or a file path, optionally after "json:".
	Output
)

// Scope says which implementations act on an option.
type Scope uint8

const (
	// Both: the C library and the Go allocator.
	Both Scope = iota
	// COnly: the C library (LD_PRELOAD, libsecretheap); the Go allocator
	// validates the value and reports that it ignores it.
	COnly
)

// Option is one row of the table.
type Option struct {
	Name    string   // the environment variable
	Kind    Kind     // its syntax
	Default string   // as a user would write it
	Values  []string // Enum: the accepted words, in the order of the C enum (internal.h)
	Min     int64    // Int: smallest value
	Max     int64    // Int: largest value
	Scope   Scope    // who acts on it
	Field   string   // the member of the C core's struct sh_options
	CEnum   string   // Enum: the prefix of its C constants (SH_POLICY: SH_POLICY_AUTO, …)
	Config  string   // Scope Both: the field of alloc.Config it sets (TestConfigFromTable)
	Meaning string   // one line
}

// Table lists every option. Adding one means adding a row here and running
// `make generate`: the C core's parser table and its struct sh_options
// member (cshim/options_table.h, cshim/options.h) follow, and so does
// `secretheap run`'s flag. The tests then ask for what a person writes:
// vectors in testdata/vectors.tsv (TestVectors wants a valid and an invalid
// one, run by both parsers), a row in README.md and a section in
// docs/tuning.md (TestDocs), and for a Scope Both option the alloc.Config
// field named in Config and its reading in alloc's configFromEnv
// (TestConfigFromTable). Then the option's use.
var Table = []Option{
	{Name: "SECRETHEAP_BACKEND", Kind: Enum, Default: "auto", Values: []string{"auto", "secret", "locked"}, Scope: Both, Field: "backend", Config: "Policy", CEnum: "SH_POLICY",
		Meaning: "auto: memfd_secret, else the locked backend with one loud warning; secret: fail without it; locked"},
	{Name: "SECRETHEAP_LIMIT", Kind: Size, Default: "0", Scope: Both, Field: "limit", Config: "Limit",
		Meaning: "most secret memory mapped (bytes, K/M/G); 0: only RLIMIT_MEMLOCK limits"},
	{Name: "SECRETHEAP_IDLE_CHUNKS", Kind: Int, Default: "2", Min: 0, Max: 4096, Scope: Both, Field: "idle_chunks", Config: "MaxIdleChunks",
		Meaning: "wholly free chunks kept mapped for reuse"},
	{Name: "SECRETHEAP_ON_EXHAUSTED", Kind: Enum, Default: "fallback", Values: []string{"fallback", "null", "abort"}, Scope: Both, Field: "on_exhausted", Config: "OnExhausted", CEnum: "SH_EXH",
		Meaning: "fallback: the fallback pool (C; Go: as null), counted, one warning; null: NULL/ErrExhausted, counted, reported once; abort"},
	{Name: "SECRETHEAP_OPENSSL", Kind: Enum, Default: "all", Values: []string{"all", "secure", "off"}, Scope: COnly, Field: "openssl", CEnum: "SH_OPENSSL",
		Meaning: "all OpenSSL allocations, secure (only CRYPTO_secure_*), or off"},
	{Name: "SECRETHEAP_SECURE_RESERVE", Kind: Size, Default: "256K", Scope: COnly, Field: "secure_reserve",
		Meaning: "share of the limit kept for secure-heap allocations in mode all"},
	{Name: "SECRETHEAP_FORK", Kind: Enum, Default: "copy", Values: []string{"copy", "dontfork"}, Scope: COnly, Field: "fork", CEnum: "SH_FORK",
		Meaning: "copy: children get private copies; dontfork: children lose the secrets"},
	{Name: "SECRETHEAP_STATS", Kind: Output, Default: "off", Scope: COnly, Field: "stats",
		Meaning: "off, stderr, or a file path: print statistics at exit; json:stderr or json:PATH: as one JSON line"},
	{Name: "SECRETHEAP_VERBOSE", Kind: Int, Default: "0", Min: 0, Max: 2, Scope: COnly, Field: "verbose",
		Meaning: "0 warnings only, 1 info, 2 debug"},
	{Name: "SECRETHEAP_NODUMP", Kind: Int, Default: "0", Min: 0, Max: 1, Scope: Both, Field: "nodump", Config: "NoDump",
		Meaning: "1: prctl(PR_SET_DUMPABLE, 0) at start (blocks same-user ptrace and core dumps)"},
	{Name: "SECRETHEAP_CHECK_ZERO", Kind: Int, Default: "0", Min: 0, Max: 1, Scope: Both, Field: "check_zero", Config: "CheckZero",
		Meaning: "1: verify a block is still zero when handed out again"},
}

// ToolNames are SECRETHEAP_* variables read by the project's own tools and
// tests, not by the library; a name ending in "_" is a prefix. They are
// never reported as unknown.
var ToolNames = []string{
	"SECRETHEAP_REQUIRE", "SECRETHEAP_LIBRARY", "SECRETHEAP_BIN",
	"SECRETHEAP_TESTUTIL_", "SECRETHEAP_DIFF_", "SECRETHEAP_SOAK_", "SECRETHEAP_CONFORMANCE_",
	"SECRETHEAP_CLI_TEST_", "SECRETHEAP_BENCH_", "SECRETHEAP_ATTACK_",
}

// Prefix starts every option's and tool variable's name.
const Prefix = "SECRETHEAP_"

// Lookup returns the option named name, or nil.
func Lookup(name string) *Option {
	for i := range Table {
		if Table[i].Name == name {
			return &Table[i]
		}
	}
	return nil
}

// Flag is the option's name as a command-line flag of `secretheap run`:
// SECRETHEAP_ON_EXHAUSTED is --on-exhausted.
func (o *Option) Flag() string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(o.Name, Prefix), "_", "-"))
}

// IsBool reports whether the option is an on/off switch (an Int of 0 or 1):
// a boolean flag of `secretheap run`.
func (o *Option) IsBool() bool { return o.Kind == Int && o.Min == 0 && o.Max == 1 }

// IsTool reports whether name is one of ToolNames.
func IsTool(name string) bool {
	for _, t := range ToolNames {
		if name == t || (strings.HasSuffix(t, "_") && strings.HasPrefix(name, t)) {
			return true
		}
	}
	return false
}

// Accepted describes the accepted values, as both parsers' errors say it.
func (o *Option) Accepted() string {
	switch o.Kind {
	case Enum:
		return strings.Join(o.Values, ", ")
	case Size:
		return "a size in bytes: digits with an optional K, M or G suffix, e.g. 64K"
	case Int:
		if o.Min == 0 && o.Max == 1 {
			return "0 or 1"
		}
		if o.Max-o.Min <= 2 { // a few levels: name them, as for an enum
			var vs []string
			for v := o.Min; v <= o.Max; v++ {
				vs = append(vs, strconv.FormatInt(v, 10))
			}
			return strings.Join(vs, ", ")
		}
		return fmt.Sprintf("an integer from %d to %d", o.Min, o.Max)
	}
	// The JSON form (JSONPrefix) is in the option's Meaning, not here:
	// this text is the one the existing messages and their tests know.
	return "off, stderr, or a file path containing a /"
}

// OutputMax bounds an Output value (json: and the path, in bytes): the C
// core's buffer, with its NUL.
const OutputMax = 256

// JSONPrefix before an Output value asks for the JSON form.
const JSONPrefix = "json:"

// Value is a parsed value.
type Value struct {
	Index int    // Enum: position in Option.Values
	N     uint64 // Size, Int
	Text  string // Output: "" (off), "stderr" or the path, after "json:" for JSON
}

// blanks are trimmed around a value, by both parsers.
const blanks = " \t\r\n\v\f"

// ErrorText is the message of an invalid value, the same in both parsers.
func (o *Option) ErrorText(raw string) string {
	return fmt.Sprintf("%s=%q is invalid (accepted: %s)", o.Name, raw, o.Accepted())
}

// Parse parses raw (an unset variable is ""). Blank gives the default.
func (o *Option) Parse(raw string) (Value, error) {
	s := strings.Trim(raw, blanks)
	if s == "" {
		s = o.Default
	}
	v, ok := o.parse(s)
	if !ok {
		return Value{}, fmt.Errorf("secretheap: %s", o.ErrorText(raw))
	}
	return v, nil
}

func (o *Option) parse(s string) (Value, bool) {
	switch o.Kind {
	case Enum:
		for i, w := range o.Values {
			if strings.EqualFold(s, w) {
				return Value{Index: i}, true
			}
		}
	case Size:
		n, ok := parseSize(s)
		return Value{N: n}, ok
	case Int:
		if !allDigits(s) {
			return Value{}, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < o.Min || n > o.Max {
			return Value{}, false
		}
		return Value{N: uint64(n)}, true
	case Output:
		if strings.EqualFold(s, "off") || s == "0" {
			return Value{}, true
		}
		form := ""
		if len(s) >= len(JSONPrefix) && strings.EqualFold(s[:len(JSONPrefix)], JSONPrefix) {
			form, s = JSONPrefix, s[len(JSONPrefix):]
		}
		switch {
		case strings.EqualFold(s, "stderr"):
			return Value{Text: form + "stderr"}, true
		case strings.Contains(s, "/") && len(form)+len(s) < OutputMax:
			return Value{Text: form + s}, true
		}
	}
	return Value{}, false
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseSize parses s with the size syntax (blanks around it ignored; blank
// is an error).
func ParseSize(s string) (uint64, error) {
	n, ok := parseSize(strings.Trim(s, blanks))
	if !ok {
		return 0, fmt.Errorf("not a size (digits with an optional K, M or G suffix): %q", s)
	}
	return n, nil
}

// parseSize is the size syntax of the package comment.
func parseSize(s string) (uint64, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		return 0, false
	}
	rest := strings.ToLower(s[i:])
	shift := 0
	if rest != "" && strings.IndexByte("kmg", rest[0]) >= 0 {
		shift = 10 * (1 + strings.IndexByte("kmg", rest[0]))
		rest = rest[1:]
		if rest == "ib" {
			rest = ""
		}
	}
	if rest == "b" {
		rest = ""
	}
	if rest != "" || n > ^uint64(0)>>shift {
		return 0, false
	}
	return n << shift, true
}

// Canonical is v written back in one form per value: the enum word, the
// byte count or integer in decimal, off/stderr/the path. The test vectors
// compare parsers through it.
func (o *Option) Canonical(v Value) string {
	switch o.Kind {
	case Enum:
		return o.Values[v.Index]
	case Size, Int:
		return strconv.FormatUint(v.N, 10)
	}
	if v.Text == "" {
		return "off"
	}
	return v.Text // "json:" lower-case
}

// Env is what Read found in an environment.
type Env struct {
	Values map[string]Value // every option, parsed or defaulted
	Set    map[string]bool  // options given a non-blank value
	// Notes are the reports both implementations print once: unknown
	// SECRETHEAP_* names (and, for the Go allocator, C-only options set).
	Notes []string
}

// Read parses every option from lookup and scans environ ("NAME=value"
// entries, as os.Environ returns them) for unknown SECRETHEAP_* names. The
// first invalid value is the error.
func Read(lookup func(string) (string, bool), environ []string) (*Env, error) {
	e := &Env{Values: make(map[string]Value), Set: make(map[string]bool)}
	for i := range Table {
		o := &Table[i]
		raw, _ := lookup(o.Name)
		v, err := o.Parse(raw)
		if err != nil {
			return nil, err
		}
		e.Values[o.Name] = v
		e.Set[o.Name] = strings.Trim(raw, blanks) != ""
	}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, Prefix) && Lookup(name) == nil && !IsTool(name) {
			e.Notes = append(e.Notes, UnknownText(name))
		}
	}
	return e, nil
}

// UnknownText is the report of an unknown SECRETHEAP_* name, the same in
// both implementations.
func UnknownText(name string) string {
	names := make([]string, len(Table))
	for i, o := range Table {
		names[i] = strings.TrimPrefix(o.Name, Prefix)
	}
	return fmt.Sprintf("%s is not an option of secretheap and is ignored (options: SECRETHEAP_ + %s)", name, strings.Join(names, ", "))
}
