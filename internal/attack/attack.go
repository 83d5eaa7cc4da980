// Package attack does what an outside attacker with the target's uid (or
// root) does to a live process to steal its memory: read an address through
// /proc/PID/mem, process_vm_readv(2) or ptrace(PTRACE_PEEKDATA), or scan every
// readable mapping for a known byte string. Tests use it to show that secret
// memory resists each route while ordinary memory of the same process does not;
// `make verify` uses it against real programs.
//
// Every failure is a *ReadError carrying the errno the kernel answered with
// (EIO from /proc/PID/mem and PEEKDATA, EFAULT from process_vm_readv for
// memfd_secret pages), so callers can print exactly what the attacker met.
package attack

import (
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Method is one way to read another process's memory.
type Method uint8

const (
	// ProcMem reads /proc/PID/mem with pread(2).
	ProcMem Method = iota + 1
	// ProcessVMReadv copies with process_vm_readv(2).
	ProcessVMReadv
	// PtracePeek attaches with PTRACE_SEIZE, stops the thread with
	// PTRACE_INTERRUPT, reads word by word with PTRACE_PEEKDATA and detaches.
	PtracePeek
)

// Methods returns every Method, in a stable order.
func Methods() []Method { return []Method{ProcMem, ProcessVMReadv, PtracePeek} }

// String returns the method's name as ParseMethod accepts it.
func (m Method) String() string {
	switch m {
	case ProcMem:
		return "procmem"
	case ProcessVMReadv:
		return "vmreadv"
	case PtracePeek:
		return "ptrace"
	}
	return fmt.Sprintf("Method(%d)", uint8(m))
}

// Describe returns what the method does, for people: "/proc/PID/mem",
// "process_vm_readv", "ptrace(PEEKDATA)".
func (m Method) Describe() string {
	switch m {
	case ProcMem:
		return "/proc/PID/mem"
	case ProcessVMReadv:
		return "process_vm_readv"
	case PtracePeek:
		return "ptrace(PEEKDATA)"
	}
	return m.String()
}

// ParseMethod parses "procmem", "vmreadv" or "ptrace".
func ParseMethod(s string) (Method, error) {
	for _, m := range Methods() {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("attack: unknown method %q: want procmem, vmreadv or ptrace", s)
}

// ReadError is a failed read (or attach) with the errno the kernel gave.
type ReadError struct {
	Method Method     // the method that failed
	Op     string     // open, pread, process_vm_readv, attach, interrupt, wait, peek
	PID    int        // the target process
	Addr   uintptr    // the first address that could not be read
	Len    int        // bytes still wanted from Addr
	Errno  unix.Errno // 0 when the failure was not an errno (e.g. a short read)
	Err    error      // the errno, or what else went wrong
}

// Error names the method, the address and the errno: "ptrace(PEEKDATA) peek
// of 32 B at 0x7f… in pid 42: EIO (input/output error)".
func (e *ReadError) Error() string {
	what := e.Err.Error()
	if e.Errno != 0 {
		what = fmt.Sprintf("%s (%v)", unix.ErrnoName(e.Errno), e.Errno)
	}
	return fmt.Sprintf("%s %s of %d B at %#x in pid %d: %s", e.Method.Describe(), e.Op, e.Len, e.Addr, e.PID, what)
}

// Unwrap returns the underlying error (the errno, when there is one).
func (e *ReadError) Unwrap() error { return e.Err }

func readErr(m Method, op string, pid int, addr uintptr, n int, err error) *ReadError {
	re := &ReadError{Method: m, Op: op, PID: pid, Addr: addr, Len: n, Err: err}
	if en, ok := err.(unix.Errno); ok {
		re.Errno = en
	}
	return re
}

// Read reads n bytes at addr in process pid with method m. On error it
// returns the bytes read before it (possibly none) and a *ReadError.
func Read(pid int, addr uintptr, n int, m Method) ([]byte, error) {
	r, err := open(pid, m)
	if err != nil {
		return nil, err
	}
	defer r.close()
	buf := make([]byte, n)
	k, err := r.readAt(buf, addr)
	return buf[:k], err
}

// reader reads one process's memory; opened once per Read or Scan so a scan
// attaches or opens only once.
type reader interface {
	readAt(buf []byte, addr uintptr) (int, error)
	close()
}

func open(pid int, m Method) (reader, error) {
	switch m {
	case ProcMem:
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/mem", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, readErr(m, "open", pid, 0, 0, err)
		}
		return &procMem{pid: pid, fd: fd}, nil
	case ProcessVMReadv:
		return vmReadv{pid: pid}, nil
	case PtracePeek:
		return attach(pid)
	}
	return nil, fmt.Errorf("attack: unknown %v", m)
}

type procMem struct {
	pid, fd int
}

func (p *procMem) readAt(buf []byte, addr uintptr) (int, error) {
	done := 0
	for done < len(buf) {
		k, err := unix.Pread(p.fd, buf[done:], int64(addr)+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, readErr(ProcMem, "pread", p.pid, addr+uintptr(done), len(buf)-done, err)
		}
		if k == 0 {
			return done, readErr(ProcMem, "pread", p.pid, addr+uintptr(done), len(buf)-done, fmt.Errorf("short read"))
		}
		done += k
	}
	return done, nil
}

func (p *procMem) close() { unix.Close(p.fd) }

type vmReadv struct{ pid int }

func (v vmReadv) readAt(buf []byte, addr uintptr) (int, error) {
	done := 0
	for done < len(buf) {
		local := []unix.Iovec{{Base: &buf[done]}}
		local[0].SetLen(len(buf) - done)
		remote := []unix.RemoteIovec{{Base: addr + uintptr(done), Len: len(buf) - done}}
		k, err := unix.ProcessVMReadv(v.pid, local, remote, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, readErr(ProcessVMReadv, "process_vm_readv", v.pid, addr+uintptr(done), len(buf)-done, err)
		}
		if k == 0 {
			return done, readErr(ProcessVMReadv, "process_vm_readv", v.pid, addr+uintptr(done), len(buf)-done, fmt.Errorf("short read"))
		}
		done += k
	}
	return done, nil
}

func (vmReadv) close() {}

// tracer holds a ptrace attachment. Every ptrace request must come from the
// thread that attached, so it locks its goroutine to the OS thread until
// close.
type tracer struct {
	pid int
}

func attach(pid int) (*tracer, error) {
	runtime.LockOSThread()
	// SEIZE + INTERRUPT stops only the traced thread, without the SIGSTOP
	// that PTRACE_ATTACH sends to the whole thread group.
	if err := unix.PtraceSeize(pid); err != nil {
		runtime.UnlockOSThread()
		return nil, readErr(PtracePeek, "attach", pid, 0, 0, err)
	}
	t := &tracer{pid: pid}
	if err := unix.PtraceInterrupt(pid); err != nil {
		t.detach()
		return nil, readErr(PtracePeek, "interrupt", pid, 0, 0, err)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.detach()
			return nil, readErr(PtracePeek, "wait", pid, 0, 0, err)
		}
		if ws.Stopped() {
			return t, nil
		}
		if ws.Exited() || ws.Signaled() {
			runtime.UnlockOSThread()
			return nil, readErr(PtracePeek, "wait", pid, 0, 0, fmt.Errorf("target exited"))
		}
	}
}

func (t *tracer) readAt(buf []byte, addr uintptr) (int, error) {
	// PtracePeekData reads whole words and copies the part asked for.
	k, err := unix.PtracePeekData(t.pid, addr, buf)
	if err != nil {
		return k, readErr(PtracePeek, "peek", t.pid, addr+uintptr(k), len(buf)-k, err)
	}
	return k, nil
}

func (t *tracer) detach() {
	_ = unix.PtraceDetach(t.pid)
	runtime.UnlockOSThread()
}

func (t *tracer) close() { t.detach() }
