package alloc

import "io"

// Test hooks for internal constants and tables.
const (
	MaxSmallSize = maxSmallSize
	LargeMin     = largeMin
	MaxAlloc     = maxAlloc
	OSPageSize   = osPageSize
	NumClasses   = numClasses
)

// ClassOf returns the size class of a small request and its block size.
func ClassOf(n int) (int, int) { c := sizeToClass(n); return c, int(classSize[c]) }

// SlabBlocks is the blocks per slab of class c.
func SlabBlocks(c int) int { return int(classSlabBlocks[c]) }

// ShardCount is the number of shards of h.
func (h *Heap) ShardCount() int { return len(h.shards) }

// ReadAll is the growth path of ReadFile (files without a size), open to
// tests with readers other than *os.File.
func (h *Heap) ReadAll(r io.Reader, name string) (*Secret, error) { return h.readAll(r, name) }

// ConfigFromEnvNotes is ConfigFromEnv with the notes Default prints.
func ConfigFromEnvNotes(lookup func(string) (string, bool), environ []string) (Config, []string, error) {
	return configFromEnv(lookup, environ)
}
