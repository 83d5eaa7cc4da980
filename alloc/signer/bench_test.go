package signer_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// Signing with the signers against the plain standard-library key (Go
// heap, long-lived, its expanded key cached), in the same run. The ratio
// secret/stdlib is the cost of keeping the key in secret memory and
// rebuilding the library's key per signature inside Secret.Do.

func BenchmarkSignEd25519(b *testing.B) {
	k, plain := newEd25519(b)
	msg := make([]byte, 256)
	b.Run("stdlib", func(b *testing.B) {
		for b.Loop() {
			_ = ed25519.Sign(plain, msg)
		}
	})
	b.Run("secret", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Sign(nil, msg, crypto.Hash(0)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSignECDSAP256(b *testing.B) {
	k, plain := newECDSA(b, elliptic.P256())
	digest := sha256.Sum256([]byte("message"))
	b.Run("stdlib", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, plain, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("secret", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
}
