package verify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// The modes of the Go keys target: where its keys live and how it uses them.
const (
	// ModeGoRecipe: keys in alloc.Secrets, used through the recipes, in a
	// build without GOEXPERIMENT=runtimesecret: Secret.Do just calls f.
	// Nothing is claimed: the table reports what remains.
	ModeGoRecipe Mode = "secret, recipes"
	// ModeGoErasing: the recipes in a build with GOEXPERIMENT=runtimesecret.
	// Claimed: no copy of the keys or of anything derived from them.
	ModeGoErasing Mode = "secret, recipes, runtimesecret"
)

// GoKeys is verify/cmd/gokeys: a Go program holding an HMAC-SHA256 key, an
// Ed25519 seed and an ECDSA P-256 scalar and using each a thousand times
// (see KeyWorkload). Its needles are the keys (go-secret) and what the
// crypto derives from them (go-derived): the HMAC pads and midstates, the
// Ed25519 expanded key, the ECDSA scalar as little-endian words. The
// suite runs the control and the recipes with and without runtime/secret;
// the naive use (KeysNaive) runs in TestGoKeysOutsideScan only, to keep
// the suite within its time bound.
type GoKeys struct{}

// Name implements Target.
func (GoKeys) Name() string { return "Go keys" }

// Modes implements Target.
func (GoKeys) Modes() []Mode { return []Mode{ModePlain, ModeGoRecipe, ModeGoErasing} }

// Start implements Target.
func (GoKeys) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	bin, keys := env.GoKeys, KeysRecipe
	switch mode {
	case ModePlain:
		keys = KeysPlain
	case ModeGoErasing:
		bin = env.GoKeysErasing
	}
	if bin == "" {
		return nil, ErrSkipped{"gokeys not built"}
	}
	return StartKeys(env.WorkDir, keys, mode == ModeGoErasing, func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, bin, args...)
	})
}

var keysReadyRe = regexp.MustCompile(`^ready erasing=(true|false)`)

// StartKeys writes a fresh HMAC key, Ed25519 seed and ECDSA scalar into a new directory
// under workDir, starts the Go keys program that command makes (with the
// arguments of verify/cmd/gokeys appended) in keys mode (KeysPlain,
// KeysNaive, KeysRecipe), waits until it used them and reports ready, and
// checks that its build erases (alloc.Erasing) exactly when erasing.
func StartKeys(workDir, keys string, erasing bool, command func(args ...string) *exec.Cmd) (*Running, error) {
	r := &Running{Count: true}
	var err error
	if r.Dir, err = os.MkdirTemp(workDir, "gokeys-*"); err != nil {
		return nil, err
	}
	hmacKey, seed := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(hmacKey)
	_, _ = rand.Read(seed)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	d, err := ec.Bytes()
	if err != nil {
		return nil, err
	}
	files := KeyFiles{HMAC: filepath.Join(r.Dir, "hmac.key"), Ed25519: filepath.Join(r.Dir, "ed25519.seed"),
		ECDSA: filepath.Join(r.Dir, "ecdsa.key")}
	for path, b := range map[string][]byte{files.HMAC: hmacKey, files.Ed25519: seed, files.ECDSA: d} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	r.Needles = append(HMACNeedles(hmacKey), Ed25519Needles(seed)...)
	r.Needles = append(r.Needles, ECDSANeedles(d)...)
	cmd := command("-mode", keys, "-hmac-key", files.HMAC, "-seed", files.Ed25519, "-ecdsa", files.ECDSA)
	cmd.Dir = r.Dir
	// GOTRACEBACK=crash: SIGABRT makes the runtime dump core (the core
	// attack), as for the Go program target.
	cmd.Env = append(cmd.Environ(), "GOTRACEBACK=crash", "SECRETHEAP_BACKEND=secret")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &lockedText{}
	cmd.Stderr = stderr
	p, err := r.startProc(cmd, "main")
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, *p)
	r.stop = append(r.stop, func() { stdin.Close() })
	got, err := newLineWatcher(out).waitFor(keysReadyRe, 60*time.Second)
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("gokeys: %w; stderr: %s", err, lastLines([]byte(stderr.String()), 3))
	}
	if got != fmt.Sprint(erasing) {
		r.Stop()
		return nil, fmt.Errorf("gokeys: the program says erasing=%s, want %v (built with GOEXPERIMENT=runtimesecret?)", got, erasing)
	}
	r.Notes = append(r.Notes, fmt.Sprintf("gokeys -mode %s, erasing=%s", keys, got))
	return r, nil
}

