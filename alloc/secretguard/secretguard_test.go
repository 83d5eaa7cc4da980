package secretguard_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/awnumar/memguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/alloc/secretguard"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

func newHeap(t *testing.T) *alloc.Heap {
	t.Helper()
	testutil.RequireSecretMem(t)
	h, err := alloc.New(alloc.Config{Policy: secretmem.PolicySecret})
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

var key = []byte("0123456789abcdef0123456789abcdef")

func secret(t *testing.T, h *alloc.Heap) *alloc.Secret {
	t.Helper()
	s, err := h.Wrap(bytes.Clone(key))
	require.NoError(t, err)
	return s
}

func TestEnclaveRoundTrip(t *testing.T) {
	h := newHeap(t)
	s := secret(t, h)
	e, err := secretguard.Seal(s)
	require.NoError(t, err)
	assert.Equal(t, key, s.Bytes(), "Seal leaves the Secret as it was")
	assert.Equal(t, len(key), e.Size())

	back, err := secretguard.FromEnclave(h, e)
	require.NoError(t, err)
	assert.Equal(t, key, back.Bytes())
	_, ok := h.Backend(back.Bytes())
	assert.True(t, ok, "the opened secret lives in the heap")
	back.Destroy()

	again, err := secretguard.FromEnclave(h, e)
	require.NoError(t, err, "the enclave may be opened again")
	assert.Equal(t, key, again.Bytes())
	again.Destroy()
	s.Destroy()
}

func TestLockedBufferRoundTrip(t *testing.T) {
	h := newHeap(t)
	s := secret(t, h)
	lb, err := secretguard.LockedBuffer(s)
	require.NoError(t, err)
	assert.Equal(t, key, lb.Bytes())
	assert.Equal(t, key, s.Bytes(), "the Secret keeps its bytes")

	back, err := secretguard.FromLockedBuffer(h, lb)
	require.NoError(t, err)
	assert.Equal(t, key, back.Bytes())
	assert.False(t, lb.IsAlive(), "FromLockedBuffer destroys (wipes) the buffer")
	back.Destroy()
	s.Destroy()

	t.Run("control: a buffer not handed over stays alive", func(t *testing.T) {
		lb := memguard.NewBufferFromBytes(bytes.Clone(key))
		defer lb.Destroy()
		assert.True(t, lb.IsAlive())
	})
}

func TestEmpty(t *testing.T) {
	h := newHeap(t)
	s, err := h.NewSecret(0)
	require.NoError(t, err)
	_, err = secretguard.Seal(s)
	assert.ErrorIs(t, err, secretguard.ErrEmpty)
	_, err = secretguard.LockedBuffer(s)
	assert.ErrorIs(t, err, secretguard.ErrEmpty)
	_, err = secretguard.FromEnclave(h, nil)
	assert.ErrorIs(t, err, secretguard.ErrEmpty)
}

// TestImportSideEffects: package alloc does not pull memguard in (whose init
// sets RLIMIT_CORE to 0); control: this package does.
func TestImportSideEffects(t *testing.T) {
	deps := func(pkg string) string {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Skipf("go list unavailable: %v: %s", err, out)
		}
		return string(out)
	}
	assert.False(t, strings.Contains(deps("github.com/secretheap/secretheap/alloc"), "github.com/awnumar/memguard"),
		"alloc must not import memguard")
	assert.True(t, strings.Contains(deps("github.com/secretheap/secretheap/alloc/secretguard"), "github.com/awnumar/memguard"),
		"control: secretguard does")
}
