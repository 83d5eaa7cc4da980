// Package ldpreload finds libsecretheap.so (built from cshim/ and preload/)
// and runs programs with it preloaded. It is free of cgo, unlike
// internal/ccore (the cgo binding of the C core), so that commands such as
// cmd/secretheap can use it without compiling the allocator in.
package ldpreload

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/secretheap/secretheap/internal/repo"
)

// LibraryName is the file name of the LD_PRELOAD library that `make` builds
// from cshim/ and preload/ into build/ and `make install` copies to $PREFIX/lib.
const LibraryName = "libsecretheap.so"

// LibraryEnv names the environment variable that overrides the search done by
// LibraryPath: when it is set, it must name the library file.
const LibraryEnv = "SECRETHEAP_LIBRARY"

// defaultPrefix is the Makefile's default PREFIX, searched when $PREFIX is not
// set, so that `make install` without arguments is found.
const defaultPrefix = "/usr/local"

// ErrLibraryNotFound is returned (wrapped, with the places searched) by
// LibraryPath when no candidate exists.
var ErrLibraryNotFound = errors.New("libsecretheap.so not found")

// LibraryPath returns the absolute path of libsecretheap.so. It looks, in
// order, at:
//
//  1. $SECRETHEAP_LIBRARY, which must then name the library (no fallback, so
//     a typo is an error instead of silently using another build);
//  2. the directory of the running executable and its ../lib (build/secretheap
//     finds build/libsecretheap.so; $PREFIX/bin/secretheap finds
//     $PREFIX/lib/libsecretheap.so);
//  3. build/ under this module's root, found by walking up from the working
//     directory and from the executable's directory to the go.mod of
//     github.com/secretheap/secretheap (go test runs in the package directory);
//  4. $PREFIX/lib, and /usr/local/lib (the Makefile's default PREFIX).
//
// The first candidate that is an ELF shared object wins. When none is, the
// error wraps ErrLibraryNotFound, lists the places searched and says to run
// make.
func LibraryPath() (string, error) {
	if p, ok := os.LookupEnv(LibraryEnv); ok && p != "" {
		return checked(p, LibraryEnv+"=")
	}
	return search()
}

// Resolve is LibraryPath with a path given explicitly (a command-line flag
// such as secretheap run --library): a non-empty explicit must name the
// library, else the search of LibraryPath runs, $SECRETHEAP_LIBRARY first.
func Resolve(explicit string) (string, error) {
	if explicit != "" {
		return checked(explicit, "")
	}
	return LibraryPath()
}

// checked makes p absolute and checks it is the library; where names the
// source of p in the error.
func checked(p, where string) (string, error) {
	abs, err := filepath.Abs(p)
	if err == nil {
		err = checkLibrary(abs)
	}
	if err != nil {
		return "", fmt.Errorf("%s%q: %w", where, p, err)
	}
	return abs, nil
}

// search tries Candidates in order.
func search() (string, error) {
	candidates := Candidates()
	var rejected []string
	for _, c := range candidates {
		err := checkLibrary(c)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			// Present but unusable (not ELF, a directory): say so, since
			// "not found" would mislead whoever is staring at the file.
			rejected = append(rejected, err.Error())
		}
	}
	msg := fmt.Sprintf("%v (searched %s); run make in the repository to build build/%s, or set %s",
		ErrLibraryNotFound, strings.Join(candidates, ", "), LibraryName, LibraryEnv)
	if len(rejected) > 0 {
		msg += "; rejected: " + strings.Join(rejected, "; ")
	}
	return "", &libraryError{msg: msg}
}

// libraryError carries LibraryPath's message and matches ErrLibraryNotFound.
type libraryError struct{ msg string }

func (e *libraryError) Error() string        { return e.msg }
func (e *libraryError) Is(target error) bool { return target == ErrLibraryNotFound }

// Candidates lists the places LibraryPath searches after the environment
// override, most specific first, without duplicates.
func Candidates() []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if p == "" {
			return
		}
		p = filepath.Clean(p)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	var exeDir string
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		exeDir = filepath.Dir(exe)
		add(filepath.Join(exeDir, LibraryName))
		add(filepath.Join(exeDir, "..", "lib", LibraryName))
	}
	if wd, err := os.Getwd(); err == nil {
		if root, ok := repo.RootFrom(wd); ok {
			add(filepath.Join(root, repo.BuildDir, LibraryName))
		}
	}
	if exeDir != "" {
		if root, ok := repo.RootFrom(exeDir); ok {
			add(filepath.Join(root, repo.BuildDir, LibraryName))
		}
	}
	if prefix := os.Getenv("PREFIX"); prefix != "" {
		if abs, err := filepath.Abs(prefix); err == nil {
			add(filepath.Join(abs, "lib", LibraryName))
		}
	}
	add(filepath.Join(defaultPrefix, "lib", LibraryName))
	return out
}

