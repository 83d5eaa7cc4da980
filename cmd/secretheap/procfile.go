package main

// Reading another process's /proc files safely. inspect and scan are run as
// root against processes that may be hostile, so every file they read is
// opened through an open /proc/PID directory (a pid reused meanwhile gives
// ESRCH, not another process's files), without following a symbolic link,
// non-blocking (a FIFO cannot hold the reader), checked with fstat to be a
// regular file, and read with a size bound and a time bound. Files are never
// opened through /proc/PID/root: what inspect needs from the process's
// libraries it reads from the process's memory (ident.go).

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
	// procSmallLimit bounds the small /proc files (status, limits, cmdline,
	// environ): cmdline and environ are bounded by the kernel's argument
	// limit (a quarter of the stack limit, 2 MiB by default), so 4 MiB
	// keeps every ordinary process whole.
	procSmallLimit = 4 << 20
	// procMapsLimit bounds how much of /proc/PID/maps or smaps is read. A
	// process may have up to vm.max_map_count (65530) mappings, each named
	// with up to 4 KiB of path: 250 MiB of maps, more of smaps. inspect and
	// scan stream it and stop here, saying so.
	procMapsLimit = 64 << 20
	// procReadTimeout bounds one file read. /proc reads walk the target's
	// page tables under its mmap lock, which a process can hold busy.
	procReadTimeout = 20 * time.Second
)

// errProcTimeout is returned when a read did not finish within its bound.
var errProcTimeout = errors.New("the read did not finish in time (the process may be holding its memory map lock)")

// procDir is an open /proc/PID directory.
type procDir struct {
	pid int
	f   *os.File
}

// openProcDir opens /proc/PID (pid 0: this process).
func openProcDir(pid int) (*procDir, error) {
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
	return &procDir{pid: pid, f: os.NewFile(uintptr(fd), "/proc/"+strconv.Itoa(pid))}, nil
}

func (d *procDir) Close() error { return d.f.Close() }

// open opens the file name of the directory for reading: no symbolic link
// followed, non-blocking, and only if it is a regular file.
func (d *procDir) open(name string) (*os.File, error) {
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
		return fmt.Errorf("%s: not a regular file (mode %#o): refused", escape(f.Name()), st.Mode&unix.S_IFMT)
	}
	return nil
}

// read reads the whole file name, at most limit bytes (more is an error),
// within procReadTimeout.
func (d *procDir) read(name string, limit int) ([]byte, error) {
	f, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b []byte
	err = withTimeout(func() error {
		var err error
		b, err = io.ReadAll(io.LimitReader(f, int64(limit)+1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: larger than %s: refused", f.Name(), formatBytes(uint64(limit)))
	}
	return b, nil
}

// withTimeout runs fn and returns its error, or errProcTimeout when it has
// not returned after procReadTimeout. A read stuck in the kernel cannot be
// cancelled: its goroutine is left behind, and the command ends soon after.
func withTimeout(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTimer(procReadTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errProcTimeout
	}
}

// lines streams the file name line by line to fn, stopping after
// procMapsLimit bytes or procReadTimeout (truncated reports which, nil when
// the whole file was read). A line longer than the kernel ever writes is an
// error.
func (d *procDir) lines(name string, fn func(line string) error) (truncated error, err error) {
	f, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	err = withTimeout(func() error {
		lr := &io.LimitedReader{R: f, N: procMapsLimit}
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
			truncated = fmt.Errorf("%s is larger than %s: only its start was read", f.Name(), formatBytes(procMapsLimit))
		}
		return nil
	})
	if errors.Is(err, errProcTimeout) {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return truncated, err
}

// readProc reads a small /proc file of process pid (0: this process).
func readProc(pid int, name string) ([]byte, error) {
	d, err := openProcDir(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.read(name, procSmallLimit)
}
