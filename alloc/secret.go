package alloc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"unsafe"
)

// Secret holds key material in secret memory. Its bytes are never printed,
// logged or marshalled, whether the Secret is held by value or by pointer,
// alone or inside a struct, slice or map: every fmt verb, log/slog, and
// encoding/json and encoding/xml (through MarshalText) give
// "secretheap.Secret(32 bytes)"; encoding/gob refuses it with an error (see
// Redaction in the package docs).
//
// A Secret is not freed by the garbage collector: call Destroy (which wipes
// it) when done. A finalizer cannot do that safely — Bytes may still be in
// use through a slice the Secret does not know about. Use a Secret from one
// goroutine at a time, or synchronise: Destroy while another goroutine still
// reads Bytes is a use-after-free. Use it through a *Secret: a copy of the
// struct is a second handle on the same block (Destroy on both is a double
// free, which panics).
type Secret struct {
	h *Heap
	// p is the block's start (nil after Destroy, or for a zero-length
	// Secret), n the secret's length. Not a []byte on purpose: fmt and
	// the encoders walk a struct's fields by reflection when they cannot
	// call its methods (a Secret held by value in an unexported field),
	// and print a []byte's bytes but an unsafe.Pointer only as an address.
	p unsafe.Pointer
	n int
}

// secretOf makes the Secret for block b (len(b) bytes of it).
func secretOf(h *Heap, b []byte) *Secret {
	if len(b) == 0 {
		return &Secret{h: h}
	}
	return &Secret{h: h, p: unsafe.Pointer(unsafe.SliceData(b)), n: len(b)}
}

// NewSecret allocates a zeroed Secret of n bytes on the default heap.
// n == 0 gives an empty Secret that holds no memory.
func NewSecret(n int) (*Secret, error) {
	h, err := Default()
	if err != nil {
		return nil, err
	}
	return h.NewSecret(n)
}

// NewSecret allocates a zeroed Secret of n bytes on h.
func (h *Heap) NewSecret(n int) (*Secret, error) {
	if n == 0 {
		return &Secret{h: h}, nil
	}
	b, err := h.Alloc(n)
	if err != nil {
		return nil, err
	}
	return secretOf(h, b), nil
}

// Wrap copies b into a new Secret on the default heap and wipes b, also
// when it fails.
func Wrap(b []byte) (*Secret, error) {
	h, err := Default()
	if err != nil {
		clear(b)
		return nil, err
	}
	return h.Wrap(b)
}

// Wrap copies b into a new Secret on h and wipes b, also when it fails.
func (h *Heap) Wrap(b []byte) (*Secret, error) {
	defer clear(b)
	s, err := h.NewSecret(len(b))
	if err != nil {
		return nil, err
	}
	copy(s.Bytes(), b)
	return s, nil
}

// Read reads exactly n bytes from r straight into a new Secret on the
// default heap (see Heap.Read).
func Read(r io.Reader, n int) (*Secret, error) {
	h, err := Default()
	if err != nil {
		return nil, err
	}
	return h.Read(r, n)
}

// Read reads exactly n bytes from r into a new Secret on h. The bytes go
// from r.Read straight into secret memory, so no copy is made on the Go heap
// here — but r itself may buffer (bufio.Reader does): read from an *os.File
// or a net.Conn to keep the secret out of Go memory. On error (including a
// short read, io.ErrUnexpectedEOF) the partial secret is wiped and freed.
func (h *Heap) Read(r io.Reader, n int) (*Secret, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	s, err := h.NewSecret(n)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, s.Bytes()); err != nil {
		s.Destroy()
		return nil, err
	}
	return s, nil
}

// ReadFile reads a whole file into a new Secret on the default heap (see
// Heap.ReadFile).
func ReadFile(path string) (*Secret, error) {
	h, err := Default()
	if err != nil {
		return nil, err
	}
	return h.ReadFile(path)
}

// errFileChanged: the file grew or shrank while it was read.
var errFileChanged = errors.New("secretheap: file changed size while being read")

