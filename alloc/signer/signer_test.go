package signer_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/alloc/signer"
	"github.com/secretheap/secretheap/internal/testutil"
)

// secretOf copies b into a new Secret (and wipes b).
func secretOf(t testing.TB, b []byte) *alloc.Secret {
	t.Helper()
	s, err := alloc.Wrap(b)
	require.NoError(t, err)
	t.Cleanup(s.Destroy)
	return s
}

func newEd25519(t testing.TB) (*signer.Ed25519, ed25519.PrivateKey) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	plain := ed25519.NewKeyFromSeed(seed)
	k, err := signer.NewEd25519(secretOf(t, seed))
	require.NoError(t, err)
	t.Cleanup(k.Destroy)
	return k, plain
}

func newECDSA(t testing.TB, c elliptic.Curve) (*signer.ECDSA, *ecdsa.PrivateKey) {
	t.Helper()
	plain, err := ecdsa.GenerateKey(c, rand.Reader)
	require.NoError(t, err)
	d, err := plain.Bytes()
	require.NoError(t, err)
	k, err := signer.NewECDSA(c, secretOf(t, d))
	require.NoError(t, err)
	t.Cleanup(k.Destroy)
	return k, plain
}

// TestEd25519: the signer's signatures are the standard library's, for
// Ed25519, Ed25519ph and Ed25519ctx; a destroyed key and a bad seed fail.
func TestEd25519(t *testing.T) {
	k, plain := newEd25519(t)
	assert.Equal(t, plain.Public(), k.Public())
	msg := []byte("message")
	ph := sha512Sum(msg)
	for _, tc := range []struct {
		name string
		msg  []byte
		opts crypto.SignerOpts
	}{
		{"Ed25519", msg, crypto.Hash(0)},
		{"Ed25519ph", ph, &ed25519.Options{Hash: crypto.SHA512}},
		{"Ed25519ctx", msg, &ed25519.Options{Context: "ctx"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.Sign(nil, tc.msg, tc.opts)
			require.NoError(t, err)
			want, err := plain.Sign(nil, tc.msg, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, want, got, "Ed25519 is deterministic")
		})
	}
	_, err := k.Sign(nil, msg, crypto.SHA256)
	assert.Error(t, err, "the standard library's option check")
	k.Destroy()
	_, err = k.Sign(nil, msg, crypto.Hash(0))
	assert.ErrorContains(t, err, "destroyed")
	_, err = signer.NewEd25519(secretOf(t, make([]byte, 31)))
	assert.ErrorContains(t, err, "seed is 31 bytes, want 32")
}

func sha512Sum(b []byte) []byte {
	h := crypto.SHA512.New()
	h.Write(b)
	return h.Sum(nil)
}

// TestECDSA: signatures verify with the standard library's public key, on
// every curve; a bad scalar and a destroyed key fail.
func TestECDSA(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P224(), elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		t.Run(c.Params().Name, func(t *testing.T) {
			k, plain := newECDSA(t, c)
			assert.True(t, plain.PublicKey.Equal(k.Public()))
			digest := sha256.Sum256([]byte("message"))
			sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
			require.NoError(t, err)
			assert.True(t, ecdsa.VerifyASN1(&plain.PublicKey, digest[:], sig))
			k.Destroy()
			_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
			assert.ErrorContains(t, err, "destroyed")
		})
	}
	_, err := signer.NewECDSA(elliptic.P256(), secretOf(t, make([]byte, 32)))
	assert.Error(t, err, "the zero scalar")
	_, err = signer.NewECDSA(elliptic.P256(), secretOf(t, make([]byte, 31)))
	assert.Error(t, err, "wrong length")
}

// TestTLSHandshake: each signer backs a tls.Certificate (self-signed with
// the signer itself through x509.CreateCertificate) and a TLS 1.3 and 1.2
// handshake over a net.Pipe succeeds, with the client verifying the chain.
func TestTLSHandshake(t *testing.T) {
	ed, _ := newEd25519(t)
	ec, _ := newECDSA(t, elliptic.P256())
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"Ed25519", ed}, {"ECDSA P-256", ec}} {
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			t.Run(fmt.Sprintf("%s/%s", tc.name, tls.VersionName(v)), func(t *testing.T) {
				cert := selfSigned(t, tc.key)
				state := handshake(t, cert, v)
				assert.Equal(t, v, state.Version)
				assert.Equal(t, cert.Certificate[0], state.PeerCertificates[0].Raw)
			})
		}
	}
}

