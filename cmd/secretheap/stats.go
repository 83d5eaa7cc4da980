package main

import (
	"fmt"
	"os"

	"github.com/secretheap/secretheap/internal/options"
	"github.com/secretheap/secretheap/internal/stats"
)

// The library's exit report is read in its JSON form only
// (SECRETHEAP_STATS=json:PATH; internal/stats has the keys and the reader):
// never the text written for people, whose "summary" the JSON carries for
// printing. A file collects one report per process that exited with it (the
// library appends, one line each); the verdicts come from the last one.

// statsEnv is the SECRETHEAP_STATS value that makes the library write its
// JSON report to path.
func statsEnv(path string) string { return options.JSONPrefix + path }

// readStats reads the JSON reports the library wrote to path.
func readStats(path string) ([]stats.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return stats.ReadReports(b)
}

// statsHooked returns the last report's openssl_hooked value: 1 the
// library's hooks are OpenSSL's allocator, 0 not, 2 OpenSSL refused.
func statsHooked(rs []stats.Report) (string, bool) {
	if len(rs) == 0 {
		return "", false
	}
	v, ok := rs[len(rs)-1].Value("openssl_hooked")
	return fmt.Sprint(v), ok
}

// statsSecureInterposed returns the OpenSSL hooks' last verdict on
// CRYPTO_secure_*: "yes" when libcrypto calls them through its PLT, else
// why not ("bound-inside-libcrypto", a -Bsymbolic build).
func statsSecureInterposed(rs []stats.Report) (string, bool) {
	for i := len(rs) - 1; i >= 0; i-- {
		if v, ok := rs[i].OpenSSL["secure_interposed"]; ok {
			return v, true
		}
	}
	return "", false
}

// statsSummary is what a person reads when the program exits: each report's
// human lines, in the order the processes wrote them.
func statsSummary(rs []stats.Report) []byte {
	var out []byte
	for _, r := range rs {
		out = append(out, r.Summary...)
	}
	return out
}
