// Package launch starts the programs that secretheap's tests, its attack
// suite (verify), its benchmarks and `secretheap demo` read from outside:
// openssl s_server and s_client, the forking example server
// (examples/openssl/tls_server), the Go targets, sshd. One place decides how
// a target runs — with the library preloaded or not, its environment and
// credentials, in a process group of its own so that every process it forks
// is killed with it — how its readiness is awaited (a line on stdout, such
// as the port it chose: targets listen on port 0, so parallel runs never
// collide), and how its stderr is kept for the error message.
package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/secretheap/secretheap/internal/ldpreload"
)

// DefaultReadyTimeout bounds the wait for a target's ready line.
const DefaultReadyTimeout = 30 * time.Second

// Options says how Start runs a program. The zero value runs it with our
// environment, without the library.
type Options struct {
	// Library, when not empty, is preloaded (LD_PRELOAD, first).
	Library string
	// Env adds KEY=VALUE pairs to the environment, after Library's.
	Env []string
	// CleanEnv drops every SECRETHEAP_* and LD_PRELOAD variable we inherit,
	// so that the caller's shell cannot change a result.
	CleanEnv bool
	// Dir is the working directory ("" for ours).
	Dir string
	// Credential runs the program as another user (root only).
	Credential *syscall.Credential
	// Memlock, when not 0, is the program's RLIMIT_MEMLOCK in bytes (soft
	// and hard), set by prlimit(1), which then execs the program (its pid
	// is the program's).
	Memlock uint64
	// Ready, when set, makes Start wait until a stdout line matches; its
	// first group (or the whole match) is Proc.Ready.
	Ready *regexp.Regexp
	// ReadyTimeout bounds that wait (0: DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Role names the process in messages ("server", "worker 2").
	Role string
}

// Proc is a started program. Its stdin is a pipe held open until Stop
// (s_server and s_client end at EOF on stdin).
type Proc struct {
	Cmd   *exec.Cmd
	PID   int
	Role  string
	Ready string // what Options.Ready captured
	// Stdin writes to the program's standard input.
	Stdin io.WriteCloser

	out    *lines
	stderr SyncBuffer
	done   chan struct{}
	err    error // how it exited, once done is closed
	stop   sync.Once
}

// live holds the process groups started and not yet stopped, for KillAll.
var live sync.Map

// KillAll kills every process group Start started and Stop has not ended
// (for a signal handler: the groups do not see the terminal's SIGINT).
func KillAll() {
	live.Range(func(k, _ any) bool {
		_ = syscall.Kill(-k.(int), syscall.SIGKILL)
		return true
	})
}

// Environ is the environment Options give a program.
func (o Options) Environ() []string {
	env := os.Environ()
	if o.CleanEnv {
		env = env[:0:0]
		for _, e := range os.Environ() {
			if strings.HasPrefix(e, "SECRETHEAP_") || strings.HasPrefix(e, "LD_PRELOAD=") {
				continue
			}
			env = append(env, e)
		}
	}
	if o.Library != "" {
		env = ldpreload.Env(env, o.Library)
	}
	return append(env, o.Env...)
}

// Start starts name with args in a process group of its own and, when
// opt.Ready is set, waits for its ready line; on failure the process is
// stopped and the error holds the end of its stderr. ctx kills the group
// when done.
func Start(ctx context.Context, opt Options, name string, args ...string) (*Proc, error) {
	if opt.Memlock != 0 {
		lim := strconv.FormatUint(opt.Memlock, 10)
		name, args = "prlimit", append([]string{"--memlock=" + lim + ":" + lim, name}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = opt.Environ()
	cmd.Dir = opt.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: opt.Credential}
	// A process that left the group may hold stderr open: Wait stops
	// copying it this long after the program exited.
	cmd.WaitDelay = 5 * time.Second
	p := &Proc{Cmd: cmd, Role: opt.Role, done: make(chan struct{})}
	if p.Role == "" {
		p.Role = name
	}
	var err error
	if p.Stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p.PID = cmd.Process.Pid
	live.Store(p.PID, true)
	p.out = newLines(stdout)
	go func() {
		<-p.out.eof
		p.err = cmd.Wait()
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.Stop()
		case <-p.done:
		}
	}()
	if opt.Ready != nil {
		d := opt.ReadyTimeout
		if d == 0 {
			d = DefaultReadyTimeout
		}
		if p.Ready, err = p.WaitLine(opt.Ready, d); err != nil {
			p.Stop()
			return nil, fmt.Errorf("%s: %w; stderr: %s", p.Role, err, LastLines(p.Stderr(), 3))
		}
	}
	return p, nil
}

// WaitLine returns the first group (or the whole match) of the first stdout
// line matching re, waiting up to d.
func (p *Proc) WaitLine(re *regexp.Regexp, d time.Duration) (string, error) {
	return p.out.waitFor(re, d, p.done)
}

// Stdout is what the program wrote on stdout so far.
func (p *Proc) Stdout() string { return p.out.text() }

// Stderr is what the program wrote on stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to d for the program to exit by itself and returns how it
// exited; after d it is an error (the program keeps running).
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.Role, d)
	}
}

// Signal sends sig to the program and waits up to d for its exit, then
// kills its process group; it returns how the program exited and whether it
// had to be killed.
func (p *Proc) Signal(sig syscall.Signal, d time.Duration) (exit error, killed bool) {
	select {
	case <-p.done:
		return p.err, false
	default:
	}
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(d):
		killed = true
		p.Stop()
	}
	<-p.done
	p.forget()
	return p.err, killed
}

// Stop kills the program's process group (every process it forked),
// closes its stdin and waits for it. It is safe to call more than once.
func (p *Proc) Stop() {
	p.stop.Do(func() {
		// The group outlives its leader when the leader exited first
		// (workers of a forking server): kill it either way.
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		p.Stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			// A grandchild outside the group holds our stdout open:
			// stop reading it.
			p.out.close()
			<-p.done
		}
		p.forget()
	})
}

func (p *Proc) forget() { live.Delete(p.PID) }

// ErrExited reports that the program ended before the line it was waited for.
var ErrExited = errors.New("exited")

// lines collects a program's stdout and lets callers wait for a line.
type lines struct {
	mu  sync.Mutex
	all []string
	ch  chan struct{}
	eof chan struct{}
	r   io.ReadCloser
}

func newLines(r io.ReadCloser) *lines {
	l := &lines{ch: make(chan struct{}, 1), eof: make(chan struct{}), r: r}
	go func() {
		defer close(l.eof)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
			select {
			case l.ch <- struct{}{}:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return l
}

func (l *lines) close() { l.r.Close() }

func (l *lines) waitFor(re *regexp.Regexp, d time.Duration, done <-chan struct{}) (string, error) {
	deadline := time.After(d)
	exited := false
	for {
		l.mu.Lock()
		for _, s := range l.all {
			if m := re.FindStringSubmatch(s); m != nil {
				l.mu.Unlock()
				if len(m) > 1 {
					return m[1], nil
				}
				return m[0], nil
			}
		}
		l.mu.Unlock()
		if exited {
			return "", fmt.Errorf("%w before printing %q", ErrExited, re.String())
		}
		select {
		case <-l.ch:
		case <-done:
			exited = true // look once more: the line may have come last
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return "", fmt.Errorf("timed out waiting for %q", re.String())
		}
	}
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// LastLines returns the last n lines of s, joined with " | " (for error
// messages that quote a program's stderr).
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// SyncBuffer is a bytes buffer that may be read while exec's copying
// goroutines write a child's output into it.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p; it is safe to call from several goroutines.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
