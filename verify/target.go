package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/secretheap/secretheap/internal/launch"
)

// Mode says how a target runs: without the library, or with it in one of
// its OpenSSL modes (C targets) or holding its secret in alloc (Go target).
type Mode string

// The modes a target can run in.
const (
	ModePlain  Mode = "without" // no library: the control
	ModeAll    Mode = "all"     // LD_PRELOAD, SECRETHEAP_OPENSSL=all
	ModeSecure Mode = "secure"  // LD_PRELOAD, SECRETHEAP_OPENSSL=secure
	ModeSecret Mode = "secret"  // Go: the secret lives in an alloc.Secret
	// ModeLocked: SECRETHEAP_OPENSSL=all on the locked backend (what auto
	// falls back to without memfd_secret): mlock + MADV_DONTDUMP keep the
	// pages out of swap and core dumps, but they stay ordinary memory.
	ModeLocked Mode = "all/locked"
)

// openSSLMode is the SECRETHEAP_OPENSSL value of a C mode.
func (m Mode) openSSLMode() string {
	if m == ModeLocked {
		return string(ModeAll)
	}
	return string(m)
}

// backend is the SECRETHEAP_BACKEND value of a mode.
func (m Mode) backend() string {
	if m == ModeLocked {
		return "locked"
	}
	return "secret"
}

// Protected says whether the mode runs with the library.
func (m Mode) Protected() bool { return m != ModePlain }

// Proc is one process of a running target.
type Proc struct {
	Role string // "server", "parent", "worker 2", ...
	PID  int
	// wait reaps the process if it is our child (nil for grandchildren).
	wait func() error
}

// Running is a started target, ready to be attacked.
type Running struct {
	Procs   []Proc
	Needles []Needle
	Count   bool   // count every copy of each needle (Result.Copies), not only where
	Dir     string // working directory of the processes (core files land here)
	Notes   []string
	stop    []func()
}

// Stop ends every process of the target and its helpers (clients).
func (r *Running) Stop() {
	for i := len(r.stop) - 1; i >= 0; i-- {
		r.stop[i]()
	}
	r.stop = nil
}

// Env is what targets need from the surroundings.
type Env struct {
	Library   string // path of libsecretheap.so
	TLSServer string // path of examples/openssl tls_server binary
	GoTarget  string // path of the verify gotarget binary
	// GoKeys and GoKeysErasing: verify/cmd/gokeys built without and with
	// GOEXPERIMENT=runtimesecret.
	GoKeys        string
	GoKeysErasing string
	WorkDir       string // scratch directory, removed by the caller
	Workers       int    // workers of the forking server
}

// Target is a program the suite attacks.
type Target interface {
	Name() string
	Modes() []Mode
	Start(ctx context.Context, env Env, mode Mode) (*Running, error)
}

// options is how a C target runs in mode: with the library in its OpenSSL
// mode and backend, or without it.
func options(env Env, mode Mode, role string) launch.Options {
	o := launch.Options{Role: role}
	if mode.Protected() {
		o.Library = env.Library
		o.Env = []string{"SECRETHEAP_OPENSSL=" + mode.openSSLMode(), "SECRETHEAP_BACKEND=" + mode.backend(), "SECRETHEAP_VERBOSE=1"}
	}
	return o
}

// startTLS prepares a TLS server target: its directory under env.WorkDir, a
// fresh key of alg there (its needles are the target's), and how the
// server runs in mode.
func startTLS(env Env, mode Mode, name, alg, role string) (*Running, launch.KeyPair, launch.Options, error) {
	r := &Running{}
	var err error
	if r.Dir, err = os.MkdirTemp(env.WorkDir, name+"-*"); err != nil {
		return nil, launch.KeyPair{}, launch.Options{}, err
	}
	km, err := NewKey(r.Dir, alg)
	if err != nil {
		return nil, launch.KeyPair{}, launch.Options{}, err
	}
	r.Needles = append(r.Needles, km.Needles...)
	opt := options(env, mode, role)
	opt.Dir = r.Dir
	return r, launch.KeyPair{Key: km.KeyPath, Cert: km.CertPath}, opt, nil
}

