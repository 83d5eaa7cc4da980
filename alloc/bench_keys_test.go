package alloc_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/testutil"
)

// The recipes of example_keys_test.go against the plain standard-library
// use with the key in a Go []byte, interleaved in the same run
// (testutil.BenchRatio): the baseline is what a program without secretheap
// writes (hmac.New per message; a long-lived AEAD or ecdh.PrivateKey), the
// operation the recipe (key in a Secret, everything built inside Secret.Do
// per operation). The reported ratio is the cost; built with
// GOEXPERIMENT=runtimesecret it includes the erasure (stack, registers,
// and the runtime's tracking of every allocation made inside Do).

// benchMsg is the message each operation MACs or seals.
var benchMsg = make([]byte, 256)

// benchKey returns n random bytes as a []byte and as a Secret.
func benchKey(b *testing.B, n int) ([]byte, *alloc.Secret) {
	b.Helper()
	k := make([]byte, n)
	_, _ = rand.Read(k)
	s, err := alloc.NewSecret(n)
	if err != nil {
		b.Fatal(err)
	}
	copy(s.Bytes(), k)
	b.Cleanup(s.Destroy)
	return k, s
}

func BenchmarkRecipeHMAC(b *testing.B) {
	k, s := benchKey(b, 32)
	mac := make([]byte, 0, sha256.Size)
	testutil.BenchRatio(b, func() {
		h := hmac.New(sha256.New, k)
		h.Write(benchMsg)
		mac = h.Sum(mac[:0])
	}, func() {
		s.Do(func(key []byte) {
			h := hmac.New(sha256.New, key)
			h.Write(benchMsg)
			mac = h.Sum(mac[:0])
		})
	})
}

func BenchmarkRecipeHKDF(b *testing.B) {
	k, s := benchKey(b, 32)
	sub, err := alloc.NewSecret(32)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sub.Destroy)
	testutil.BenchRatio(b, func() {
		out, _ := hkdf.Key(sha256.New, k, nil, "session", 32)
		clear(out)
	}, func() {
		s.Do(func(key []byte) {
			out, _ := hkdf.Key(sha256.New, key, nil, "session", 32)
			copy(sub.Bytes(), out)
			clear(out)
		})
	})
}

func BenchmarkRecipeAESGCM(b *testing.B) {
	k, s := benchKey(b, 32)
	nonce := make([]byte, 12)
	dst := make([]byte, 0, len(benchMsg)+16)
	block, _ := aes.NewCipher(k)
	aead, _ := cipher.NewGCM(block)
	testutil.BenchRatio(b, func() {
		dst = aead.Seal(dst[:0], nonce, benchMsg, nil)
	}, func() {
		s.Do(func(key []byte) {
			block, _ := aes.NewCipher(key)
			aead, _ := cipher.NewGCM(block)
			dst = aead.Seal(dst[:0], nonce, benchMsg, nil)
		})
	})
}

func BenchmarkRecipeChaCha20Poly1305(b *testing.B) {
	k, s := benchKey(b, chacha20poly1305.KeySize)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	dst := make([]byte, 0, len(benchMsg)+16)
	aead, _ := chacha20poly1305.New(k)
	testutil.BenchRatio(b, func() {
		dst = aead.Seal(dst[:0], nonce, benchMsg, nil)
	}, func() {
		s.Do(func(key []byte) {
			aead, _ := chacha20poly1305.New(key)
			dst = aead.Seal(dst[:0], nonce, benchMsg, nil)
		})
	})
}

func BenchmarkRecipeX25519(b *testing.B) {
	k, s := benchKey(b, 32)
	peerPriv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	peer := peerPriv.PublicKey()
	shared, err := alloc.NewSecret(32)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(shared.Destroy)
	priv, _ := ecdh.X25519().NewPrivateKey(k)
	testutil.BenchRatio(b, func() {
		out, _ := priv.ECDH(peer)
		clear(out)
	}, func() {
		s.Do(func(key []byte) {
			priv, _ := ecdh.X25519().NewPrivateKey(key)
			out, _ := priv.ECDH(peer)
			copy(shared.Bytes(), out)
			clear(out)
		})
	})
}
