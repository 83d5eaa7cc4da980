package verify

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNewKeyNeedles: the needles of a fresh key are where they must be (the
// PEM needle in the key file, the big-endian numbers in its DER) and not in
// the certificate, so a hit means the private key and nothing public.
func TestNewKeyNeedles(t *testing.T) {
	for _, alg := range []string{"ec-p256", "rsa-2048"} {
		t.Run(alg, func(t *testing.T) {
			km, err := NewKey(t.TempDir(), alg)
			require.NoError(t, err)
			keyPEM, err := os.ReadFile(km.KeyPath)
			require.NoError(t, err)
			certPEM, err := os.ReadFile(km.CertPath)
			require.NoError(t, err)
			blk, _ := pem.Decode(keyPEM)
			require.NotNil(t, blk)
			_, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
			require.NoError(t, err)
			cblk, _ := pem.Decode(certPEM)
			require.NotNil(t, cblk)

			kinds := map[Kind]int{}
			for _, n := range km.Needles {
				kinds[n.Kind]++
				assert.GreaterOrEqual(t, len(n.Bytes), 16, n.Name)
				assert.False(t, bytes.Contains(certPEM, n.Bytes), "%s in the certificate PEM", n.Name)
				assert.False(t, bytes.Contains(cblk.Bytes, n.Bytes), "%s in the certificate DER", n.Name)
				switch n.Kind {
				case KindPEM:
					assert.True(t, bytes.Contains(keyPEM, n.Bytes), "PEM needle not in the key file")
				case KindKeyBE:
					assert.True(t, bytes.Contains(blk.Bytes, n.Bytes), "%s not in the key's DER", n.Name)
				case KindKeyLE, KindPrimeLE:
					assert.False(t, bytes.Contains(blk.Bytes, n.Bytes), "%s little-endian in the DER", n.Name)
				}
			}
			assert.Equal(t, 1, kinds[KindPEM])
			if alg == "rsa-2048" {
				assert.Equal(t, 6, kinds[KindKeyBE])
				assert.Equal(t, 2, kinds[KindPrimeLE])
			} else {
				assert.Equal(t, 1, kinds[KindKeyBE])
				assert.Equal(t, 1, kinds[KindKeyLE])
			}
		})
	}
}

// TestSearch: a whole copy, a copy whose head was overwritten (a freed libc
// block), and no copy at all.
func TestSearch(t *testing.T) {
	secret := make([]byte, 64)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	n := Needle{Name: "x", Kind: KindTLS, Bytes: secret}
	clobbered := append(make([]byte, 16), secret[16:]...)
	for _, tc := range []struct {
		name  string
		data  []byte
		match string
	}{
		{"full", append(bytes.Repeat([]byte{1}, 100), secret...), "full"},
		{"head-clobbered", append(bytes.Repeat([]byte{1}, 100), clobbered...), "tail"},
		{"absent", bytes.Repeat([]byte{1}, 4096), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := &Image{Segments: []Segment{{Mapping: Mapping{Name: "[heap]"}, Addr: 0x1000, Data: tc.data}}}
			hits := im.Search([]Needle{n})
			if tc.match == "" {
				assert.Empty(t, hits)
				return
			}
			require.Len(t, hits, 1, "one hit per needle and mapping")
			assert.Equal(t, tc.match, hits[0].Match)
			assert.Equal(t, "[heap]", hits[0].Mapping)
		})
	}
}

// TestClaims: the coverage claim fails a run only for claimed kinds outside
// the mappings the library cannot reach, and never for an unprotected run.
func TestClaims(t *testing.T) {
	hit := func(k Kind, mapping string) Hit { return Hit{Needle: Needle{Kind: k}, Mapping: mapping} }
	assert.True(t, claimBroken(ModeAll, false, hit(KindTLS, "[heap]")))
	assert.True(t, claimBroken(ModeAll, false, hit(KindKeyLE, "anon")))
	assert.False(t, claimBroken(ModeAll, false, hit(KindTLS, "[stack]")), "stack copies are named, not claimed")
	assert.False(t, claimBroken(ModeAll, false, hit(KindPEM, "[heap]")), "stdio buffer: not claimed")
	assert.False(t, claimBroken(ModeSecure, false, hit(KindTLS, "[heap]")))
	assert.True(t, claimBroken(ModeSecure, false, hit(KindKeyLE, "[heap]")))
	assert.False(t, claimBroken(ModePlain, false, hit(KindKeyLE, "[heap]")))
	assert.True(t, claimBroken(ModeSecret, false, hit(KindGo, "anon")))
	assert.False(t, claimBroken(ModeLocked, false, hit(KindKeyLE, "anon")), "locked: live reads not claimed")
	assert.True(t, claimBroken(ModeLocked, true, hit(KindKeyLE, "anon")), "locked: dumps claimed")
}

// TestKeylogNeedles parses an NSS key log.
func TestKeylogNeedles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keylog")
	require.NoError(t, os.WriteFile(p, []byte("# comment\n"+
		"CLIENT_TRAFFIC_SECRET_0 00112233 4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60\n"), 0o600))
	ns, err := KeylogNeedles(p)
	require.NoError(t, err)
	require.Len(t, ns, 1)
	assert.Equal(t, "CLIENT_TRAFFIC_SECRET_0", ns[0].Name)
	assert.Equal(t, KindTLS, ns[0].Kind)
	assert.Len(t, ns[0].Bytes, 32)
}
