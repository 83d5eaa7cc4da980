//go:build ignore

// mkstats writes cshim/stats_table.h from the stats table (see package
// stats). Run it with `go generate ./internal/stats` or `make generate`.
package main

import (
	"os"

	"github.com/secretheap/secretheap/internal/stats"
)

func main() {
	if err := os.WriteFile("../../cshim/stats_table.h", stats.CHeader(), 0o644); err != nil {
		panic(err)
	}
}