// selfSigned makes a certificate for localhost signed by key.
func selfSigned(t testing.TB, key crypto.Signer) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// handshake runs a TLS handshake of version v between a server holding cert
// and a client that trusts it, over a net.Pipe, and returns the client's view.
func handshake(t testing.TB, cert tls.Certificate, v uint16) tls.ConnectionState {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	server := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: v, MaxVersion: v})
	client := tls.Client(c2, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: v, MaxVersion: v})
	errc := make(chan error, 1)
	go func() {
		err := server.Handshake()
		if err == nil {
			// Echo one line so the client knows the server finished.
			_, err = io.Copy(server, io.LimitReader(server, 5))
		}
		errc <- err
	}()
	require.NoError(t, client.Handshake())
	_, err = client.Write([]byte("hello"))
	require.NoError(t, err)
	got := make([]byte, 5)
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	require.NoError(t, <-errc)
	return client.ConnectionState()
}

// TestEd25519SecretMemoryCrash is why the signer exists: the obvious code,
// ed25519.Sign with the key's bytes in secret memory, kills the process
// (crypto/ed25519 caches under weak.Make(&priv[0]), fatal outside the Go
// heap). Run in a child; the signer then signs with the same key.
func TestEd25519SecretMemoryCrash(t *testing.T) {
	testutil.RequireSecretMem(t)
	for _, how := range []string{"ed25519.Sign", "signer"} {
		t.Run(how, func(t *testing.T) {
			if testutil.InChild(t) {
				seed := make([]byte, ed25519.SeedSize)
				_, _ = rand.Read(seed)
				priv, err := alloc.Wrap(ed25519.NewKeyFromSeed(seed))
				require.NoError(t, err)
				if how == "signer" {
					k, err := signer.NewEd25519(secretOf(t, seed))
					require.NoError(t, err)
					_, err = k.Sign(nil, []byte("m"), crypto.Hash(0))
					require.NoError(t, err)
				} else {
					_ = ed25519.Sign(ed25519.PrivateKey(priv.Bytes()), []byte("m"))
				}
				testutil.Report("signed", true)
				return
			}
			res := testutil.RunChild(t, testutil.ChildOptions{})
			if how == "signer" {
				require.True(t, res.Clean(), res.Output)
				return
			}
			assert.False(t, res.Clean(), "ed25519.Sign on secret memory survived")
			assert.Contains(t, res.Output, "getWeakHandle on invalid pointer")
			var signed bool
			assert.False(t, res.Report("signed", &signed), "it never returned")
		})
	}
}

// TestSignerRedacted: no fmt verb, logger or encoder shows a signer's
// private key, by value or by pointer.
func TestSignerRedacted(t *testing.T) {
	ed, edPlain := newEd25519(t)
	ec, ecPlain := newECDSA(t, elliptic.P256())
	d, err := ecPlain.Bytes()
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		v      []any
		secret [][]byte
	}{
		{"Ed25519", []any{ed, *ed}, [][]byte{edPlain.Seed()}},
		{"ECDSA", []any{ec, *ec}, [][]byte{d}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.v {
				var outs []string
				for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
					outs = append(outs, fmt.Sprintf(verb, v))
				}
				j, _ := json.Marshal(v)
				var lg bytes.Buffer
				slog.New(slog.NewJSONHandler(&lg, nil)).Info("m", "key", v)
				outs = append(outs, string(j), lg.String())
				for _, out := range outs {
					for _, s := range tc.secret {
						for _, form := range []string{fmt.Sprintf("%x", s), fmt.Sprintf("%X", s), fmt.Sprint(s[:8])[1:20], string(s)} {
							assert.NotContains(t, out, form)
						}
					}
				}
			}
		})
	}
	assert.Equal(t, fmt.Sprintf("signer.Ed25519(public %x)", []byte(edPlain.Public().(ed25519.PublicKey))), fmt.Sprint(*ed))
	assert.Equal(t, "signer.ECDSA(P-256)", fmt.Sprint(ec))
}

// TestFromPEM: PKCS#8 Ed25519 and ECDSA keys and a SEC 1 EC key, read from
// a file into secret memory, give signers whose public key is the key's;
// RSA, other blocks and garbage are refused by name.
func TestFromPEM(t *testing.T) {
	_, ed := newEd25519(t)
	_, ec := newECDSA(t, elliptic.P384())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	require.NoError(t, err)
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		pem     []byte
		public  crypto.PublicKey
		wantErr string
	}{
		{"ed25519 pkcs8", pkcs8(ed), ed.Public(), ""},
		{"ecdsa pkcs8", pkcs8(ec), ec.Public(), ""},
		{"ecdsa sec1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec.Public(), ""},
		{"rsa", pkcs8(rsaKey), nil, "*rsa.PrivateKey keys are not supported"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), nil, `PEM block "CERTIFICATE"`},
		{"garbage", []byte("not a key"), nil, "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			require.NoError(t, os.WriteFile(path, tc.pem, 0o600))
			text, err := alloc.ReadFile(path)
			require.NoError(t, err)
			defer text.Destroy()
			k, err := signer.FromPEM(text)
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.True(t, tc.public.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()))
			state := handshake(t, selfSigned(t, k), tls.VersionTLS13)
			assert.Equal(t, uint16(tls.VersionTLS13), state.Version)
		})
	}
}