// HMACNeedles are an HMAC-SHA256 key (up to 64 bytes) and what hmac.New
// derives from it: the pads (key XOR 0x36, key XOR 0x5c; their key-length
// head, the rest is the constant), and the SHA-256 states after the padded
// key block — the midstates, which forge MACs as well as the key does —
// big-endian as crypto/hmac keeps them (marshalled) and as the digest's
// uint32 words hold them on a little-endian machine.
func HMACNeedles(key []byte) []Needle {
	out := []Needle{{Name: "hmac.key", Kind: KindGo, Bytes: bytes.Clone(key)}}
	for _, pad := range []struct {
		name string
		b    byte
	}{{"inner", 0x36}, {"outer", 0x5c}} {
		block := bytes.Repeat([]byte{pad.b}, sha256.BlockSize)
		for i, c := range key {
			block[i] ^= c
		}
		h := sha256.New()
		h.Write(block)
		st, err := h.(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
		if err != nil {
			panic(err) // crypto/sha256 always marshals
		}
		be := st[4 : 4+sha256.Size] // after the 4-byte magic "sha\x03"
		out = append(out,
			Needle{Name: "hmac." + pad.name + "-pad", Kind: KindGoDerived, Bytes: block[:len(key)]},
			Needle{Name: "hmac." + pad.name + "-midstate-be", Kind: KindGoDerived, Bytes: bytes.Clone(be)},
			Needle{Name: "hmac." + pad.name + "-midstate-le", Kind: KindGoDerived, Bytes: swap32(be)})
	}
	return out
}

// swap32 reverses the bytes of each 4-byte word.
func swap32(b []byte) []byte {
	out := make([]byte, len(b))
	for i := 0; i+4 <= len(b); i += 4 {
		out[i], out[i+1], out[i+2], out[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return out
}

// ed25519Order is the order l of the Ed25519 base point.
var ed25519Order, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// Ed25519Needles are an Ed25519 seed and the expanded key crypto/ed25519
// derives from it: SHA-512(seed) (whose first half, clamped, is the secret
// scalar and whose second half is the nonce prefix), the prefix alone, the
// clamped scalar, and the scalar as the FIPS module's edwards25519.Scalar
// holds it (reduced mod l, in the Montgomery domain: s·2^256 mod l, four
// little-endian 64-bit limbs).
func Ed25519Needles(seed []byte) []Needle {
	h := sha512.Sum512(seed)
	clamped := bytes.Clone(h[:32])
	clamped[0] &= 248
	clamped[31] &= 63
	clamped[31] |= 64
	s := new(big.Int).SetBytes(reversed(clamped))
	s.Lsh(s, 256).Mod(s, ed25519Order)
	mont := reversed(s.FillBytes(make([]byte, 32)))
	return []Needle{
		{Name: "ed25519.seed", Kind: KindGo, Bytes: bytes.Clone(seed)},
		{Name: "ed25519.sha512(seed)", Kind: KindGoDerived, Bytes: h[:]},
		{Name: "ed25519.prefix", Kind: KindGoDerived, Bytes: bytes.Clone(h[32:])},
		{Name: "ed25519.scalar", Kind: KindGoDerived, Bytes: clamped},
		{Name: "ed25519.scalar-montgomery", Kind: KindGoDerived, Bytes: mont},
	}
}

// ECDSANeedles are an ECDSA scalar as crypto/ecdsa's FIPS key holds it
// (big-endian bytes) and as big.Int and bigmod hold it (little-endian
// 64-bit words: the byte-reversed value, for a scalar whose length is a
// multiple of 8).
func ECDSANeedles(d []byte) []Needle {
	return []Needle{
		{Name: "ecdsa.d", Kind: KindGo, Bytes: bytes.Clone(d)},
		{Name: "ecdsa.d-le", Kind: KindGoDerived, Bytes: reversed(d)},
	}
}

// Copies counts one needle's occurrences in one image: whole, and where
// only its head or tail fragment is (a copy that lost its other half).
type Copies struct {
	Needle  string
	Whole   int
	Partial int
	Where   []string // mapping labels of every occurrence, sorted, unique
}

// CountCopies counts every needle's occurrences in the image.
func CountCopies(im *Image, needles []Needle) []Copies {
	var out []Copies
	for _, n := range needles {
		c := Copies{Needle: n.Name}
		where := map[string]bool{}
		frags := n.fragments()
		for _, seg := range im.Segments {
			whole := indexAll(seg.Data, n.Bytes)
			c.Whole += len(whole)
			if len(whole) > 0 {
				where[seg.Mapping.Label()] = true
			}
			// A fragment inside a whole copy is that copy, not another.
			for _, f := range frags[1:] {
				for _, i := range indexAll(seg.Data, f.b) {
					inside := false
					for _, w := range whole {
						if i >= w && i < w+len(n.Bytes) {
							inside = true
						}
					}
					if !inside {
						c.Partial++
						where[seg.Mapping.Label()] = true
					}
				}
			}
		}
		for w := range where {
			c.Where = append(c.Where, shortMapping(w))
		}
		sort.Strings(c.Where)
		out = append(out, c)
	}
	return out
}

func indexAll(data, needle []byte) []int {
	var out []int
	for off := 0; ; {
		i := bytes.Index(data[off:], needle)
		if i < 0 {
			return out
		}
		out = append(out, off+i)
		off += i + 1
	}
}

// CopiesTable renders, for every run that counted copies (the Go keys
// target), the copies of each needle the first live attack found: "whole
// (+partial)" and where.
func (s *Suite) CopiesTable() string {
	var rows [][]string
	var modes []Mode
	byMode := map[Mode][]Copies{}
	for _, r := range s.Results {
		if r.Copies == nil || r.Dump || byMode[r.Mode] != nil {
			continue
		}
		modes = append(modes, r.Mode)
		byMode[r.Mode] = r.Copies
	}
	if len(modes) == 0 {
		return ""
	}
	head := []string{"needle"}
	for _, m := range modes {
		head = append(head, string(m))
	}
	rows = append(rows, head)
	for i, c := range byMode[modes[0]] {
		row := []string{c.Needle}
		for _, m := range modes {
			row = append(row, byMode[m][i].String())
		}
		rows = append(rows, row)
	}
	return renderTable(rows)
}

// String formats the count: "0", "3 (anon)", "2+1 partial (anon, [heap])".
func (c Copies) String() string {
	if c.Whole == 0 && c.Partial == 0 {
		return "0"
	}
	s := fmt.Sprint(c.Whole)
	if c.Partial > 0 {
		s += fmt.Sprintf("+%d partial", c.Partial)
	}
	return s + " (" + strings.Join(slices.Compact(c.Where), ", ") + ")"
}
