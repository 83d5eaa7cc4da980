package main

// secretheap demo: what `make demo` shows. An openssl s_server holding a
// throwaway P-256 key runs twice, without and with libsecretheap.so; after a
// few TLS handshakes against each, the server's memory is read from outside
// with scan's own code (the same reads as `secretheap scan`), looking for
// the private key. The servers are this command's children, so under Yama
// ptrace_scope 1 an ordinary user may read them.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/secretheap/secretheap/internal/attack"
	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/ldpreload"
)

// demoSide is one server of the demo and what the outside read found.
type demoSide struct {
	Library    string     `json:"library,omitempty"` // "" without
	PID        int        `json:"pid"`
	Handshakes int        `json:"handshakes"` // completed, certificate verified
	Scan       scanReport `json:"scan"`
	// From inspect, for the protected server: its secret memory.
	SecretMaps  int    `json:"secretmem_mappings"`
	SecretBytes uint64 `json:"secretmem_bytes"`
	OpenSSLHook string `json:"openssl_hook,omitempty"`
}

// refusedSecret reports whether the read of a memfd_secret mapping was
// refused, and with which errno.
func (s demoSide) refusedSecret() (string, bool) {
	for _, u := range s.Scan.Unreadable {
		if u.Secret {
			return u.Errno, true
		}
	}
	return "", false
}

// demoReport is the whole demo: the two servers and the verdicts.
type demoReport struct {
	Without demoSide `json:"without"`
	With    demoSide `json:"with"`
	// KeyReadableWithout: some form of the key was found in the plain
	// server (the control: without it the demo shows nothing).
	KeyReadableWithout bool `json:"key_readable_without"`
	// KeyReadableWith: some form was found in the protected server.
	KeyReadableWith bool `json:"key_readable_with"`
	// SecretRefused: the protected server's memfd_secret mapping was
	// listed as unreadable (EIO from /proc/PID/mem).
	SecretRefused bool `json:"secret_refused"`
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "demo [options]",
		"Runs openssl s_server with a throwaway ECDSA P-256 key twice, without and\n"+
			"with libsecretheap.so preloaded; after a few TLS handshakes against each it\n"+
			"reads the server's memory from outside (/proc/PID/mem, as `secretheap scan`\n"+
			"does) for the private key: the scalar big-endian, little-endian (a BIGNUM's\n"+
			"limbs on x86-64) and the second base64 line of the key file.\n\n"+
			"Exit status: 0 when no form of the key is readable in the protected server,\n"+
			"1 when one is, 2 when the demo could not run.", stderr)
	library := fs.String("library", "", "the library to preload (default: found as `secretheap run` finds it)")
	handshakes := fs.Int("handshakes", 5, "TLS handshakes against each server before the read")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if done, st := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "secretheap demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "secretheap demo: %v\n", err)
		return exitUsage
	}
	lib, err := ldpreload.Resolve(*library)
	if err != nil {
		return fail(err)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		return fail(fmt.Errorf("the openssl command is missing (apt-get install openssl): %w", err))
	}
	// An interrupted demo kills its servers (their own process groups do
	// not get the terminal's SIGINT).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer launch.KillAll()

	out := stdout
	if *asJSON {
		out = io.Discard
	}
	rep, err := demo(ctx, out, lib, *handshakes, nil)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(err)
		}
	}
	if rep.KeyReadableWith {
		return 1
	}
	return 0
}

