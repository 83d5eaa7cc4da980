package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// escape makes text that came from another process (its command line,
// environment, mapped file names) safe to print on a terminal: control
// characters (C0, DEL, C1), bytes that are not UTF-8, and the backslash that
// introduces the escapes are shown as \xNN, so a process named with escape
// sequences cannot rewrite the operator's screen. JSON output needs none of
// this: encoding/json escapes control characters itself.
func escape(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, n) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, n) {
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, `\x%02x`, c)
			}
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func needsEscape(r rune, n int) bool {
	return (r == utf8.RuneError && n <= 1) || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\\'
}
