package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/secretheap/secretheap/alloc"
)

// FromPEM makes a signer from a PEM private key in secret memory (read
// with alloc.ReadFile): "PRIVATE KEY" (PKCS#8) holding an Ed25519 or ECDSA
// key, or "EC PRIVATE KEY" (SEC 1). Decoding and parsing happen inside
// alloc.Secret.Do, so the DER, the parsed key and its big.Ints are Go-heap
// garbage erased after use when alloc.Erasing; the signer keeps the seed or
// scalar in a Secret of its own. pemKey stays the caller's. Other key types
// (RSA) are refused: this package has no RSA signer.
func FromPEM(pemKey *alloc.Secret) (crypto.Signer, error) {
	var (
		key   *alloc.Secret  // the seed or scalar, for the constructors
		curve elliptic.Curve // nil for Ed25519
		err   error
	)
	pemKey.Do(func(text []byte) {
		block, _ := pem.Decode(text)
		if block == nil {
			err = errors.New("signer: no PEM block in the key")
			return
		}
		defer clear(block.Bytes)
		var parsed any
		switch block.Type {
		case "PRIVATE KEY":
			parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			parsed, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			err = fmt.Errorf("signer: PEM block %q, want PRIVATE KEY or EC PRIVATE KEY", block.Type)
		}
		if err != nil {
			return
		}
		var raw []byte
		switch k := parsed.(type) {
		case ed25519.PrivateKey:
			raw = k.Seed()
			clear(k)
		case *ecdsa.PrivateKey:
			if raw, err = k.Bytes(); err != nil {
				return
			}
			curve = k.Curve // not k: nothing parsed inside Do outlives it
		default:
			err = fmt.Errorf("signer: %T keys are not supported (Ed25519 and ECDSA are)", parsed)
			return
		}
		// Wrap copies raw into secret memory and wipes it.
		key, err = alloc.Wrap(raw)
	})
	if err != nil {
		return nil, err
	}
	defer key.Destroy()
	if curve != nil {
		return NewECDSA(curve, key)
	}
	return NewEd25519(key)
}
