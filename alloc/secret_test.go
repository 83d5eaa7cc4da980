package alloc_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// TestSecretRedacted: no fmt verb prints a Secret's bytes. Control: the same
// verbs print them for the plain slice.
func TestSecretRedacted(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.Wrap(bytes.Clone(testKey))
	require.NoError(t, err)
	defer s.Destroy()
	leaks := func(out string) bool {
		for _, pat := range []string{"0123456789abcdef", "3031323334", "30 31 32 33", "0x30, 0x31", "48 49 50"} {
			if strings.Contains(out, pat) {
				return true
			}
		}
		return strings.Contains(strings.ReplaceAll(out, " ", ""), "4849505152")
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x", "%d", "%10v", "%-50s"} {
		t.Run(verb, func(t *testing.T) {
			out := fmt.Sprintf(verb, s)
			assert.False(t, leaks(out), "%s printed %q", verb, out)
			assert.Contains(t, out, "secretheap.Secret(32 bytes)")
			if verb != "%d" {
				assert.True(t, leaks(fmt.Sprintf(verb, s.Bytes())), "control: %s prints a plain slice", verb)
			}
		})
	}
	assert.Equal(t, "secretheap.Secret(32 bytes)", s.String())
	assert.Equal(t, "secretheap.Secret(32 bytes)", s.GoString())
}

func TestWrap(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	src := bytes.Clone(testKey)
	s, err := h.Wrap(src)
	require.NoError(t, err)
	assert.Equal(t, testKey, s.Bytes())
	assert.True(t, isZero(src), "Wrap wipes its argument")
	_, ok := h.Backend(s.Bytes())
	assert.True(t, ok)
	_, ok = h.Backend(testKey)
	assert.False(t, ok, "control: the Go-heap key is not in the heap")
	s.Destroy()
	s.Destroy() // idempotent
	assert.Zero(t, s.Len())
	assert.Nil(t, s.Bytes())
	assert.Equal(t, "secretheap.Secret(0 bytes)", s.String())
	assert.Zero(t, h.Stats().LiveBlocks)
}

func TestNewSecret(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.NewSecret(0)
	require.NoError(t, err)
	assert.Zero(t, s.Len())
	s.Destroy()
	s, err = h.NewSecret(100)
	require.NoError(t, err)
	assert.Equal(t, 100, s.Len())
	assert.True(t, isZero(s.Bytes()))
	s.Destroy()
	_, err = h.NewSecret(-1)
	assert.ErrorIs(t, err, alloc.ErrTooLarge)
}

func TestRead(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.Read(bytes.NewReader(testKey), 16)
	require.NoError(t, err)
	assert.Equal(t, testKey[:16], s.Bytes())
	s.Destroy()

	_, err = h.Read(bytes.NewReader(testKey), 64)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "short input")
	assert.Zero(t, h.Stats().LiveBlocks, "the partial secret was freed")
	require.NoError(t, h.Check(), "and wiped")
}

func TestReadFile(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	dir := t.TempDir()
	t.Run("regular", func(t *testing.T) {
		p := filepath.Join(dir, "key")
		require.NoError(t, os.WriteFile(p, testKey, 0o600))
		s, err := h.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, testKey, s.Bytes())
		_, ok := h.Backend(s.Bytes())
		assert.True(t, ok)
		s.Destroy()
	})
	t.Run("empty", func(t *testing.T) {
		p := filepath.Join(dir, "empty")
		require.NoError(t, os.WriteFile(p, nil, 0o600))
		s, err := h.ReadFile(p)
		require.NoError(t, err)
		assert.Zero(t, s.Len())
	})
	t.Run("proc file without a size", func(t *testing.T) {
		want, err := os.ReadFile("/proc/self/status")
		require.NoError(t, err)
		s, err := h.ReadFile("/proc/self/status")
		require.NoError(t, err)
		defer s.Destroy()
		assert.Greater(t, s.Len(), 512, "grew past the first block")
		assert.Equal(t, string(want[:20]), string(s.Bytes()[:20]))
	})
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(dir, "fifo")
		require.NoError(t, syscall.Mkfifo(p, 0o600))
		payload := bytes.Repeat(testKey, 100) // 3200 B: three doublings
		go func() {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err == nil {
				_, _ = f.Write(payload)
				_ = f.Close()
			}
		}()
		s, err := h.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, payload, s.Bytes())
		s.Destroy()
		assert.Zero(t, h.Stats().LiveBlocks, "outgrown blocks were freed")
	})
	t.Run("missing", func(t *testing.T) {
		_, err := h.ReadFile(filepath.Join(dir, "nope"))
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	require.NoError(t, h.Check())
}
