package alloc_test

import (
	"bytes"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
)

// TestSecretDo: f gets the Secret's own memory (no copy), a panic in f
// comes out of Do, and Erasing says what this build does.
func TestSecretDo(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.Wrap(bytes.Clone(testKey))
	require.NoError(t, err)
	var got []byte
	s.Do(func(key []byte) {
		got = key
		assert.Equal(t, testKey, key)
		assert.Equal(t, wantErasing, insideSecretDo(), "f runs under runtime/secret.Do exactly when Erasing")
	})
	assert.Equal(t, unsafe.SliceData(s.Bytes()), unsafe.SliceData(got), "f sees the secret memory itself")
	assert.Equal(t, wantErasing, alloc.Erasing())
	assert.False(t, insideSecretDo(), "outside f")
	assert.PanicsWithValue(t, "boom", func() { s.Do(func([]byte) { panic("boom") }) })
	s.Destroy()
	s.Do(func(key []byte) { assert.Nil(t, key, "after Destroy") })
}

// TestDoErasesHeap: a Go-heap copy of the key made inside Do and dropped is
// erased once the garbage collector frees it, when Erasing. The memory is
// read back through /proc/self/mem (the way an attacker reads it; Go code
// must not touch freed memory). Without the experiment the test reports
// what it found: freed Go memory is not cleared until it is reused.
func TestDoErasesHeap(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.NewSecret(64 << 10)
	require.NoError(t, err)
	defer s.Destroy()
	for i := range s.Bytes() {
		s.Bytes()[i] = byte(i%251) + 1 // no zero byte
	}
	var addr uintptr
	s.Do(func(key []byte) {
		cp := bytes.Clone(key) // 64 KiB: a span of its own
		addr = uintptr(unsafe.Pointer(&cp[0]))
		runtime.KeepAlive(cp)
	})
	runtime.GC()
	runtime.GC()
	mem, err := os.Open("/proc/self/mem")
	require.NoError(t, err)
	defer mem.Close()
	got := make([]byte, s.Len())
	_, err = mem.ReadAt(got, int64(addr))
	require.NoError(t, err)
	same := 0
	for i := range got {
		if got[i] == s.Bytes()[i] {
			same++
		}
	}
	t.Logf("Erasing=%v: %d of %d bytes of the freed copy still hold the key", alloc.Erasing(), same, len(got))
	if alloc.Erasing() {
		assert.Zero(t, same, "the copy made inside Do was erased")
	}
}
