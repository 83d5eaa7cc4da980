package verify

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"

	"github.com/secretheap/secretheap/internal/launch"
)

// Kind is the class of a secret; the coverage table is written per kind.
type Kind string

// The kinds of secret the suite looks for.
const (
	// KindKeyBE: a key's secret numbers (EC scalar, RSA d, p, q, dp, dq,
	// qinv) in big-endian order, as DER and PEM decoding hold them.
	KindKeyBE Kind = "key-be"
	// KindKeyLE: the EC scalar and RSA d, dp, dq, qinv as BIGNUM limbs hold
	// them on a 64-bit little-endian machine (the byte-reversed value).
	KindKeyLE Kind = "key-le"
	// KindPrimeLE: the RSA primes p and q as BIGNUM limbs. Kept apart from
	// key-le because OpenSSL copies them into Montgomery contexts that it
	// allocates with plain CRYPTO_malloc, not the secure heap.
	KindPrimeLE Kind = "prime-le"
	// KindPEM: the key-specific part of the PEM text (base64 of secret bytes).
	KindPEM Kind = "pem"
	// KindTLS: the TLS 1.3 handshake and traffic secrets of an open connection.
	KindTLS Kind = "tls"
	// KindGo: the raw bytes a Go program keeps in an alloc.Secret.
	KindGo Kind = "go-secret"
	// KindGoDerived: what Go's crypto derives from a key (HMAC pads and
	// midstates, the Ed25519 expanded key): see GoKeys.
	KindGoDerived Kind = "go-derived"
)

// Kinds lists every kind in table order.
var Kinds = []Kind{KindKeyBE, KindKeyLE, KindPrimeLE, KindPEM, KindTLS, KindGo, KindGoDerived}

// fragLen is the length of the head and tail fragments searched besides a
// whole needle. A freed libc block has its first 16 bytes overwritten by
// free-list pointers; a copy that lost its start is still a leak, and 16
// random bytes do not occur by chance (2^-128).
const fragLen = 16

// Needle is one byte string whose presence in a memory image is a leak.
type Needle struct {
	Name  string // e.g. "ec.d", "rsa.p", "CLIENT_TRAFFIC_SECRET_0"
	Kind  Kind
	Bytes []byte
}

// fragment is a part of a needle searched on its own.
type fragment struct {
	tag string // full, head or tail
	b   []byte
}

// fragments returns the whole needle and, when it is long enough, its head
// and tail fragments. PEM needles are text inside one line: no fragments.
func (n Needle) fragments() []fragment {
	out := []fragment{{"full", n.Bytes}}
	if len(n.Bytes) >= 2*fragLen && n.Kind != KindPEM {
		out = append(out, fragment{"head", n.Bytes[:fragLen]}, fragment{"tail", n.Bytes[len(n.Bytes)-fragLen:]})
	}
	return out
}

// number is one secret integer of a key, named as the needles report it.
type number struct {
	name string
	v    *big.Int
}

// KeyMaterial is a freshly made key pair written to disk, with the needles
// that identify its secret parts.
type KeyMaterial struct {
	Alg      string // "ec-p256" or "rsa-2048"
	KeyPath  string // PKCS#8 PEM private key
	CertPath string // self-signed certificate for CN=localhost
	Needles  []Needle
}

// NewKey makes a fresh key of the given algorithm ("ec-p256", "rsa-2048")
// in dir. A fresh key per run means nothing found can be left over from an
// earlier run or compiled into a binary.
func NewKey(dir, alg string) (*KeyMaterial, error) {
	var (
		priv any
		pub  any
		nums []number
	)
	switch alg {
	case "ec-p256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		priv, pub = k, &k.PublicKey
		d, err := k.Bytes() // fixed 32-byte big-endian scalar
		if err != nil {
			return nil, err
		}
		nums = append(nums, number{"ec.d", new(big.Int).SetBytes(d)})
	case "rsa-2048":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		priv, pub = k, &k.PublicKey
		k.Precompute()
		nums = append(nums,
			number{"rsa.d", k.D}, number{"rsa.p", k.Primes[0]}, number{"rsa.q", k.Primes[1]},
			number{"rsa.dp", k.Precomputed.Dp}, number{"rsa.dq", k.Precomputed.Dq},
			number{"rsa.qinv", k.Precomputed.Qinv})
	default:
		return nil, fmt.Errorf("verify: unknown key algorithm %q (want ec-p256 or rsa-2048)", alg)
	}
	kp, pemText, err := launch.WriteKeyPair(dir, alg, priv, pub, false)
	if err != nil {
		return nil, err
	}
	km := &KeyMaterial{Alg: alg, KeyPath: kp.Key, CertPath: kp.Cert}
	blk, _ := pem.Decode(pemText)
	der := blk.Bytes
	for _, x := range nums {
		be := x.v.Bytes()
		le := KindKeyLE
		if x.name == "rsa.p" || x.name == "rsa.q" {
			le = KindPrimeLE
		}
		km.Needles = append(km.Needles,
			Needle{Name: x.name, Kind: KindKeyBE, Bytes: be},
			Needle{Name: x.name, Kind: le, Bytes: reversed(be)})
	}
	// The PEM needle covers the base64 of the first (largest) secret number:
	// the DER header before it is the same for every key of the algorithm.
	line, err := pemSecretLine(pemText, der, nums[0].v.Bytes())
	if err != nil {
		return nil, err
	}
	km.Needles = append(km.Needles, Needle{Name: alg + ".pem", Kind: KindPEM, Bytes: line})
	return km, nil
}

func reversed(b []byte) []byte {
	r := make([]byte, len(b))
	for i := range b {
		r[len(b)-1-i] = b[i]
	}
	return r
}

// pemSecretLine returns the longest run of PEM characters, inside one line,
// that encodes only bytes of secret (the value's bytes inside der). Keeping
// to one line lets it match both the file text and a newline-free copy.
func pemSecretLine(pemText, der, secret []byte) ([]byte, error) {
	off := bytes.Index(der, secret)
	if off < 0 {
		return nil, fmt.Errorf("verify: secret not found in its own DER encoding")
	}
	// base64 char i encodes bits [6i, 6i+6): wholly inside the secret when
	// 6i >= 8*off and 6i+6 <= 8*(off+len).
	first := (8*off + 5) / 6
	last := (8*(off+len(secret)) - 6) / 6 // inclusive
	body := base64.StdEncoding.EncodeToString(der)
	// pem.EncodeToMemory breaks lines every 64 characters.
	best := []byte(nil)
	for ls := 0; ls < len(body); ls += 64 {
		le := min(ls+64, len(body))
		a, b := max(ls, first), min(le, last+1)
		if b-a > len(best) {
			best = []byte(body[a:b])
		}
	}
	if len(best) < 16 || !bytes.Contains(pemText, best) {
		return nil, fmt.Errorf("verify: no usable PEM line for the secret (%d chars)", len(best))
	}
	return best, nil
}

// KeylogNeedles reads an NSS key log (SSLKEYLOGFILE, s_client -keylogfile)
// and returns its TLS 1.3 secrets as needles.
func KeylogNeedles(path string) ([]Needle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Needle
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		secret, err := hex.DecodeString(fields[2])
		if err != nil {
			return nil, fmt.Errorf("verify: key log %s: %w", path, err)
		}
		out = append(out, Needle{Name: fields[0], Kind: KindTLS, Bytes: secret})
	}
	return out, sc.Err()
}
