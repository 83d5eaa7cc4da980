package launch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// KeyPair is a private key and a self-signed certificate for CN=localhost,
// written as PEM files.
type KeyPair struct {
	Key, Cert string // paths: PKCS#8 private key, certificate
}

// WriteKeyPair writes priv (an *ecdsa.PrivateKey or *rsa.PrivateKey) and a
// self-signed certificate for it into dir as name.key and name.crt, both
// readable by everyone when public is set (a target running as another
// user), else the key by us only. It returns the files and the key's PEM.
func WriteKeyPair(dir, name string, priv, pub any, public bool) (KeyPair, []byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return KeyPair{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return KeyPair{}, nil, err
	}
	kp := KeyPair{Key: filepath.Join(dir, name+".key"), Cert: filepath.Join(dir, name+".crt")}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	mode := os.FileMode(0o600)
	if public {
		mode = 0o644
	}
	if err := os.WriteFile(kp.Key, keyPEM, mode); err != nil {
		return KeyPair{}, nil, err
	}
	if err := os.Chmod(kp.Key, mode); err != nil { // past the umask
		return KeyPair{}, nil, err
	}
	if err := os.WriteFile(kp.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o644); err != nil {
		return KeyPair{}, nil, err
	}
	return kp, keyPEM, nil
}

// NewP256 makes a fresh ECDSA P-256 key pair in dir (see WriteKeyPair) and
// returns it with the private scalar as OpenSSL's BIGNUM holds it on
// x86-64: 64-bit limbs, least significant first, that is the big-endian
// bytes reversed — what a scan from outside looks for.
func NewP256(dir string, public bool) (kp KeyPair, scalarLE []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, nil, err
	}
	be, err := k.Bytes()
	if err != nil {
		return KeyPair{}, nil, err
	}
	if kp, _, err = WriteKeyPair(dir, "p256", k, &k.PublicKey, public); err != nil {
		return KeyPair{}, nil, err
	}
	le := make([]byte, len(be))
	for i, b := range be {
		le[len(be)-1-i] = b
	}
	return kp, le, nil
}

// Server is a started TLS server and the port it listens on (127.0.0.1).
type Server struct {
	*Proc
	Port int
}

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

var (
	acceptLine = regexp.MustCompile(`^ACCEPT 127\.0\.0\.1:(\d+)$`)
	portLine   = regexp.MustCompile(`^port (\d+)$`)
)

// SServer starts `openssl s_server` with kp on 127.0.0.1, on a port the
// kernel chooses, TLS 1.3, with the extra arguments (-www, -rev, -naccept
// N, …), and waits until it accepts.
func SServer(ctx context.Context, opt Options, kp KeyPair, extra ...string) (*Server, error) {
	if opt.Role == "" {
		opt.Role = "s_server"
	}
	opt.Ready = acceptLine
	args := append([]string{"s_server", "-accept", "127.0.0.1:0", "-key", kp.Key, "-cert", kp.Cert, "-tls1_3"}, extra...)
	return startServer(ctx, opt, "openssl", args...)
}

// ForkServer starts examples/openssl's pre-forking server (bin, built by
// make as build/tls_server) with kp and workers workers on a port the
// kernel chooses, and waits until it listens and every worker is forked
// (Workers lists them).
func ForkServer(ctx context.Context, opt Options, bin string, kp KeyPair, workers int, extra ...string) (*Server, []int, error) {
	if opt.Role == "" {
		opt.Role = "tls_server"
	}
	opt.Ready = portLine
	args := append([]string{"-cert", kp.Cert, "-key", kp.Key, "-port", "0", "-workers", strconv.Itoa(workers)}, extra...)
	s, err := startServer(ctx, opt, bin, args...)
	if err != nil {
		return nil, nil, err
	}
	var kids []int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if kids = Children(s.PID); len(kids) >= workers {
			return s, kids, nil
		}
	}
	s.Stop()
	return nil, nil, fmt.Errorf("%s: %d of %d workers running", opt.Role, len(kids), workers)
}

func startServer(ctx context.Context, opt Options, name string, args ...string) (*Server, error) {
	p, err := Start(ctx, opt, name, args...)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(p.Ready)
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s: port %q: %w", opt.Role, p.Ready, err)
	}
	return &Server{Proc: p, Port: port}, nil
}

// SClient starts `openssl s_client` connecting to addr, TLS 1.3, with the
// extra arguments. It does not wait: the caller waits for what it needs
// (WaitLine, a key log).
func SClient(ctx context.Context, opt Options, addr string, extra ...string) (*Proc, error) {
	if opt.Role == "" {
		opt.Role = "s_client"
	}
	return Start(ctx, opt, "openssl", append([]string{"s_client", "-connect", addr}, extra...)...)
}

// ListenUntil waits until addr accepts a TCP connection, for a program that
// cannot say its port (sshd: its port is chosen with FreePort).
func ListenUntil(p *Proc, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited before listening on %s: %s", p.Role, addr, LastLines(p.Stderr(), 3))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s in %v", p.Role, addr, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreePort returns a port of 127.0.0.1 that was free a moment ago, for a
// program that cannot listen on port 0 and report it.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Children lists the child processes of pid.
func Children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