// checkLibrary returns nil if path is an ELF shared object that is safe to
// preload. The dynamic loader would reject anything else with a message
// naming neither us nor the fix, so it is cheaper to say so here. The file
// is opened once, without blocking (a FIFO planted there cannot hang us),
// and checked on that descriptor: a regular file, not world-writable
// (group-writable is the norm under a umask of 002), and owned by root, by us, or by the owner of this executable
// (trusted as much as the command itself: `sudo build/secretheap run` in a
// user's checkout). A library another user could replace would run inside
// every program it is preloaded into.
func checkLibrary(path string) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if st.Mode&0o002 != 0 {
		return fmt.Errorf("%s: writable by anyone (mode %#o): refused, anyone could run code in the programs it is preloaded into", path, st.Mode&0o777)
	}
	if !trustedOwner(int(st.Uid)) {
		return fmt.Errorf("%s: owned by uid %d, not by root, you, or this command's owner: refused", path, st.Uid)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("%s: not an ELF file: %w", path, err)
	}
	if ef.Type != elf.ET_DYN {
		return fmt.Errorf("%s: ELF type %v, want a shared object (ET_DYN)", path, ef.Type)
	}
	return nil
}

// trustedOwner reports whether a library owned by uid may be preloaded.
func trustedOwner(uid int) bool {
	if uid == 0 || uid == os.Geteuid() {
		return true
	}
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	var st syscall.Stat_t
	return syscall.Stat(exe, &st) == nil && int(st.Uid) == uid
}

// Command returns an exec.Cmd that runs name with args and libsecretheap.so
// preloaded: the environment is the current one with the library prepended
// to LD_PRELOAD (an existing LD_PRELOAD is kept after it). The library is
// found by LibraryPath and made Loadable (a link that outlives the command:
// callers that care use Loadable themselves). Callers that set cmd.Env
// themselves should build it with Env, or they lose the preload.
func Command(name string, args ...string) (*exec.Cmd, error) {
	lib, err := LibraryPath()
	if err != nil {
		return nil, err
	}
	lib, _, _, err = Loadable(lib)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = Env(os.Environ(), lib)
	return cmd, nil
}

// Env returns a copy of env (in os.Environ form) in which lib comes first in
// LD_PRELOAD, so that its OpenSSL hooks are in place before anything else
// preloaded can allocate through OpenSSL. Entries already in LD_PRELOAD stay, in order, after
// lib; an existing copy of lib is dropped so that it is not loaded twice.
// Should env hold several LD_PRELOAD entries, their libraries are merged in
// order into the one entry that remains, so none is lost whichever entry a
// loader would have picked.
func Env(env []string, lib string) []string {
	const key = "LD_PRELOAD="
	out := make([]string, 0, len(env)+1)
	var existing []string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key); ok {
			// ld.so splits LD_PRELOAD on spaces and colons.
			existing = append(existing, strings.FieldsFunc(v, func(r rune) bool {
				return r == ':' || r == ' '
			})...)
			continue
		}
		out = append(out, kv)
	}
	list := []string{lib}
	for _, e := range existing {
		if e != lib {
			list = append(list, e)
		}
	}
	return append(out, key+strings.Join(list, ":"))
}

// preloadDelims are the characters ld.so splits LD_PRELOAD on; it has no
// way to escape them.
const preloadDelims = " :\t\n"

// Preloadable reports whether LD_PRELOAD can carry path as it is: absolute
// (ld.so would resolve a relative name against the program's working
// directory) and free of the characters ld.so splits on.
func Preloadable(path string) bool {
	return filepath.IsAbs(path) && !strings.ContainsAny(path, preloadDelims)
}

// Loadable returns a name for the library lib that LD_PRELOAD can carry. A
// Preloadable lib is returned as it is. Any other (a project under "~/My
// Projects", a directory named "a:b") is given a symbolic link in a fresh
// private directory (mode 0700, made by mkdtemp so no other user can have
// placed anything there) under $XDG_RUNTIME_DIR when that is ours and safe,
// else under the system temporary directory, else /tmp; link names that
// path. cleanup removes the directory: call it once the program (and any
// child that loads the library again) is done. Either way the name is
// absolute, so the loader never resolves a relative one.
func Loadable(lib string) (name string, link bool, cleanup func(), err error) {
	abs, err := filepath.Abs(lib)
	if err != nil {
		return "", false, nil, err
	}
	if Preloadable(abs) {
		return abs, false, func() {}, nil
	}
	var lastErr error
	for _, base := range linkBases() {
		dir, err := os.MkdirTemp(base, "secretheap-preload-")
		if err != nil {
			lastErr = err
			continue
		}
		cleanup := func() { os.RemoveAll(dir) }
		name := filepath.Join(dir, LibraryName)
		if err := os.Symlink(abs, name); err != nil {
			cleanup()
			lastErr = err
			continue
		}
		return name, true, cleanup, nil
	}
	return "", false, nil, fmt.Errorf("%q cannot be put in LD_PRELOAD (it holds a space, tab, newline or colon) and no link to it could be made: %w", abs, lastErr)
}

// linkBases are the directories Loadable may make its private directory
// in, safest first: each is absolute, Preloadable, and (for
// $XDG_RUNTIME_DIR) a directory of ours that no one else can write.
func linkBases() []string {
	var out []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); Preloadable(d) && privateDir(d) {
		out = append(out, d)
	}
	if d := os.TempDir(); Preloadable(d) {
		out = append(out, d)
	}
	return append(out, "/tmp")
}

// privateDir reports whether d is a directory owned by us with no access
// for group or others, reached without a symbolic link at its end.
func privateDir(d string) bool {
	st, err := os.Lstat(d)
	if err != nil || !st.IsDir() || st.Mode().Perm()&0o077 != 0 {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Geteuid()
}
