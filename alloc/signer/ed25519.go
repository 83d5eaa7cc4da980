package signer

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"

	"github.com/secretheap/secretheap/alloc"
)

// errDestroyed: Sign after Destroy.
var errDestroyed = errors.New("signer: key destroyed")

// Ed25519 is an Ed25519 private key in secret memory. Sign may be called
// from many goroutines at once (a TLS server's handshakes); Destroy only
// once none is signing.
type Ed25519 struct {
	priv *alloc.Secret     // seed || public key: ed25519.PrivateKey's 64-byte layout
	pub  ed25519.PublicKey // not secret
}

// NewEd25519 makes a signer from a 32-byte RFC 8032 seed (what
// ed25519.PrivateKey.Seed returns). It keeps a copy of the seed and the
// public key in a new Secret on the default heap; seed stays the caller's
// (Destroy it when it is no longer needed).
func NewEd25519(seed *alloc.Secret) (*Ed25519, error) {
	if seed.Len() != ed25519.SeedSize {
		return nil, fmt.Errorf("signer: Ed25519 seed is %d bytes, want %d", seed.Len(), ed25519.SeedSize)
	}
	priv, err := alloc.NewSecret(ed25519.PrivateKeySize)
	if err != nil {
		return nil, err
	}
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	seed.Do(func(s []byte) {
		// NewKeyFromSeed does not touch the weak-pointer cache: s
		// may be secret memory. Its result is a Go-heap copy, made
		// inside Do, wiped here.
		k := ed25519.NewKeyFromSeed(s)
		copy(priv.Bytes(), k)
		copy(pub, k[ed25519.SeedSize:])
		clear(k)
	})
	return &Ed25519{priv: priv, pub: pub}, nil
}

// Public returns the ed25519.PublicKey.
func (k *Ed25519) Public() crypto.PublicKey { return k.pub }

// Sign signs message as ed25519.PrivateKey.Sign does (opts selects Ed25519,
// Ed25519ph or Ed25519ctx; rand is ignored). Inside alloc.Secret.Do it
// copies the key to the Go heap, signs with the copy, and wipes it.
func (k *Ed25519) Sign(_ io.Reader, message []byte, opts crypto.SignerOpts) ([]byte, error) {
	// The signature goes into memory allocated outside Do: it is not
	// secret, and need not be tracked for erasure.
	sig := make([]byte, 0, ed25519.SignatureSize)
	var err error
	k.priv.Do(func(key []byte) {
		if len(key) != ed25519.PrivateKeySize {
			err = errDestroyed
			return
		}
		// The standard library caches the expanded key under
		// weak.Make(&priv[0]), fatal for memory outside the Go heap:
		// give it a Go-heap copy.
		cp := make(ed25519.PrivateKey, ed25519.PrivateKeySize)
		copy(cp, key)
		var s []byte
		s, err = cp.Sign(nil, message, opts)
		clear(cp)
		sig = append(sig, s...)
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// Destroy wipes and frees the key. Sign then fails.
func (k *Ed25519) Destroy() { k.priv.Destroy() }

// String describes the signer by its public key; the private key is never
// printed (value receiver, like alloc.Secret's redacting methods).
func (k Ed25519) String() string {
	return fmt.Sprintf("signer.Ed25519(public %x)", []byte(k.pub))
}
