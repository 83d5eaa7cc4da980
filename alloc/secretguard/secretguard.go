// Package secretguard converts between alloc.Secret and memguard's Enclave
// and LockedBuffer (github.com/awnumar/memguard), in both directions, wiping
// every intermediate copy.
//
// It is a package of its own because importing memguard has a side effect:
// memguard/core's init sets RLIMIT_CORE to 0 (memcall.DisableCoreDumps),
// for the whole process. Package alloc promises no side effects on import,
// so only programs that ask for memguard interop get memguard's.
package secretguard

import (
	"errors"
	"fmt"

	"github.com/awnumar/memguard"

	"github.com/secretheap/secretheap/alloc"
)

// ErrEmpty: memguard has no empty Enclave or LockedBuffer.
var ErrEmpty = errors.New("secretguard: memguard cannot hold an empty secret")

// errNoBuffer: memguard.NewBuffer gives a destroyed, empty buffer when it
// cannot map or lock its memory, instead of an error.
var errNoBuffer = errors.New("secretguard: memguard could not allocate a LockedBuffer (mmap or mlock refused)")

func heapOr(h *alloc.Heap) (*alloc.Heap, error) {
	if h != nil {
		return h, nil
	}
	return alloc.Default()
}

// FromEnclave decrypts e into a new Secret on h (nil: the default heap). The
// plaintext exists only in a memguard LockedBuffer (locked, guarded memory),
// which is destroyed (wiped) before FromEnclave returns, and in the Secret.
// e is left as it was and may be opened again.
func FromEnclave(h *alloc.Heap, e *memguard.Enclave) (*alloc.Secret, error) {
	if e == nil {
		return nil, ErrEmpty
	}
	h, err := heapOr(h)
	if err != nil {
		return nil, err
	}
	lb, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("secretguard: opening the enclave: %w", err)
	}
	defer lb.Destroy()
	s, err := h.NewSecret(lb.Size())
	if err != nil {
		return nil, err
	}
	copy(s.Bytes(), lb.Bytes())
	return s, nil
}

// Seal encrypts a copy of s into a memguard Enclave; s keeps its bytes.
// memguard.NewEnclave wipes the buffer it encrypts, so the copy it gets is a
// memguard LockedBuffer of our making, and LockedBuffer.Seal destroys
// (wipes and unmaps) that buffer.
func Seal(s *alloc.Secret) (*memguard.Enclave, error) {
	lb, err := LockedBuffer(s)
	if err != nil {
		return nil, err
	}
	e := lb.Seal() // encrypts, then wipes and destroys lb
	if e == nil {
		return nil, errors.New("secretguard: memguard refused to seal the buffer")
	}
	return e, nil
}

// LockedBuffer copies s into a new, mutable memguard LockedBuffer; s keeps
// its bytes. The caller owns the buffer and must Destroy it.
func LockedBuffer(s *alloc.Secret) (*memguard.LockedBuffer, error) {
	if s == nil || s.Len() == 0 {
		return nil, ErrEmpty
	}
	lb := memguard.NewBuffer(s.Len())
	if lb.Size() != s.Len() {
		lb.Destroy()
		return nil, errNoBuffer
	}
	lb.Copy(s.Bytes())
	return lb, nil
}

// FromLockedBuffer copies lb into a new Secret on h (nil: the default heap)
// and destroys lb (memguard wipes it), as alloc.Wrap does with a []byte. An
// empty or destroyed buffer gives an empty Secret.
func FromLockedBuffer(h *alloc.Heap, lb *memguard.LockedBuffer) (*alloc.Secret, error) {
	if lb == nil {
		return nil, ErrEmpty
	}
	defer lb.Destroy()
	h, err := heapOr(h)
	if err != nil {
		return nil, err
	}
	s, err := h.NewSecret(lb.Size())
	if err != nil {
		return nil, err
	}
	copy(s.Bytes(), lb.Bytes())
	return s, nil
}
