package procfs

// Reading another process's /proc files safely. The secretheap command's
// inspect and scan run as root against processes that may be hostile, so
// every file is opened through an open /proc/PID directory (a pid reused
// meanwhile gives ESRCH, not another process's files), without following a
// symbolic link, non-blocking (a FIFO cannot hold the reader), checked with
// fstat to be a regular file, and read with a size bound and a time bound.
// Files are never opened through /proc/PID/root. The tests and the attack
// suite read through the same code.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// SmallLimit bounds the small /proc files (status, limits, cmdline,
	// environ): cmdline and environ are bounded by the kernel's argument
	// limit (a quarter of the stack limit, 2 MiB by default), so 4 MiB
	// keeps every ordinary process whole.
	SmallLimit = 4 << 20
	// MapsLimit bounds how much of /proc/PID/maps or smaps is read. A
	// process may have up to vm.max_map_count (65530) mappings, each named
	// with up to 4 KiB of path: 250 MiB of maps, more of smaps. Readers
	// stream it and stop here, saying so.
	MapsLimit = 64 << 20
	// ReadTimeout bounds one file read. /proc reads walk the target's
	// page tables under its mmap lock, which a process can hold busy.
	ReadTimeout = 20 * time.Second
)

// ErrTimeout is returned when a read did not finish within ReadTimeout.
var ErrTimeout = errors.New("the read did not finish in time (the process may be holding its memory map lock)")

// Dir is an open /proc/PID directory.
type Dir struct {
	pid int
	f   *os.File
}

// OpenDir opens /proc/PID (pid 0: this process).
func OpenDir(pid int) (*Dir, error) {
	if pid == 0 {
		pid = os.Getpid()
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("no process %d", pid)
		}
		return nil, &os.PathError{Op: "open", Path: "/proc/" + strconv.Itoa(pid), Err: err}
	}
	return &Dir{pid: pid, f: os.NewFile(uintptr(fd), "/proc/"+strconv.Itoa(pid))}, nil
}

// PID is the process whose directory d is.
func (d *Dir) PID() int { return d.pid }

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

// Open opens the file name of the directory for reading: no symbolic link
// followed, non-blocking, and only if it is a regular file.
func (d *Dir) Open(name string) (*os.File, error) {
	path := d.f.Name() + "/" + name
	fd, err := unix.Openat(int(d.f.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := checkRegular(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkRegular fails unless f is a regular file.
func checkRegular(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: not a regular file (mode %#o): refused", f.Name(), st.Mode&unix.S_IFMT)
	}
	return nil
}

// Read reads the whole file name, at most limit bytes (more is an error),
// within ReadTimeout.
func (d *Dir) Read(name string, limit int) ([]byte, error) {
	f, err := d.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b []byte
	err = WithTimeout(func() error {
		var err error
		b, err = io.ReadAll(io.LimitReader(f, int64(limit)+1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: larger than %s: refused", f.Name(), sizeString(uint64(limit)))
	}
	return b, nil
}

// WithTimeout runs fn and returns its error, or ErrTimeout when it has not
// returned after ReadTimeout. A read stuck in the kernel cannot be
// cancelled: its goroutine is left behind, and the command ends soon after.
func WithTimeout(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTimer(ReadTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return ErrTimeout
	}
}

// Lines streams the file name line by line to fn, stopping after MapsLimit
// bytes or ReadTimeout (truncated reports which, nil when the whole file
// was read). A line longer than the kernel ever writes is an error.
func (d *Dir) Lines(name string, fn func(line string) error) (truncated error, err error) {
	f, err := d.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	err = WithTimeout(func() error {
		lr := &io.LimitedReader{R: f, N: MapsLimit}
		sc := bufio.NewScanner(lr)
		sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
		for sc.Scan() {
			if err := fn(sc.Text()); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		if lr.N == 0 {
			truncated = fmt.Errorf("%s is larger than %s: only its start was read", f.Name(), sizeString(MapsLimit))
		}
		return nil
	})
	if errors.Is(err, ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return truncated, err
}

// Mappings streams maps or smaps (name) through MapsParser to emit; see
// Lines for truncated.
func (d *Dir) Mappings(name string, emit func(Mapping)) (truncated error, err error) {
	p := MapsParser{Emit: emit}
	truncated, err = d.Lines(name, p.Line)
	if err != nil {
		return nil, err
	}
	p.Flush()
	return truncated, nil
}

// ReadFile reads a small /proc file (at most SmallLimit) of process pid
// (0: this process).
func ReadFile(pid int, name string) ([]byte, error) {
	d, err := OpenDir(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Read(name, SmallLimit)
}

// Maps reads /proc/PID/maps (pid 0: this process). A file past MapsLimit is
// an error here: callers that can use a partial list stream it with
// Dir.Mappings.
func Maps(pid int) ([]Mapping, error) { return readMappings(pid, "maps") }

// Smaps reads /proc/PID/smaps like Maps, with Rss and VmFlags.
func Smaps(pid int) ([]Mapping, error) { return readMappings(pid, "smaps") }

func readMappings(pid int, name string) ([]Mapping, error) {
	d, err := OpenDir(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var out []Mapping
	truncated, err := d.Mappings(name, func(m Mapping) { out = append(out, m) })
	if err == nil {
		err = truncated
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sizeString writes the bounds above: exact MiB.
func sizeString(n uint64) string {
	if n%(1<<20) == 0 {
		return strconv.FormatUint(n>>20, 10) + " MiB"
	}
	return strconv.FormatUint(n, 10) + " bytes"
}
