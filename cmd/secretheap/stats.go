package main

import (
	"bytes"
	"regexp"
)

// The library's exit report (cshim/stats.c, SECRETHEAP_STATS) is written for
// people: "secretheap stats (pid N, version V)" followed by lines of
// "name value; name value". A file collects one report per process that
// exited with it (the library appends), so readers take the last match.

// hookedRE finds the openssl_hooked counter: "openssl hooked 1".
var hookedRE = regexp.MustCompile(`openssl hooked (\d+)`)

// statsHooked returns the last "openssl hooked N" value in a stats report:
// 1 the library's hooks are OpenSSL's allocator, 0 not, 2 OpenSSL refused.
func statsHooked(b []byte) (string, bool) {
	m := hookedRE.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return "", false
	}
	return string(m[len(m)-1][1]), true
}

// interposedRE finds the OpenSSL skin's verdict on CRYPTO_secure_*: "secure
// interposed yes" when libcrypto calls them through its PLT, else why not
// ("bound-inside-libcrypto", a -Bsymbolic build).
var interposedRE = regexp.MustCompile(`secure interposed ([\w-]+)`)

// statsSecureInterposed returns the last "secure interposed" value.
func statsSecureInterposed(b []byte) (string, bool) {
	m := interposedRE.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return "", false
	}
	return string(m[len(m)-1][1]), true
}

// keyValueRE matches the report's machine-readable lines, "  key value" with
// a snake_case key (the fields of struct secretheap_stats, class_<bytes>_*,
// openssl_*), which follow the human lines for scripts.
var keyValueRE = regexp.MustCompile(`^ +[a-z][a-z0-9_]* [^ ;,]+$`)

// humanStats returns the report without its machine-readable lines: what a
// person reads when the program exits (the whole report stays available with
// run --stats FILE).
func humanStats(b []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if !keyValueRE.Match(bytes.TrimRight(line, "\n")) {
			out = append(out, line...)
		}
	}
	return out
}