// KillAll kills every process the suite started and has not stopped yet
// (for a signal handler: targets run in their own process groups and would
// not see the terminal's SIGINT).
func KillAll() { launch.KillAll() }

// track registers a started process: it is stopped with the target.
func (r *Running) track(p *launch.Proc) Proc {
	r.stop = append(r.stop, p.Stop)
	return Proc{Role: p.Role, PID: p.PID, wait: func() error { return p.Wait(time.Minute) }}
}

// openClient connects s_client to port and logs its keys, keeping the
// connection open (stdin stays open) until the target stops. With a
// non-empty line it sends it and waits for echo in the server's (or, if
// serverOut is nil, the client's) output; without, it waits until the key
// log holds the application traffic secrets, which the server derived
// before the client could (it sent its Finished first). It adds the TLS
// secrets to the needles.
func (r *Running) openClient(ctx context.Context, port int, line string, server *launch.Proc, echo *regexp.Regexp) error {
	keylog := filepath.Join(r.Dir, fmt.Sprintf("keylog-%d.txt", port))
	c, err := launch.SClient(ctx, launch.Options{Dir: r.Dir, Role: "client"}, fmt.Sprintf("127.0.0.1:%d", port),
		"-tls1_3", "-keylogfile", keylog, "-quiet", "-verify_quiet")
	if err != nil {
		return err
	}
	r.track(c)
	if line != "" {
		if _, err := io.WriteString(c.Stdin, line+"\n"); err != nil {
			return err
		}
		w := server
		if w == nil {
			w = c
		}
		if _, err := w.WaitLine(echo, 15*time.Second); err != nil {
			return fmt.Errorf("TLS connection: %w (output: %s)", err, lastLines([]byte(w.Stdout()), 3))
		}
	}
	var ns []Needle
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ns, err = KeylogNeedles(keylog)
		if err == nil && hasNeedle(ns, "CLIENT_TRAFFIC_SECRET_0") && hasNeedle(ns, "SERVER_TRAFFIC_SECRET_0") {
			break
		}
		if time.Now().After(end) {
			return fmt.Errorf("TLS connection: no application traffic secrets in the key log (%v)", err)
		}
	}
	if line == "" {
		// The server reads the client's Finished after the client
		// logged its secrets; give it that round trip.
		time.Sleep(300 * time.Millisecond)
	}
	r.Needles = append(r.Needles, ns...)
	return nil
}

func hasNeedle(ns []Needle, name string) bool {
	for _, n := range ns {
		if n.Name == name {
			return true
		}
	}
	return false
}

// SServer is `openssl s_server` with a fresh key, one open TLS 1.3
// connection from s_client.
type SServer struct {
	Alg string
	// Unprivileged runs the server as nobody (uid and gid 65534: no
	// CAP_IPC_LOCK, so RLIMIT_MEMLOCK binds) with its directory and key
	// readable by everyone; env.WorkDir must be searchable by nobody.
	Unprivileged bool
	// Memlock, when not 0, is the server's RLIMIT_MEMLOCK in bytes (soft
	// and hard, through prlimit(1), which then execs the server).
	Memlock uint64
}

// Name implements Target.
func (t SServer) Name() string { return "s_server " + t.Alg }

// Modes implements Target.
func (t SServer) Modes() []Mode {
	if t.Alg == "ec-p256" {
		return []Mode{ModePlain, ModeAll, ModeSecure, ModeLocked}
	}
	return []Mode{ModePlain, ModeAll, ModeSecure}
}

var pingRe = regexp.MustCompile(`ping-verify`)

