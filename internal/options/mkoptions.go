//go:build ignore

// mkoptions writes cshim/options_table.h and cshim/options.h from the
// options table (see package options). Run it with `make generate` or
// `go generate ./internal/options`.
package main

import (
	"os"

	"github.com/secretheap/secretheap/internal/options"
)

func main() {
	if err := os.WriteFile("../../cshim/options_table.h", options.CHeader(), 0o644); err != nil {
		panic(err)
	}
	if err := os.WriteFile("../../cshim/options.h", options.CStruct(), 0o644); err != nil {
		panic(err)
	}
}
