package ccore

import (
	"os"
	"testing"

	"github.com/secretheap/secretheap/internal/testutil"
)

// TestMain lifts RLIMIT_MEMLOCK for root: on the new accounting model root's
// default 8 MiB is a per-user budget with no CAP_IPC_LOCK bypass, and the
// conformance suite (not about the limit) holds more than that at its peak
// (make vmtest: TestConformance/huge fell back as root on 6.1.192 and 6.12).
func TestMain(m *testing.M) {
	testutil.LiftMemlock()
	os.Exit(m.Run())
}
