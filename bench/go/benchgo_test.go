package benchgo

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/testutil"
)

// TestInSecretMem checks the naive backend's self-check both ways: a
// memfd_secret block passes, a Go-heap buffer (the control) does not.
func TestInSecretMem(t *testing.T) {
	testutil.RequireSecretMem(t)
	m, err := memfdAlloc(100)
	require.NoError(t, err)
	defer func() { require.NoError(t, m.free()) }()
	require.Equal(t, uintptr(4096), m.size, "rounded up to one OS page")

	for _, tc := range []struct {
		name string
		p    unsafe.Pointer
		want bool
	}{
		{"memfd_secret block", m.p, true},
		{"Go heap", unsafe.Pointer(&make([]byte, 64)[0]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := inSecretMem(tc.p)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
