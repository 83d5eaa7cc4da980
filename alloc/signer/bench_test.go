package signer_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/secretheap/secretheap/internal/testutil"
)

// Signing with the signers against the plain standard-library key (Go
// heap, long-lived, its expanded key cached), interleaved in the same run
// (testutil.BenchRatio). The ratio is the cost of keeping the key in secret
// memory and rebuilding the library's key per signature inside Secret.Do.

func BenchmarkSignEd25519(b *testing.B) {
	k, plain := newEd25519(b)
	msg := make([]byte, 256)
	testutil.BenchRatio(b, func() {
		_ = ed25519.Sign(plain, msg)
	}, func() {
		if _, err := k.Sign(nil, msg, crypto.Hash(0)); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkSignECDSAP256(b *testing.B) {
	k, plain := newECDSA(b, elliptic.P256())
	digest := sha256.Sum256([]byte("message"))
	testutil.BenchRatio(b, func() {
		if _, err := ecdsa.SignASN1(rand.Reader, plain, digest[:]); err != nil {
			b.Fatal(err)
		}
	}, func() {
		if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	})
}
