package main

// Finding libsecretheap.so and preloading it is package ldpreload's job
// (internal/ldpreload, cgo-free, shared with the tests and the demo); this file
// keeps the one environment helper the command adds on top.

import "strings"

// setEnv returns env with key set to value, replacing any earlier setting.
func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}
