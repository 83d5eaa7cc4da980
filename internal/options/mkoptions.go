//go:build ignore

// mkoptions writes cshim/options_table.h from the options table (see
// package options). Run it with `go generate ./internal/options`.
package main

import (
	"os"

	"github.com/secretheap/secretheap/internal/options"
)

func main() {
	if err := os.WriteFile("../../cshim/options_table.h", options.CHeader(), 0o644); err != nil {
		panic(err)
	}
}
