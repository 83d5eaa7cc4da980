package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/alloc/signer"
)

// How the Go keys target (verify/cmd/gokeys) holds and uses its keys.
const (
	// KeysPlain: keys read with os.ReadFile into Go []byte, used with the
	// standard library directly (the control): one hmac.Hash, Reset per
	// message; ed25519.NewKeyFromSeed and ecdsa.ParseRawPrivateKey once.
	KeysPlain = "plain"
	// KeysNaive: keys read into alloc.Secrets, used the obvious way:
	// hmac.New(sha256.New, key.Bytes()),
	// ed25519.NewKeyFromSeed(seed.Bytes()) and
	// ecdsa.ParseRawPrivateKey(P256, d.Bytes()) once, outside Secret.Do.
	KeysNaive = "naive"
	// KeysRecipe: keys in alloc.Secrets, used through the documented
	// recipes: HMAC inside Secret.Do (an hmac.Hash per batch of
	// macBatch messages, Reset between them), Ed25519 and ECDSA through
	// signer.Ed25519 and signer.ECDSA.
	KeysRecipe = "recipe"
)

// workloadGCs is how many garbage collections the workload runs before it
// reports ready. A dropped allocation made inside runtime/secret.Do is
// erased when the collector frees it; an expanded Ed25519 key in
// crypto/ed25519's cache is dropped by a cleanup that runs after the
// collection that frees the Go-heap copy it is keyed by, and freed by the
// next one. A long-running program's own collections do this; the target
// does it before the scan.
const workloadGCs = 4

// macBatch is how many messages the recipe MACs per Secret.Do, with one
// hmac.Hash Reset between them: Reset is when crypto/hmac keeps the
// midstates (marshalled, big-endian) instead of the pads.
const macBatch = 10

// KeyFiles are the files the Go keys target reads its keys from.
type KeyFiles struct {
	HMAC    string // 32-byte HMAC-SHA256 key
	Ed25519 string // 32-byte Ed25519 seed
	ECDSA   string // 32-byte P-256 scalar, big-endian
}

// KeyWorkload is the Go keys target: it reads an HMAC-SHA256 key, an
// Ed25519 seed and an ECDSA P-256 scalar from files, uses each n times as
// mode says (a MAC and two signatures of a distinct message each time),
// runs workloadGCs garbage collections, writes "ready
// erasing=<alloc.Erasing()>" to w and returns the keys' holders for the
// caller to keep alive (it holds them until the attack is over).
func KeyWorkload(w io.Writer, mode string, files KeyFiles, n int) (keep []any, err error) {
	var sum byte // folds every MAC and signature in, so none is optimised away
	switch mode {
	case KeysPlain:
		key, err := os.ReadFile(files.HMAC)
		if err != nil {
			return nil, err
		}
		seed, err := os.ReadFile(files.Ed25519)
		if err != nil {
			return nil, err
		}
		d, err := os.ReadFile(files.ECDSA)
		if err != nil {
			return nil, err
		}
		ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			return nil, err
		}
		priv := ed25519.NewKeyFromSeed(seed)
		h := hmac.New(sha256.New, key)
		for i := range n {
			msg := message(i)
			h.Reset()
			h.Write(msg)
			digest := sha256.Sum256(msg)
			sig, err := ecdsa.SignASN1(rand.Reader, ec, digest[:])
			if err != nil {
				return nil, err
			}
			sum ^= h.Sum(nil)[0] ^ ed25519.Sign(priv, msg)[0] ^ sig[0]
		}
		keep = []any{key, seed, priv, h, d, ec}
	case KeysNaive, KeysRecipe:
		key, err := alloc.ReadFile(files.HMAC)
		if err != nil {
			return nil, err
		}
		seed, err := alloc.ReadFile(files.Ed25519)
		if err != nil {
			return nil, err
		}
		if seed.Len() != ed25519.SeedSize {
			return nil, fmt.Errorf("%s: %d bytes, want an Ed25519 seed of %d", files.Ed25519, seed.Len(), ed25519.SeedSize)
		}
		d, err := alloc.ReadFile(files.ECDSA)
		if err != nil {
			return nil, err
		}
		var sign, signEC func(msg []byte) []byte
		if mode == KeysNaive {
			priv := ed25519.NewKeyFromSeed(seed.Bytes())
			sign = func(msg []byte) []byte { return ed25519.Sign(priv, msg) }
			ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.Bytes())
			if err != nil {
				return nil, err
			}
			signEC = func(msg []byte) []byte {
				digest := sha256.Sum256(msg)
				sig, err := ecdsa.SignASN1(rand.Reader, ec, digest[:])
				if err != nil {
					panic(err)
				}
				return sig
			}
			keep = append(keep, priv, ec)
		} else {
			k, err := signer.NewEd25519(seed)
			if err != nil {
				return nil, err
			}
			seed.Destroy() // the signer holds its own copy
			sign = func(msg []byte) []byte {
				sig, err := k.Sign(nil, msg, crypto.Hash(0))
				if err != nil {
					panic(err)
				}
				return sig
			}
			ek, err := signer.NewECDSA(elliptic.P256(), d)
			if err != nil {
				return nil, err
			}
			d.Destroy()
			signEC = func(msg []byte) []byte {
				digest := sha256.Sum256(msg)
				sig, err := ek.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil {
					panic(err)
				}
				return sig
			}
			keep = append(keep, k, ek)
		}
		macs := make([]byte, 0, n*sha256.Size) // the results, allocated outside Do
		if mode == KeysNaive {
			h := hmac.New(sha256.New, key.Bytes())
			for i := range n {
				h.Reset()
				h.Write(message(i))
				macs = h.Sum(macs)
			}
			keep = append(keep, h)
		} else {
			for i := 0; i < n; i += macBatch {
				key.Do(func(k []byte) {
					h := hmac.New(sha256.New, k)
					for j := i; j < min(i+macBatch, n); j++ {
						h.Reset()
						h.Write(message(j))
						macs = h.Sum(macs)
					}
				})
			}
		}
		for i := range n {
			sum ^= macs[i*sha256.Size] ^ sign(message(i))[0] ^ signEC(message(i))[0]
		}
		keep = append(keep, key, seed, d)
	default:
		return nil, fmt.Errorf("gokeys: mode %q: want %s, %s or %s", mode, KeysPlain, KeysNaive, KeysRecipe)
	}
	for range workloadGCs {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // let the cleanups of the collection run
	}
	_, err = fmt.Fprintf(w, "ready erasing=%v sum=%d\n", alloc.Erasing(), sum)
	return keep, err
}

// message is the i-th message the workload MACs and signs.
func message(i int) []byte { return []byte("message " + strconv.Itoa(i)) }
