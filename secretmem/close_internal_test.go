package secretmem

import (
	"bytes"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCloseWipes keeps a duplicate of a memfd_secret region's descriptor,
// closes the region, and maps the file again: the bytes must be zero. The
// control skips the wipe (unmapping directly) and finds the secret still in
// the file, so the test sees a missing wipe.
func TestCloseWipes(t *testing.T) {
	// testutil.RequireSecretMem, inlined: testutil imports this package.
	if err := Probe(); err != nil {
		if os.Getenv("SECRETHEAP_REQUIRE") == "1" {
			t.Fatalf("memfd_secret is required (SECRETHEAP_REQUIRE=1) but unavailable: %v", err)
		}
		t.Skipf("memfd_secret unavailable: %v", err)
	}
	for _, wipe := range []bool{true, false} {
		t.Run(map[bool]string{true: "Close", false: "control-no-wipe"}[wipe], func(t *testing.T) {
			kept := -1
			testHookFD = func(fd int) {
				var err error
				kept, err = unix.Dup(fd)
				require.NoError(t, err)
			}
			r, err := MapAt(nil, 64<<10, PolicySecret)
			testHookFD = nil
			require.NoError(t, err)
			require.GreaterOrEqual(t, kept, 0)
			defer unix.Close(kept)
			require.NoError(t, r.Commit(0, 2*pageSize))
			b := unsafe.Slice((*byte)(r.Base()), 2*pageSize)
			copy(b[100:], []byte("top secret"))
			copy(b[pageSize+7:], []byte("more secret"))
			if wipe {
				require.NoError(t, r.Close())
			} else {
				require.NoError(t, unix.MunmapPtr(r.Base(), r.Size()))
			}
			p, err := unix.MmapPtr(kept, 0, nil, 64<<10, unix.PROT_READ, unix.MAP_SHARED)
			require.NoError(t, err)
			defer unix.MunmapPtr(p, 64<<10)
			again := unsafe.Slice((*byte)(p), 2*pageSize)
			assert.Equal(t, !wipe, bytes.Contains(again, []byte("top secret")))
			assert.Equal(t, !wipe, bytes.Contains(again, []byte("more secret")))
			if wipe {
				assert.Equal(t, make([]byte, 2*pageSize), again)
			}
		})
	}
}
