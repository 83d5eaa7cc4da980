package alloc_test

// Recipes: using a key held in a Secret with the standard library's crypto
// (and golang.org/x/crypto's ChaCha20-Poly1305). Each derives everything
// from the key inside Secret.Do, so that what the crypto builds from it is
// erased after use when the program is built with
// GOEXPERIMENT=runtimesecret (see alloc.Erasing). The long-lived key stays
// in the Secret; results that are not secret (a MAC, a ciphertext) go to
// variables declared outside Do; results that are (a derived key, a shared
// secret) go into another Secret, copied there inside Do.
//
// The keys below are fixed so the outputs can be checked; a program reads
// them with alloc.ReadFile or alloc.Read(rand.Reader, n).

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/secretheap/secretheap/alloc"
)

// mustSecret wraps a fixed test key (a program would use alloc.ReadFile).
func mustSecret(hexKey string) *alloc.Secret {
	b, err := hex.DecodeString(hexKey)
	if err != nil {
		panic(err)
	}
	s, err := alloc.Wrap(b) // copies into secret memory, wipes b
	if err != nil {
		panic(err)
	}
	return s
}

// HMAC-SHA256 with a key in secret memory. hmac.New copies the key into
// its inner and outer pads (key XOR 0x36, key XOR 0x5c) and hashes them
// into two SHA-256 states — the midstates, which are as good as the key for
// forging MACs. Made inside Do, all of them are erased after use when
// Erasing; a long-lived hmac.Hash (Reset and reuse) would keep them on the
// Go heap for its life.
func ExampleSecret_Do() {
	key := mustSecret("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	defer key.Destroy()
	msg := []byte("GET /v1/items 1733300000")

	mac := make([]byte, 0, sha256.Size) // the result: not secret, allocated outside Do
	key.Do(func(k []byte) {
		h := hmac.New(sha256.New, k)
		h.Write(msg)
		mac = h.Sum(mac)
	})
	fmt.Printf("%x\n", mac) // as openssl dgst -sha256 -mac HMAC computes it
	// Output: f29f35e64b3f8d32f0523cc5f9297125ed4aba8ceb0cec599771fd77347f994b
}

// HKDF-SHA256 (crypto/hkdf): derive a subkey from a master key, both in
// secret memory. hkdf.Key returns the subkey in a new Go-heap slice: copy
// it into a Secret and wipe it, inside Do (so it is also erased by the
// runtime when Erasing). HMAC's pads and midstates as above.
func ExampleSecret_Do_hkdf() {
	master := mustSecret("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	defer master.Destroy()
	sub, err := alloc.NewSecret(42)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Destroy()

	salt, _ := hex.DecodeString("000102030405060708090a0b0c")
	info := string([]byte{0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9})
	master.Do(func(k []byte) {
		var out []byte
		if out, err = hkdf.Key(sha256.New, k, salt, info, sub.Len()); err == nil {
			copy(sub.Bytes(), out)
			clear(out)
		}
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sub)
	fmt.Printf("%x\n", sub.Bytes()[:16]) // RFC 5869 test case 1; never print a real key
	// Output:
	// secretheap.Secret(42 bytes)
	// 3cb25f25faacd57a90434f64d0362f2a
}

// AES-256-GCM. aes.NewCipher expands the key into round keys and
// cipher.NewGCM derives the GHASH key H and its table from it: Go heap,
// both, for as long as the AEAD lives. Building the AEAD inside Do per
// message costs a key schedule and a table each time (see the README for
// the figures) and leaves nothing once it is erased.
func ExampleSecret_Do_aesGCM() {
	key := mustSecret("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	defer key.Destroy()
	plaintext := []byte("attack at dawn")

	var sealed, opened []byte
	var err error
	key.Do(func(k []byte) {
		block, e := aes.NewCipher(k)
		if e != nil {
			err = e
			return
		}
		// NewGCMWithRandomNonce: a fresh random nonce, prepended.
		aead, e := cipher.NewGCMWithRandomNonce(block)
		if e != nil {
			err = e
			return
		}
		sealed = aead.Seal(nil, nil, plaintext, nil)
		opened, err = aead.Open(nil, nil, sealed, nil)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(sealed), string(opened))
	// Output: 42 attack at dawn
}

// ChaCha20-Poly1305 (golang.org/x/crypto). chacha20poly1305.New copies the
// key into its AEAD value; made inside Do, that copy is erased after use.
func ExampleSecret_Do_chaCha20Poly1305() {
	key := mustSecret("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
	defer key.Destroy()
	nonce := make([]byte, chacha20poly1305.NonceSize)
	_, _ = rand.Read(nonce) // never reuse a nonce with the same key
	plaintext := []byte("attack at dawn")

	var sealed, opened []byte
	var err error
	key.Do(func(k []byte) {
		aead, e := chacha20poly1305.New(k)
		if e != nil {
			err = e
			return
		}
		sealed = aead.Seal(nil, nonce, plaintext, nil)
		opened, err = aead.Open(nil, nonce, sealed, nil)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(sealed), string(opened))
	// Output: 30 attack at dawn
}

// X25519 (crypto/ecdh) with a static private key in secret memory and the
// shared secret put into another Secret. ecdh.X25519().NewPrivateKey
// copies the scalar into its PrivateKey and computes the public key (a
// second scalar multiplication: keep the public key elsewhere if you need
// it often); ECDH returns the shared secret in a new Go-heap slice. Both
// are made inside Do.
func ExampleSecret_Do_x25519() {
	// RFC 7748, section 6.1: Alice's private key, Bob's public key.
	alice := mustSecret("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	defer alice.Destroy()
	bobPub, _ := hex.DecodeString("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	peer, err := ecdh.X25519().NewPublicKey(bobPub)
	if err != nil {
		fmt.Println(err)
		return
	}
	shared, err := alloc.NewSecret(32)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shared.Destroy()

	alice.Do(func(k []byte) {
		priv, e := ecdh.X25519().NewPrivateKey(k)
		if e != nil {
			err = e
			return
		}
		s, e := priv.ECDH(peer)
		if e != nil {
			err = e
			return
		}
		copy(shared.Bytes(), s)
		clear(s)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%x\n", shared.Bytes()) // the RFC's shared secret; never print a real one
	// Output: 4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742
}
