package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"io"

	"github.com/secretheap/secretheap/alloc"
)

// ECDSA is an ECDSA private key (P-224, P-256, P-384, P-521) in secret
// memory. Sign may be called from many goroutines at once; Destroy only
// once none is signing.
type ECDSA struct {
	curve elliptic.Curve
	d     *alloc.Secret    // the scalar, big-endian, the curve's order size
	pub   *ecdsa.PublicKey // not secret
}

// NewECDSA makes a signer from the private scalar d in the fixed-length
// big-endian form ecdsa.PrivateKey.Bytes gives and ecdsa.ParseRawPrivateKey
// takes. It keeps a copy of d in a new Secret on the default heap; d stays
// the caller's.
func NewECDSA(curve elliptic.Curve, d *alloc.Secret) (*ECDSA, error) {
	own, err := alloc.NewSecret(d.Len())
	if err != nil {
		return nil, err
	}
	var pubBytes []byte
	d.Do(func(key []byte) {
		var priv *ecdsa.PrivateKey
		if priv, err = ecdsa.ParseRawPrivateKey(curve, key); err != nil {
			return
		}
		pubBytes, err = priv.PublicKey.Bytes()
		copy(own.Bytes(), key)
	})
	var pub *ecdsa.PublicKey
	if err == nil {
		pub, err = ecdsa.ParseUncompressedPublicKey(curve, pubBytes)
	}
	if err != nil {
		own.Destroy()
		return nil, fmt.Errorf("signer: %w", err)
	}
	return &ECDSA{curve: curve, d: own, pub: pub}, nil
}

// Public returns the *ecdsa.PublicKey.
func (k *ECDSA) Public() crypto.PublicKey { return k.pub }

// Sign signs digest as ecdsa.PrivateKey.Sign does (ASN.1 signature). Inside
// alloc.Secret.Do it parses the scalar into an ecdsa.PrivateKey (Go heap:
// the scalar as a big.Int and as the FIPS module's key, in the weak-pointer
// cache keyed by that PrivateKey) and signs with it.
func (k *ECDSA) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	// The signature goes into memory allocated outside Do (it is not
	// secret): an ASN.1 signature is at most 2×(66+3)+3 bytes (P-521).
	sig := make([]byte, 0, 141)
	var err error
	k.d.Do(func(key []byte) {
		if len(key) == 0 {
			err = errDestroyed
			return
		}
		var priv *ecdsa.PrivateKey
		if priv, err = ecdsa.ParseRawPrivateKey(k.curve, key); err != nil {
			return
		}
		var s []byte
		if s, err = priv.Sign(rand, digest, opts); err == nil {
			sig = append(sig, s...)
		}
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// Destroy wipes and frees the key. Sign then fails.
func (k *ECDSA) Destroy() { k.d.Destroy() }

// String describes the signer by its curve; the private key is never
// printed (value receiver, like alloc.Secret's redacting methods).
func (k ECDSA) String() string {
	return fmt.Sprintf("signer.ECDSA(%s)", k.curve.Params().Name)
}
