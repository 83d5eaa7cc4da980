package preload

import (
	"os/exec"

	"github.com/secretheap/secretheap/preload/ldpreload"
)

// LibraryPath returns the absolute path of libsecretheap.so, searched as
// ldpreload.LibraryPath describes ($SECRETHEAP_LIBRARY, next to the
// executable, build/ of this module, $PREFIX/lib); the error says to run make.
// Code that must stay free of cgo imports package ldpreload directly.
func LibraryPath() (string, error) { return ldpreload.LibraryPath() }

// Command returns an exec.Cmd running name with libsecretheap.so first in
// LD_PRELOAD (see ldpreload.Command).
func Command(name string, args ...string) (*exec.Cmd, error) {
	return ldpreload.Command(name, args...)
}

// PreloadEnv returns env with lib first in LD_PRELOAD (see ldpreload.Env).
func PreloadEnv(env []string, lib string) []string { return ldpreload.Env(env, lib) }
