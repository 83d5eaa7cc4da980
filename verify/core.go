package verify

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/launch"
	"github.com/secretheap/secretheap/internal/procfs"
)

// ReadCore reads the memory segments (PT_LOAD) of an ELF core file into an
// image, naming each by the mapping it came from in maps (taken from
// /proc/PID/maps before the dump). A segment the dumper left out (Filesz 0:
// MADV_DONTDUMP, or pages it could not read) is listed as unreadable.
func ReadCore(path string, maps []Mapping) (*Image, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Type != elf.ET_CORE {
		return nil, fmt.Errorf("verify: %s is not a core file", path)
	}
	im := &Image{}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		m := mappingAt(maps, p.Vaddr, p.Memsz)
		if strings.HasPrefix(m.Perms, "-") {
			// PROT_NONE when the dump was taken: gdb writes such
			// reservations as zeros; they hold no data.
			continue
		}
		if p.Filesz == 0 {
			if p.Memsz > 0 {
				im.Unreadable = append(im.Unreadable, m)
			}
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := io.ReadFull(p.Open(), data); err != nil {
			return nil, fmt.Errorf("verify: core %s segment at %#x: %w", path, p.Vaddr, err)
		}
		im.Segments = append(im.Segments, Segment{Mapping: m, Addr: p.Vaddr, Data: data})
		im.BytesRead += p.Filesz
	}
	return im, nil
}

// mappingAt finds the mapping holding addr, or makes an anonymous one.
func mappingAt(maps []Mapping, addr, size uint64) Mapping {
	for _, m := range maps {
		if addr >= m.Start && addr < m.End {
			return m
		}
	}
	return Mapping{Start: addr, End: addr + size, Perms: "?", Name: ""}
}

// Gcore dumps a running process with gdb's gcore and reads the core file.
// gdb attaches with ptrace and reads through /proc/PID/mem, so it sees what
// a debugger-wielding attacker sees. The process keeps running.
func Gcore(ctx context.Context, pid int, dir string) (*Image, error) {
	if _, err := exec.LookPath("gcore"); err != nil {
		return nil, ErrSkipped{"gdb's gcore not installed"}
	}
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	var defect string
	if total, largest := undumpable(pid); total > gcoreMaxFile {
		defect = fmt.Sprintf("gcore would write %d GiB of zeros: PROT_NONE mappings without "+
			"MADV_DONTDUMP (largest %s)", total>>30, largest)
		// What the fix in the library would do, done from outside so
		// that the attack can still run: gdb makes the process mark its
		// empty reservations MADV_DONTDUMP (needs libc's madvise).
		if err := dontdumpReservations(ctx, pid); err != nil {
			return nil, fmt.Errorf("verify: %s; not run (%v)", defect, err)
		}
		if total, _ := undumpable(pid); total > gcoreMaxFile {
			return nil, fmt.Errorf("verify: %s; not run", defect)
		}
	}
	prefix := filepath.Join(dir, "gcore")
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// gdb dumps every mapping that is not marked MADV_DONTDUMP, PROT_NONE
	// reservations included, reading them as zeros through /proc/PID/mem:
	// a 64 GiB reservation becomes a 64 GiB file. RLIMIT_FSIZE on gdb
	// bounds what one attack may write.
	cmd := exec.CommandContext(ctx, "prlimit", fmt.Sprintf("--fsize=%d", gcoreMaxFile),
		"gcore", "-o", prefix, fmt.Sprint(pid))
	out, err := cmd.CombinedOutput()
	path := fmt.Sprintf("%s.%d", prefix, pid)
	defer os.Remove(path)
	if fi, serr := os.Stat(path); serr == nil && fi.Size() >= gcoreMaxFile {
		return nil, fmt.Errorf("verify: gcore %d wrote %d MiB and was cut off", pid, fi.Size()>>20)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: gcore %d: %w: %s", pid, err, lastLines(out, 3))
	}
	im, err := ReadCore(path, maps)
	if im != nil {
		im.Defect = defect
	}
	return im, err
}