// demo runs both servers, printing each step to w; env is added to the
// protected server's environment (the test's control turns the library's
// OpenSSL hooks off with it).
func demo(ctx context.Context, w io.Writer, lib string, handshakes int, env []string) (demoReport, error) {
	var rep demoReport
	dir, err := os.MkdirTemp("", "secretheap-demo-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(w, "== 1. A throwaway ECDSA P-256 key and certificate (in %s)\n", dir)
	kp, le, err := launch.NewP256(dir, false)
	if err != nil {
		return rep, err
	}
	be := slices.Clone(le)
	slices.Reverse(be)
	keyPEM, err := os.ReadFile(kp.Key)
	if err != nil {
		return rep, err
	}
	// The first base64 line of a P-256 PKCS#8 key is the same for every key
	// (the DER header): the second encodes scalar bytes 12..31.
	pemLines := strings.Split(string(keyPEM), "\n")
	if len(pemLines) < 3 {
		return rep, fmt.Errorf("%s: not a PEM key", kp.Key)
	}
	needles := []needle{
		{Label: "big-endian scalar", Bytes: be},
		{Label: "little-endian scalar", Bytes: le},
		{Label: "PEM text", Bytes: []byte(pemLines[2])},
	}
	fmt.Fprintf(w, "private scalar (big-endian):    %x…\n", be[:8])
	fmt.Fprintf(w, "same, little-endian (BIGNUM):   %x…\n", le[:8])
	fmt.Fprintf(w, "PEM file, 2nd base64 line:      %s\n", shorten(pemLines[2], 16))

	fmt.Fprintln(w, "\n== 2. openssl s_server WITHOUT the library")
	if rep.Without, err = demoServer(ctx, w, launch.Options{CleanEnv: true}, kp, handshakes, needles); err != nil {
		return rep, err
	}
	rep.KeyReadableWithout = rep.Without.Scan.Found
	if rep.KeyReadableWithout {
		fmt.Fprintln(w, "→ the private key can be read out of the unprotected server.")
	} else {
		fmt.Fprintln(w, "→ the key was not found in the unprotected server this time (nothing to compare against).")
	}

	fmt.Fprintf(w, "\n== 3. the same server WITH the library (LD_PRELOAD=%s)\n", escape(lib))
	if rep.With, err = demoServer(ctx, w, launch.Options{CleanEnv: true, Library: lib, Env: env}, kp, handshakes, needles); err != nil {
		return rep, err
	}
	rep.KeyReadableWith = rep.With.Scan.Found
	errno, refused := rep.With.refusedSecret()
	rep.SecretRefused = refused
	if refused {
		fmt.Fprintf(w, "(refused with %s: the kernel will not read memfd_secret pages for another process —\n"+
			" EIO from /proc/PID/mem and ptrace, EFAULT from process_vm_readv — not even for root)\n", errno)
	}
	if rep.KeyReadableWith {
		fmt.Fprintln(w, "→ some copies above are still readable with the library; see \"Limits\" in README.md.")
	} else {
		fmt.Fprintln(w, "→ no copy of the private key is readable from outside the protected server.")
	}
	return rep, nil
}

// demoServer starts s_server as opt says (the library preloaded or not),
// makes the handshakes, and reads the server from outside.
func demoServer(ctx context.Context, w io.Writer, opt launch.Options, kp launch.KeyPair, handshakes int, needles []needle) (demoSide, error) {
	side := demoSide{Library: opt.Library}
	srv, err := launch.SServer(ctx, opt, kp, "-www")
	if err != nil {
		return side, err
	}
	defer srv.Stop()
	side.PID = srv.PID
	fmt.Fprintf(w, "server pid %d on %s\n", srv.PID, srv.Addr())
	if side.Handshakes, err = demoHandshakes(srv.Addr(), kp.Cert, handshakes); err != nil {
		return side, fmt.Errorf("TLS handshake %d of %d: %w (server: %s)", side.Handshakes+1, handshakes, err, launch.LastLines(srv.Stderr(), 3))
	}
	fmt.Fprintf(w, "%d of %d TLS handshakes completed (certificate verified)\n", side.Handshakes, handshakes)
	if opt.Library != "" {
		r, err := inspect(srv.PID)
		if err != nil {
			return side, err
		}
		side.SecretMaps, side.SecretBytes, side.OpenSSLHook = r.SecretMaps, r.SecretBytes, r.OpenSSLHook
		fmt.Fprintf(w, "its secret memory: %d memfd_secret mapping(s), %s; OpenSSL hook: %s\n",
			r.SecretMaps, formatBytes(r.SecretBytes), r.OpenSSLHook)
	}
	fmt.Fprintf(w, "reading the server's memory from outside (/proc/%d/mem):\n", srv.PID)
	if side.Scan, err = scan(srv.PID, needles, attack.ProcMem, 64<<30, w); err != nil {
		return side, fmt.Errorf("reading process %d: %w%s", srv.PID, err, accessHint(err))
	}
	var b bytes.Buffer
	printScan(&b, side.Scan)
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintln(w, "  "+l)
	}
	return side, nil
}

// demoHandshakes makes n TLS handshakes with an HTTP request against addr,
// verifying the server's certificate, and returns how many completed.
func demoHandshakes(addr, certPath string, n int) (int, error) {
	pemCert, err := os.ReadFile(certPath)
	if err != nil {
		return 0, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCert) {
		return 0, fmt.Errorf("%s: no certificate", certPath)
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	for i := 0; i < n; i++ {
		d := &tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if err != nil {
			return i, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		if err == nil {
			_, err = io.Copy(io.Discard, c)
		}
		c.Close()
		if err != nil {
			return i, err
		}
	}
	return n, nil
}
