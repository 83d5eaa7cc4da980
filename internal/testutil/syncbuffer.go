package testutil

import "github.com/secretheap/secretheap/internal/launch"

// SyncBuffer is a buffer that a test may read while exec's copying
// goroutines write a child's output into it (internal/launch's, which keeps
// the stderr of the targets it starts).
type SyncBuffer = launch.SyncBuffer
