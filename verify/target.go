package verify

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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

// lineWatcher collects a process's output and lets callers wait for a line.
type lineWatcher struct {
	mu    sync.Mutex
	lines []string
	ch    chan struct{}
}

func newLineWatcher(r io.Reader) *lineWatcher {
	w := &lineWatcher{ch: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// waitFor returns the first submatch of re in a line, waiting up to d.
func (w *lineWatcher) waitFor(re *regexp.Regexp, d time.Duration) (string, error) {
	deadline := time.After(d)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if m := re.FindStringSubmatch(l); m != nil {
				w.mu.Unlock()
				if len(m) > 1 {
					return m[1], nil
				}
				return m[0], nil
			}
		}
		w.mu.Unlock()
		select {
		case <-w.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return "", fmt.Errorf("timed out waiting for %q", re.String())
		}
	}
}

func (w *lineWatcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// lockedText collects a process's stderr: exec's copying goroutine writes
// it while the suite reads it (libNotes, error messages).
type lockedText struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedText) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedText) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// libEnv is the environment of a protected C process.
func libEnv(env Env, mode Mode) []string {
	out := os.Environ()
	if mode.Protected() {
		out = append(out, "LD_PRELOAD="+env.Library, "SECRETHEAP_OPENSSL="+mode.openSSLMode(),
			"SECRETHEAP_BACKEND="+mode.backend(), "SECRETHEAP_VERBOSE=1")
	}
	return out
}

// liveGroups holds the process groups of every target process and client
// still running, so that KillAll can end them when the suite is interrupted.
var liveGroups sync.Map

// KillAll kills every process the suite started and has not stopped yet
// (for a signal handler: targets run in their own process groups and would
// not see the terminal's SIGINT).
func KillAll() {
	liveGroups.Range(func(k, _ any) bool {
		_ = syscall.Kill(-k.(int), syscall.SIGKILL)
		return true
	})
}

// startProc starts cmd in its own process group and registers its end.
func (r *Running) startProc(cmd *exec.Cmd, role string) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	var werr error
	wait := func() error {
		once.Do(func() { werr = cmd.Wait() })
		return werr
	}
	pgid := cmd.Process.Pid
	liveGroups.Store(pgid, true)
	r.stop = append(r.stop, func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = wait()
		liveGroups.Delete(pgid)
	})
	return &Proc{Role: role, PID: cmd.Process.Pid, wait: wait}, nil
}

