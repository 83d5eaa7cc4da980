package signer_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/alloc/signer"
)

// An Ed25519 key in secret memory backing a TLS certificate. The seed is
// read straight into secret memory (here from crypto/rand; from a file,
// alloc.ReadFile); the signer keeps its own copy, so the seed can go.
//
// Where the key lives: the signer's Secret (seed and public key, 64 B).
// What Go's crypto copies, per signature: a 64-byte Go-heap copy of the key
// (made inside Do, wiped after Sign), and the expanded key (scalar and
// nonce prefix) in crypto/ed25519's cache, keyed by that copy: it goes
// at the second garbage collection after Sign, and is erased then when
// alloc.Erasing.
func ExampleEd25519() {
	seed, err := alloc.Read(rand.Reader, ed25519.SeedSize)
	if err != nil {
		fmt.Println(err)
		return
	}
	key, err := signer.NewEd25519(seed)
	seed.Destroy()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer key.Destroy()

	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		fmt.Println(err)
		return
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	_ = cfg // tls.Listen("tcp", ":8443", cfg) …

	leaf, _ := x509.ParseCertificate(der)
	fmt.Println(leaf.SignatureAlgorithm, leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil)
	fmt.Println(key.Public().(ed25519.PublicKey).Equal(leaf.PublicKey))
	// Output:
	// Ed25519 true
	// true
}

// An ECDSA P-256 key in secret memory: its scalar, in the fixed-length
// big-endian form of ecdsa.PrivateKey.Bytes.
//
// Where the key lives: the signer's Secret (the 32-byte scalar). What Go's
// crypto copies, per signature: an ecdsa.PrivateKey parsed inside Do (the
// scalar as a big.Int and as the FIPS module's key, in crypto/ecdsa's
// cache keyed by that PrivateKey) and the nonce generator's state: garbage
// after Sign, except the cache entry, which goes at the second garbage
// collection; erased when freed if alloc.Erasing.
func ExampleECDSA() {
	d, _ := hex.DecodeString("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721") // RFC 6979, A.2.5
	scalar, err := alloc.Wrap(d)                                                                 // copies, wipes d
	if err != nil {
		fmt.Println(err)
		return
	}
	key, err := signer.NewECDSA(elliptic.P256(), scalar)
	scalar.Destroy()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer key.Destroy()

	digest := sha256.Sum256([]byte("sample"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		fmt.Println(err)
		return
	}
	pub := key.Public().(*ecdsa.PublicKey)
	q, _ := pub.Bytes()         // 0x04 || x || y
	fmt.Printf("%x\n", q[1:33]) // RFC 6979's Ux
	fmt.Println(ecdsa.VerifyASN1(pub, digest[:], sig))
	// Output:
	// 60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6
	// true
}

// A TLS server's key file (PKCS#8 or SEC 1 PEM) read straight into secret
// memory and turned into the certificate's signer. The PEM text, the DER
// and the parsed key exist on the Go heap only inside Secret.Do.
func ExampleFromPEM() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "key.pem")
	_, priv, _ := ed25519.GenerateKey(rand.Reader) // stands in for the server's key file
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	_ = os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)

	text, err := alloc.ReadFile(path) // read(2) straight into secret memory
	if err != nil {
		fmt.Println(err)
		return
	}
	key, err := signer.FromPEM(text)
	text.Destroy()
	if err != nil {
		fmt.Println(err)
		return
	}
	// cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	fmt.Printf("%T %v\n", key, priv.Public().(ed25519.PublicKey).Equal(key.Public()))
	// Output: *signer.Ed25519 true
}
