package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// What every section shares: the C allocators measured, each section's
// baseline, and building the bench/c programs.

func isSelfCheck(err error) bool { return errors.Is(err, errSelfCheck) }

// cBackend is one allocator measured by bench/c/allocbench.
type cBackend struct {
	id      string // allocbench's name
	label   string // in tables and charts
	preload bool   // needs LD_PRELOAD=libsecretheap.so
}

var cBackends = []cBackend{
	{"glibc", "glibc", false},
	{"openssl", "OPENSSL_malloc", false},
	{"secure", "OpenSSL secure heap", false},
	{"sodium", "sodium_malloc", false},
	{"memfd", "memfd_secret/alloc", false},
	{"secretheap", "secretheap C API", true},
	{"preload", "OPENSSL_malloc+secretheap", true},
}

// Baselines of each section: ratios are taken against these.
var baselines = map[string]string{
	"c-alloc":              "glibc",
	"c-alloc-cpu":          "glibc",
	"go-alloc":             "make",
	"tls-inproc":           "OpenSSL",
	"tls-tcp":              "OpenSSL",
	"startup":              "without the library",
	"openssl-suite":        "without the library",
	"startup-instructions": "without the library",
	"fork":                 "glibc",
	"fork-cost":            "commit fresh",
}

// cflags follow the root Makefile's CFLAGS_COMMON with -O2.
var cflags = []string{"-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2"}

// compileC builds one bench/c program into dir.
func compileC(root, dir, name string, libs ...string) (string, error) {
	out := filepath.Join(dir, name)
	args := append(append([]string{}, cflags...), "-I", filepath.Join(root, "cshim", "include"), "-o", out,
		filepath.Join(root, "bench", "c", name+".c"))
	args = append(args, libs...)
	if _, err := run(2*time.Minute, cleanEnv(), ccName(), args...); err != nil {
		return "", fmt.Errorf("compile %s: %w", name, err)
	}
	return out, nil
}

func (b *bench) build() error {
	if err := os.MkdirAll(b.bin, 0o755); err != nil {
		return err
	}
	if _, err := compileC(b.cfg.root, b.bin, "allocbench", "-lcrypto", "-lsodium", "-lpthread", "-ldl"); err != nil {
		return err
	}
	if _, err := compileC(b.cfg.root, b.bin, "tlsbench", "-lssl", "-lcrypto", "-lpthread", "-ldl"); err != nil {
		return err
	}
	lib := filepath.Join(b.cfg.root, "build", "libsecretheap.so")
	if _, err := os.Stat(lib); err == nil {
		b.lib = lib
		b.machine.Library = lib
	} else {
		b.note("build/libsecretheap.so not built: the library's C rows (secretheap C API, OPENSSL_malloc+secretheap, TLS and start-up with the library) are missing")
	}
	out, err := run(5*time.Minute, cleanEnv(), "go", "build", "-o", filepath.Join(b.bin, "goprobe"), "./bench/go/probe")
	if err != nil {
		b.note("Go probe not built (first use and locked memory of the Go allocators missing): %v %s", err, out)
	}
	return nil
}

// env for a C child; preload adds the library.
func (b *bench) env(preload bool, extra ...string) []string {
	if preload {
		extra = append(extra, "LD_PRELOAD="+b.lib)
	}
	return cleanEnv(extra...)
}

func (b *bench) budgetMS() int {
	if b.cfg.quick {
		return 20
	}
	return 100
}

// rotate returns the backends in the order of round r (each round starts one
// further along, so no backend always runs first on a cold machine).
func rotate[T any](xs []T, r int) []T {
	out := make([]T, 0, len(xs))
	for i := range xs {
		out = append(out, xs[(i+r)%len(xs)])
	}
	return out
}