// dontdumpReservations has gdb call madvise(MADV_DONTDUMP) in process pid
// on each of its PROT_NONE mappings of 1 GiB or more that lack the flag.
func dontdumpReservations(ctx context.Context, pid int) error {
	maps, err := procfs.Smaps(pid)
	if err != nil {
		return err
	}
	args := []string{"-p", fmt.Sprint(pid), "-batch", "-nx"}
	for _, m := range maps {
		if m.VmFlags != nil && m.Perms[:3] == "---" && !m.HasFlag("dd") && m.Size() >= 1<<30 {
			args = append(args, "-ex", fmt.Sprintf("call (int)madvise((void*)%#x, %#x, %d)",
				m.Start, m.Size(), unix.MADV_DONTDUMP))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "gdb", args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "No symbol") {
		return fmt.Errorf("gdb call madvise: %v: %s", err, lastLines(out, 2))
	}
	return nil
}

// gcoreMaxFile bounds a gcore file. A process of these targets dumps to a
// few MiB; the library's 64 GiB PROT_NONE arena would fill a disk unless it
// carries MADV_DONTDUMP (gdb honours the "dd" VmFlag).
const gcoreMaxFile = 3 << 30

// undumpable sums the mappings of pid that gdb would write to a core as
// zeros although they can hold no data: no permissions and no "dd" flag
// (MADV_DONTDUMP). It also names the largest.
func undumpable(pid int) (total uint64, largest string) {
	maps, err := procfs.Smaps(pid)
	if err != nil {
		return 0, ""
	}
	var bestSize uint64
	for _, m := range maps {
		if m.VmFlags == nil || m.Perms[:3] != "---" || m.HasFlag("dd") {
			continue
		}
		size := m.Size()
		total += size
		if size > bestSize {
			bestSize = size
			largest = fmt.Sprintf("%x-%x ---p, %d MiB", m.Start, m.End, size>>20)
		}
	}
	return total, largest
}

// ErrSkipped says an attack cannot run on this machine, and why.
type ErrSkipped struct{ Reason string }

// Error implements error.
func (e ErrSkipped) Error() string { return "skipped: " + e.Reason }

// CorePattern describes where the kernel writes core dumps, from
// /proc/sys/kernel/core_pattern. Only a plain file pattern can be used: a
// pipe ("|...") hands the dump to a program such as systemd-coredump.
func CorePattern() (pattern string, usable bool, reason string) {
	b, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		return "", false, err.Error()
	}
	pattern = strings.TrimSpace(string(b))
	if strings.HasPrefix(pattern, "|") {
		return pattern, false, fmt.Sprintf("core_pattern pipes to a program (%s)", pattern)
	}
	if pattern == "" {
		return pattern, false, "core_pattern is empty (no dumps)"
	}
	return pattern, true, ""
}

// KernelCore makes the process dump core the way a crash would: it raises
// RLIMIT_CORE for that one process (prlimit on its pid; no system setting is
// changed), sends SIGABRT, and reads the file the kernel wrote. cwd is the
// process's working directory, where a relative core_pattern puts the file.
// The process is gone afterwards. wait, if not nil, reaps it (our child);
// otherwise the process is polled until it has exited or is a zombie.
func KernelCore(pid int, cwd string, wait func() error) (*Image, error) {
	pattern, ok, reason := CorePattern()
	if !ok {
		return nil, ErrSkipped{reason}
	}
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	dir := cwd
	if filepath.IsAbs(pattern) {
		dir = filepath.Dir(pattern)
	}
	before := map[string]bool{}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			before[e.Name()] = true
		}
	}
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Prlimit(pid, unix.RLIMIT_CORE, &lim, nil); err != nil {
		return nil, fmt.Errorf("verify: prlimit RLIMIT_CORE on %d: %w", pid, err)
	}
	start := time.Now()
	if err := unix.Kill(pid, syscall.SIGABRT); err != nil {
		return nil, err
	}
	if wait != nil {
		_ = wait() // the exit status is the signal; the file is what counts
	} else {
		waitGone(pid, 30*time.Second)
	}
	// The dump is written before the task exits, so the newest new file in
	// dir whose name starts like the pattern's base is ours.
	base := filepath.Base(pattern)
	if i := strings.IndexByte(base, '%'); i >= 0 {
		base = base[:i]
	}
	var found string
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if before[e.Name()] || !strings.HasPrefix(e.Name(), base) {
			continue
		}
		if fi, err := e.Info(); err == nil && !fi.ModTime().Before(start.Add(-time.Second)) {
			found = filepath.Join(dir, e.Name())
		}
	}
	if found == "" {
		return nil, fmt.Errorf("verify: no core file from %d in %s (core_pattern %q)", pid, dir, pattern)
	}
	defer os.Remove(found)
	return ReadCore(found, maps)
}

// waitGone polls until pid has exited or is a zombie (its dump is complete).
func waitGone(pid int, limit time.Duration) {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastLines(b []byte, n int) string { return launch.LastLines(string(b), n) }
