package testutil

import (
	"testing"
	"time"
)

// ratioBatch is how many operations of each side BenchRatio times at once:
// enough that reading the clock (~50 ns) is noise next to the batch, few
// enough that both sides see the same machine load.
const ratioBatch = 16

// BenchRatio measures an operation against its baseline in the same run,
// interleaved: each iteration times ratioBatch calls of base, then
// ratioBatch calls of op. It reports "ratio" (op time / base time) and both
// times per call ("base-ns/op", "op-ns/op"). Interleaving keeps the ratio
// honest on a loaded machine, where two sub-benchmarks run seconds apart
// can see different loads.
func BenchRatio(b *testing.B, base, op func()) {
	b.Helper()
	var tb, to time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		for range ratioBatch {
			base()
		}
		t1 := time.Now()
		for range ratioBatch {
			op()
		}
		tb += t1.Sub(t0)
		to += time.Since(t1)
		n += ratioBatch
	}
	b.ReportMetric(float64(to)/float64(tb), "ratio")
	b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "base-ns/op")
	b.ReportMetric(float64(to.Nanoseconds())/float64(n), "op-ns/op")
}
