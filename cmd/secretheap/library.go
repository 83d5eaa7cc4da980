package main

// Finding libsecretheap.so and preloading it. preload.LibraryPath and
// preload.PreloadEnv do the same for the tests, but package preload is the
// cgo binding of the C core: importing it would compile the allocator into
// this command and make it need cgo. Until the search moves to a cgo-free
// package, this file keeps the same order and the same checks.

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// libName is the file name of the LD_PRELOAD library built by cshim/cshim.mk.
const libName = "libsecretheap.so"

// libEnv overrides the search: when set it must name the library.
const libEnv = "SECRETHEAP_LIBRARY"

// defaultPrefix is the Makefile's default PREFIX.
const defaultPrefix = "/usr/local"

// errNoLibrary is wrapped by findLibrary's error when no candidate exists.
var errNoLibrary = errors.New(libName + " not found")

// findLibrary returns the absolute path of libsecretheap.so: explicit (from
// --library) or $SECRETHEAP_LIBRARY, which must then be the library (a typo
// is an error, not a reason to use another build); else next to this binary
// or in ../lib next to it (build/secretheap → build/libsecretheap.so,
// PREFIX/bin → PREFIX/lib); else build/ of the source tree holding the
// working directory; else $PREFIX/lib and /usr/local/lib. The first ELF
// shared object wins; the loader wants a path with a slash, and every result
// is absolute.
func findLibrary(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv(libEnv)
	}
	if explicit != "" {
		abs, err := filepath.Abs(explicit)
		if err == nil {
			err = checkLibrary(abs)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", explicit, err)
		}
		return abs, nil
	}
	cands := libraryCandidates()
	for _, c := range cands {
		if checkLibrary(c) == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w (looked in %s): run make in the secretheap tree (it builds build/%s), or set %s to its path",
		errNoLibrary, strings.Join(cands, ", "), libName, libEnv)
}

func libraryCandidates() []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		p = filepath.Clean(p)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		add(filepath.Join(dir, libName))
		add(filepath.Join(dir, "..", "lib", libName))
	}
	if wd, err := os.Getwd(); err == nil {
		if root, ok := sourceRoot(wd); ok {
			add(filepath.Join(root, "build", libName))
		}
	}
	if p := os.Getenv("PREFIX"); p != "" {
		if abs, err := filepath.Abs(p); err == nil {
			add(filepath.Join(abs, "lib", libName))
		}
	}
	add(filepath.Join(defaultPrefix, "lib", libName))
	return out
}

// sourceRoot walks up from dir to the secretheap source tree: the directory
// whose go.mod declares github.com/secretheap/secretheap.
func sourceRoot(dir string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
					if strings.Trim(f[1], `"`) == "github.com/secretheap/secretheap" {
						return dir, true
					}
					break
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// checkLibrary returns nil if path is an ELF shared object: the loader would
// reject anything else with a message that names neither us nor the fix.
func checkLibrary(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF file: %w", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		return fmt.Errorf("%s: ELF type %v, want a shared object", path, f.Type)
	}
	return nil
}

// withPreload returns env with lib first in LD_PRELOAD. Libraries already
// listed stay after it, in order (ld.so splits on colons and spaces); a copy
// of lib already there is dropped so it is not loaded twice. Ours goes first
// so that its OpenSSL hooks are installed before anything else preloaded
// can allocate through OpenSSL.
func withPreload(env []string, lib string) []string {
	out := make([]string, 0, len(env)+1)
	list := []string{lib}
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "LD_PRELOAD=")
		if !ok {
			out = append(out, kv)
			continue
		}
		for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' }) {
			if p != lib {
				list = append(list, p)
			}
		}
	}
	return append(out, "LD_PRELOAD="+strings.Join(list, ":"))
}

// setEnv returns env with key set to value, replacing any earlier setting.
func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}