// Start implements Target.
func (t SServer) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	r, km, opt, err := startTLS(env, mode, "s_server", t.Alg, "server")
	if err != nil {
		return nil, err
	}
	opt.Memlock = t.Memlock
	if t.Unprivileged {
		if err := os.Chmod(r.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(km.Key, 0o644); err != nil {
			return nil, err
		}
		opt.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	srv, err := launch.SServer(ctx, opt, km, "-naccept", "1")
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, r.track(srv.Proc))
	if err := r.openClient(ctx, srv.Port, "ping-verify", srv.Proc, pingRe); err != nil {
		r.Stop()
		return nil, err
	}
	r.Notes = append(r.Notes, libNotes(srv.Stderr())...)
	return r, nil
}

// libNotes picks the library's own report lines out of a process's stderr.
func libNotes(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "secretheap") {
			out = append(out, l)
		}
	}
	return out
}

// ForkServer is examples/openssl's pre-forking TLS server: the parent loads
// the key and forks workers. Every process is attacked; one worker holds an
// open connection (it waits for the client's line).
type ForkServer struct{ Alg string }

// Name implements Target.
func (t ForkServer) Name() string { return "tls_server " + t.Alg }

// Modes implements Target.
func (t ForkServer) Modes() []Mode { return []Mode{ModePlain, ModeAll, ModeSecure} }

// Start implements Target.
func (t ForkServer) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	if env.TLSServer == "" {
		return nil, ErrSkipped{"examples/openssl tls_server not built"}
	}
	r, km, opt, err := startTLS(env, mode, "tls_server", t.Alg, "parent")
	if err != nil {
		return nil, err
	}
	// Every worker is forked before it returns, so each is attacked.
	srv, kids, err := launch.ForkServer(ctx, opt, env.TLSServer, km, max(env.Workers, 1))
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, r.track(srv.Proc))
	for i, k := range kids {
		r.Procs = append(r.Procs, Proc{Role: fmt.Sprintf("worker %d", i+1), PID: k})
	}
	// A worker answers one line and then closes the connection, so no line
	// is sent: the worker that took the connection waits in SSL_read with
	// the connection's secrets live while we attack.
	if err := r.openClient(ctx, srv.Port, "", nil, nil); err != nil {
		r.Stop()
		return nil, err
	}
	r.Notes = append(r.Notes, libNotes(srv.Stderr())...)
	return r, nil
}

// GoProgram is verify/cmd/gotarget holding 64 random bytes, either in an
// alloc.Secret (ModeSecret) or in an ordinary []byte (ModePlain). The bytes
// reach the program through a pipe straight into the buffer, so no other
// copy exists in its memory.
type GoProgram struct{}

// Name implements Target.
func (GoProgram) Name() string { return "Go program" }

// Modes implements Target.
func (GoProgram) Modes() []Mode { return []Mode{ModePlain, ModeSecret} }

// Start implements Target.
func (GoProgram) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	if env.GoTarget == "" {
		return nil, ErrSkipped{"gotarget not built"}
	}
	r := &Running{}
	var err error
	if r.Dir, err = os.MkdirTemp(env.WorkDir, "gotarget-*"); err != nil {
		return nil, err
	}
	secret := make([]byte, 64)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	r.Needles = append(r.Needles, Needle{Name: "go.secret", Kind: KindGo, Bytes: secret})
	m := "plain"
	if mode == ModeSecret {
		m = "secret"
	}
	// GOTRACEBACK=crash: a fatal signal makes the runtime dump core.
	p, err := launch.Start(ctx, launch.Options{Dir: r.Dir, Role: "main", Env: []string{"GOTRACEBACK=crash", "SECRETHEAP_BACKEND=secret"}},
		env.GoTarget, "-mode", m)
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, r.track(p))
	if _, err := p.Stdin.Write(secret); err != nil {
		r.Stop()
		return nil, err
	}
	if _, err := p.WaitLine(regexp.MustCompile(`^ready`), 15*time.Second); err != nil {
		r.Stop()
		return nil, fmt.Errorf("gotarget: %w; stderr: %s", err, lastLines([]byte(p.Stderr()), 3))
	}
	r.Notes = append(r.Notes, "gotarget holds "+hex.EncodeToString(secret[:4])+"… in "+m)
	return r, nil
}
