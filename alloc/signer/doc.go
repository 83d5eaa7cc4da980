// Package signer signs with private keys kept in secret memory, as a
// crypto.Signer: a tls.Certificate's PrivateKey, x509.CreateCertificate's
// signer, golang.org/x/crypto/ssh.NewSignerFromSigner.
//
// NewEd25519 takes a seed, NewECDSA a scalar, FromPEM a PEM key file
// (PKCS#8 or SEC 1) read with alloc.ReadFile. The long-lived key lives only
// in an alloc.Secret (memfd_secret memory: out of the kernel's direct map,
// unreadable through /proc/PID/mem, process_vm_readv and ptrace, absent
// from core dumps). Each Sign rebuilds
// the standard library's key from it inside alloc.Secret.Do, so that
// everything the signature derives — the Go-heap copy of the key, the
// expanded Ed25519 scalar and nonce prefix, the ECDSA scalar as a big.Int
// and its nonce state — is erased after use when the program is built with
// GOEXPERIMENT=runtimesecret (alloc.Erasing), and is garbage that stays in
// freed Go memory until it is reused when it is not.
//
// Why not pass ed25519.PrivateKey(secret.Bytes()) to ed25519.Sign: since Go
// 1.24, crypto/ed25519 (and crypto/ecdsa) cache the expanded key in a map
// keyed by weak.Make(&priv[0]), and weak.Make of memory outside the Go heap
// is a fatal runtime error ("getWeakHandle on invalid pointer"): the
// process dies, it does not panic. Ed25519.Sign hands the standard library
// a 64-byte Go-heap copy made inside Do and wiped after use, so that cannot
// happen. The cache entry made for that copy (the expanded key: the seed,
// the scalar, the nonce prefix) stays reachable until a collection frees
// the copy and the cache's cleanup drops the entry; the next collection
// frees it (erasing it, with runtime/secret). Measured with the Go keys
// target of verify: after 1000 signatures and one collection all 1000
// entries are still live on the Go heap; after two, none is left.
//
// Cost per signature against the plain standard-library key (long-lived,
// expanded key cached; BenchmarkSignEd25519 and BenchmarkSignECDSAP256
// interleave both in one run): Ed25519 re-expands the key (one SHA-512)
// and makes a cache entry per signature, 0.98× in a plain build and 1.49×
// with runtime/secret; ECDSA re-derives the public point from the scalar
// (one scalar base multiplication) and allocates much (each allocation
// inside Do is tracked for erasure), 1.60× and 2.83×.
package signer