// ReadFile reads the file at path into a new Secret on h: the size comes
// from fstat, the bytes go from read(2) straight into secret memory (no
// copy on the Go heap). A file that changes size while it is read is
// rejected. Files that report no size (/proc, pipes) are read into secret
// memory that grows by doubling; each outgrown block is wiped and freed,
// and the block kept is zero past the bytes read. On any error everything
// read is wiped.
func (h *Heap) ReadFile(path string) (*Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() || size == 0 {
		return h.readAll(f, path)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrTooLarge, path, size)
	}
	s, err := h.NewSecret(int(size))
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f, s.Bytes()); err != nil {
		s.Destroy()
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s shrank below %d bytes", errFileChanged, path, size)
		}
		return nil, err
	}
	// One more byte means it grew. The probe byte lands in a Go-heap
	// variable only if the file grew, and is wiped.
	var probe [1]byte
	if n, _ := f.Read(probe[:]); n != 0 {
		probe[0] = 0
		s.Destroy()
		return nil, fmt.Errorf("%w: %s grew past %d bytes", errFileChanged, path, size)
	}
	return s, nil
}

// readAll reads r to EOF into secret memory that grows by doubling.
func (h *Heap) readAll(r io.Reader, name string) (*Secret, error) {
	buf, err := h.Alloc(512)
	if err != nil {
		return nil, err
	}
	n := 0
	for {
		if n == len(buf) {
			nb, err := h.Alloc(2 * len(buf))
			if err != nil {
				_ = h.Free(buf)
				return nil, err
			}
			copy(nb, buf)
			_ = h.Free(buf) // wipes the outgrown block
			buf = nb
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			_ = h.Free(buf)
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
	}
	if n == 0 {
		_ = h.Free(buf)
		return &Secret{h: h}, nil
	}
	// io.Reader may use all of p as scratch space, even past what it
	// returns: wipe the rest of the block, which stays ours until Destroy.
	clear(buf[n:])
	// Keep the block; Bytes shows only what was read. Free takes the
	// block start, so a shorter slice frees the whole block.
	return secretOf(h, buf[:n]), nil
}

// Bytes returns the secret's memory (nil after Destroy). Writes through it
// change the secret. Do not keep it past Destroy.
func (s *Secret) Bytes() []byte {
	if s.p == nil {
		return nil
	}
	return unsafe.Slice((*byte)(s.p), s.n)
}

// Len is the secret's length in bytes (0 after Destroy).
func (s *Secret) Len() int { return s.n }

// Destroy wipes the secret and frees its memory. It is idempotent. After the
// heap was closed it only forgets the memory (Close wiped it already).
func (s *Secret) Destroy() {
	if s == nil || s.p == nil {
		return
	}
	b := s.Bytes()
	s.p, s.n = nil, 0
	if err := s.h.Free(b); err != nil && !errors.Is(err, ErrClosed) {
		// Not reachable for a Secret built by this package: its block
		// came from s.h. Wipe anyway and say so.
		clear(b)
		panic(fmt.Sprintf("secretheap: Secret.Destroy: %v", err))
	}
}

// The redacting methods have value receivers, so that they are in the
// method set of Secret and of *Secret alike: fmt, log/slog and the encoders
// call them for a Secret held either way. (With pointer receivers, a Secret
// held by value was printed field by field, bytes included.) A nil *Secret
// prints as "<nil>" (fmt) and marshals as null (encoding/json).

// String describes the secret without its bytes: "secretheap.Secret(32 bytes)".
func (s Secret) String() string {
	return fmt.Sprintf("secretheap.Secret(%d bytes)", s.n)
}

// GoString describes the secret without its bytes (for %#v).
func (s Secret) GoString() string { return s.String() }

// Format prints String for every verb and flag, so that no fmt verb (%x,
// %s, %v, %+v, %q …) can print the bytes.
func (s Secret) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, s.String())
}

// LogValue gives log/slog the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText gives encoding/json (as a string) and encoding/xml the
// redacted form. There is no UnmarshalText: a Secret is never read back
// from its redacted form. (encoding/gob does not use MarshalText; it
// refuses a Secret, which has no exported fields.)
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
