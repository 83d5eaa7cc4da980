package secretmem

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzSpans checks the committed-range set against a bitmap model: add
// covers exactly the union, spans stay sorted, disjoint and non-adjacent,
// and gaps returns exactly the uncovered part of a query. Commit relies on
// gaps to never pread over committed bytes.
func FuzzSpans(f *testing.F) {
	f.Add([]byte{0, 4, 8, 12, 2, 10})
	f.Add([]byte{10, 20, 0, 5, 5, 10, 20, 30})
	f.Add([]byte{1, 2, 3, 4, 2, 3, 0, 63})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const n = 64
		var s spans
		var model [n]bool
		for i := 0; i+1 < len(ops); i += 2 {
			lo, hi := uintptr(ops[i]%n), uintptr(ops[i+1]%n)
			if lo > hi {
				lo, hi = hi, lo
			}
			if lo == hi {
				hi++
			}
			// gaps before adding: exactly the model's uncovered cells.
			var want []span
			for j := lo; j < hi; j++ {
				if model[j] {
					continue
				}
				if len(want) > 0 && want[len(want)-1].hi == j {
					want[len(want)-1].hi++
				} else {
					want = append(want, span{j, j + 1})
				}
			}
			require.Equal(t, want, s.gaps(lo, hi), "gaps(%d,%d) of %v", lo, hi, s)
			s.add(lo, hi)
			for j := lo; j < hi; j++ {
				model[j] = true
			}
			var total uintptr
			for k, x := range s {
				require.Less(t, x.lo, x.hi)
				if k > 0 {
					require.Less(t, s[k-1].hi, x.lo, "sorted, disjoint, non-adjacent: %v", s)
				}
				total += x.hi - x.lo
			}
			var covered uintptr
			for j := uintptr(0); j < n; j++ {
				in := false
				for _, x := range s {
					in = in || (j >= x.lo && j < x.hi)
				}
				require.Equal(t, model[j], in, "cell %d in %v", j, s)
				if model[j] {
					covered++
				}
			}
			require.Equal(t, covered, total)
			require.Equal(t, total, s.total())
		}
	})
}
