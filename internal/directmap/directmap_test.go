package directmap_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/directmap"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

// TestMeasure commits 256 OS pages of one mapping: Measure counts exactly
// those pages, and (as root) frames between the ideal (one) and one per page.
func TestMeasure(t *testing.T) {
	testutil.RequireSecretMem(t)
	before, _ := directmap.Measure(0)
	r, err := secretmem.MapAt(nil, 2<<20, secretmem.PolicySecret)
	require.NoError(t, err)
	defer r.Close()
	require.NoError(t, r.Commit(0, 256*4096))
	f, err := directmap.Measure(0)
	assert.Equal(t, before.Pages+256, f.Pages)
	if os.Geteuid() != 0 {
		require.ErrorIs(t, err, directmap.ErrNoFrames)
		return
	}
	require.NoError(t, err)
	assert.GreaterOrEqual(t, f.Frames-before.Frames, 1)
	assert.LessOrEqual(t, f.Frames, f.Pages)
	t.Logf("%d pages in %d frames (ideal %d)", f.Pages, f.Frames, f.Ideal())
}