// openClient connects s_client to port and logs its keys, keeping the
// connection open (stdin stays open) until the target stops. With a
// non-empty line it sends it and waits for echo in the server's (or, if
// serverOut is nil, the client's) output; without, it waits until the key
// log holds the application traffic secrets, which the server derived
// before the client could (it sent its Finished first). It adds the TLS
// secrets to the needles.
func (r *Running) openClient(port, line string, serverOut *lineWatcher, echo *regexp.Regexp) error {
	keylog := filepath.Join(r.Dir, fmt.Sprintf("keylog-%s.txt", port))
	cmd := exec.Command("openssl", "s_client", "-connect", "127.0.0.1:"+port, "-tls1_3",
		"-keylogfile", keylog, "-quiet", "-verify_quiet")
	cmd.Dir = r.Dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = io.Discard
	if _, err := r.startProc(cmd, "client"); err != nil {
		return err
	}
	r.stop = append(r.stop, func() { stdin.Close() })
	clientOut := newLineWatcher(out)
	if line != "" {
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			return err
		}
		w := serverOut
		if w == nil {
			w = clientOut
		}
		if _, err := w.waitFor(echo, 15*time.Second); err != nil {
			return fmt.Errorf("TLS connection: %w (output: %s)", err, lastLines([]byte(w.text()), 3))
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

var (
	acceptRe = regexp.MustCompile(`^ACCEPT .*:(\d+)$`)
	pingRe   = regexp.MustCompile(`ping-verify`)
)

// Start implements Target.
func (t SServer) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	r := &Running{}
	var err error
	if r.Dir, err = os.MkdirTemp(env.WorkDir, "s_server-*"); err != nil {
		return nil, err
	}
	km, err := NewKey(r.Dir, t.Alg)
	if err != nil {
		return nil, err
	}
	r.Needles = append(r.Needles, km.Needles...)
	argv := []string{"openssl", "s_server", "-accept", "127.0.0.1:0",
		"-key", km.KeyPath, "-cert", km.CertPath, "-tls1_3", "-naccept", "1"}
	if t.Memlock != 0 {
		lim := strconv.FormatUint(t.Memlock, 10)
		argv = append([]string{"prlimit", "--memlock=" + lim + ":" + lim}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.Dir
	cmd.Env = libEnv(env, mode)
	if t.Unprivileged {
		if err := os.Chmod(r.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(km.KeyPath, 0o644); err != nil {
			return nil, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// s_server reads its terminal too and ends the connection at EOF on
	// stdin: keep a pipe open until the target stops.
	sin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r.stop = append(r.stop, func() { sin.Close() })
	stderr := &lockedText{}
	cmd.Stderr = stderr
	p, err := r.startProc(cmd, "server")
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, *p)
	sout := newLineWatcher(out)
	port, err := sout.waitFor(acceptRe, 15*time.Second)
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("s_server: %w; stderr: %s", err, lastLines([]byte(stderr.String()), 3))
	}
	if err := r.openClient(port, "ping-verify", sout, pingRe); err != nil {
		r.Stop()
		return nil, err
	}
	r.Notes = append(r.Notes, libNotes(stderr.String())...)
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

var portRe = regexp.MustCompile(`^port (\d+)$`)

// Start implements Target.
func (t ForkServer) Start(ctx context.Context, env Env, mode Mode) (*Running, error) {
	if env.TLSServer == "" {
		return nil, ErrSkipped{"examples/openssl tls_server not built"}
	}
	r := &Running{}
	var err error
	if r.Dir, err = os.MkdirTemp(env.WorkDir, "tls_server-*"); err != nil {
		return nil, err
	}
	km, err := NewKey(r.Dir, t.Alg)
	if err != nil {
		return nil, err
	}
	r.Needles = append(r.Needles, km.Needles...)
	workers := max(env.Workers, 1)
	cmd := exec.CommandContext(ctx, env.TLSServer, "-cert", km.CertPath, "-key", km.KeyPath,
		"-port", "0", "-workers", strconv.Itoa(workers))
	cmd.Dir = r.Dir
	cmd.Env = libEnv(env, mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &lockedText{}
	cmd.Stderr = stderr
	p, err := r.startProc(cmd, "parent")
	if err != nil {
		return nil, err
	}
	r.Procs = append(r.Procs, *p)
	sout := newLineWatcher(out)
	port, err := sout.waitFor(portRe, 15*time.Second)
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("tls_server: %w; stderr: %s", err, lastLines([]byte(stderr.String()), 3))
	}
	// Wait until every worker is forked, so each is attacked.
	var kids []int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if kids = children(p.PID); len(kids) >= workers {
			break
		}
	}
	if len(kids) < workers {
		r.Stop()
		return nil, fmt.Errorf("tls_server: %d of %d workers running", len(kids), workers)
	}
	for i, k := range kids {
		r.Procs = append(r.Procs, Proc{Role: fmt.Sprintf("worker %d", i+1), PID: k})
	}
	// A worker answers one line and then closes the connection, so no line
	// is sent: the worker that took the connection waits in SSL_read with
	// the connection's secrets live while we attack.
	if err := r.openClient(port, "", nil, nil); err != nil {
		r.Stop()
		return nil, err
	}
	r.Notes = append(r.Notes, libNotes(stderr.String())...)
	return r, nil
}

// children lists the child processes of pid.
func children(pid int) []int {
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
	cmd := exec.CommandContext(ctx, env.GoTarget, "-mode", m)
	cmd.Dir = r.Dir
	// GOTRACEBACK=crash: a fatal signal makes the runtime dump core.
	cmd.Env = append(os.Environ(), "GOTRACEBACK=crash", "SECRETHEAP_BACKEND=secret")
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
	w := newLineWatcher(out)
	if _, err := stdin.Write(secret); err != nil {
		r.Stop()
		return nil, err
	}
	if _, err := w.waitFor(regexp.MustCompile(`^ready`), 15*time.Second); err != nil {
		r.Stop()
		return nil, fmt.Errorf("gotarget: %w; stderr: %s", err, lastLines([]byte(stderr.String()), 3))
	}
	r.Notes = append(r.Notes, "gotarget holds "+hex.EncodeToString(secret[:4])+"… in "+m)
	return r, nil
}
