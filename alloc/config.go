package alloc

import (
	"fmt"
	"os"

	"github.com/secretheap/secretheap/internal/options"
	"github.com/secretheap/secretheap/secretmem"
)

// OnExhausted says what Alloc does when secret memory runs out (the Limit or
// RLIMIT_MEMLOCK is reached).
type OnExhausted uint8

const (
	// ExhaustedFallback is the default. The C library falls back to
	// ordinary memory there; Go never hands out unprotected memory, so in Go
	// it behaves exactly like ExhaustedNull.
	ExhaustedFallback OnExhausted = iota
	// ExhaustedNull: Alloc returns an error wrapping ErrExhausted.
	ExhaustedNull
	// ExhaustedAbort: Alloc panics with a message naming the limit.
	ExhaustedAbort
)

// String returns the name used by SECRETHEAP_ON_EXHAUSTED.
func (o OnExhausted) String() string {
	switch o {
	case ExhaustedFallback:
		return "fallback"
	case ExhaustedNull:
		return "null"
	case ExhaustedAbort:
		return "abort"
	}
	return fmt.Sprintf("OnExhausted(%d)", uint8(o))
}

// ParseOnExhausted parses a SECRETHEAP_ON_EXHAUSTED value (the syntax of
// internal/options; blank is the default, fallback).
func ParseOnExhausted(s string) (OnExhausted, error) {
	v, err := options.Lookup(EnvOnExhausted).Parse(s)
	if err != nil {
		return 0, err
	}
	return OnExhausted(v.Index), nil
}

// Config configures a Heap. The zero value is the default configuration.
type Config struct {
	// Policy chooses the backend: auto (memfd_secret, else locked memory,
	// reported loudly), secret (fail if memfd_secret is unavailable), locked.
	Policy secretmem.Policy
	// Limit bounds the secret memory mapped, in bytes; 0 leaves only
	// RLIMIT_MEMLOCK as the bound.
	Limit uint64
	// MaxIdleChunks bounds the wholly free chunks kept mapped for reuse.
	// 0 means the default (2); a negative value keeps none. Chunks that
	// hold nothing but the empty slabs the heap keeps for reuse (one per
	// class and shard at most) count against the bound, which for them is
	// at least 1: with a negative value one such chunk may stay mapped, so
	// that an Alloc/Free pair never maps and unmaps a chunk.
	MaxIdleChunks int
	// OnExhausted says what Alloc does when memory runs out.
	OnExhausted OnExhausted
	// CheckZero makes Alloc verify that a block is still all zero when it
	// is handed out again, and panic naming a write-after-free otherwise.
	CheckZero bool
	// NoDump makes New call prctl(PR_SET_DUMPABLE, 0) for the process: no
	// core dumps, and no ptrace or /proc/PID/mem by same-user processes
	// without CAP_SYS_PTRACE. Process-wide, and never undone by Close.
	NoDump bool
}

// Environment variables read by ConfigFromEnv. They, their syntax and
// defaults are the C library's: one table, internal/options. The C-only ones
// (SECRETHEAP_OPENSSL, _SECURE_RESERVE, _FORK, _STATS, _VERBOSE) are
// validated too, and reported as ignored when set.
const (
	EnvBackend     = "SECRETHEAP_BACKEND"
	EnvLimit       = "SECRETHEAP_LIMIT"
	EnvIdleChunks  = "SECRETHEAP_IDLE_CHUNKS"
	EnvOnExhausted = "SECRETHEAP_ON_EXHAUSTED"
	EnvCheckZero   = "SECRETHEAP_CHECK_ZERO"
	EnvNoDump      = "SECRETHEAP_NODUMP"
)

// ConfigFromEnv builds a Config from the SECRETHEAP_* environment variables.
// An unset or blank variable keeps the default; an invalid value (of any
// option, the C-only ones included) is an error naming the variable and the
// accepted values. Default prints, once, the notes ConfigFromEnv does not
// return: C-only options that are set, and SECRETHEAP_* names that are no
// option.
func ConfigFromEnv() (Config, error) {
	cfg, _, err := configFromEnv(os.LookupEnv, os.Environ())
	return cfg, err
}

// configFromEnv is ConfigFromEnv with its notes.
func configFromEnv(lookup func(string) (string, bool), environ []string) (Config, []string, error) {
	e, err := options.Read(lookup, environ)
	if err != nil {
		return Config{}, nil, err
	}
	var cfg Config
	cfg.Policy = secretmem.Policy(e.Values[EnvBackend].Index)
	cfg.Limit = e.Values[EnvLimit].N
	if n := int(e.Values[EnvIdleChunks].N); n == 0 {
		cfg.MaxIdleChunks = -1 // keep none; Config's 0 means the default
	} else if e.Set[EnvIdleChunks] {
		cfg.MaxIdleChunks = n
	}
	cfg.OnExhausted = OnExhausted(e.Values[EnvOnExhausted].Index)
	cfg.CheckZero = e.Values[EnvCheckZero].N == 1
	cfg.NoDump = e.Values[EnvNoDump].N == 1
	notes := e.Notes
	for _, o := range options.Table {
		if o.Scope == options.COnly && e.Set[o.Name] {
			notes = append(notes, fmt.Sprintf("%s is set, but it applies to the C library only: the Go allocator ignores it", o.Name))
		}
	}
	return cfg, notes, nil
}

// ParseSize parses a byte count with an optional K, M or G suffix (powers of
// 1024, case-insensitive, optionally followed by B or iB): the size syntax of
// internal/options, which the C library shares. Blank is an error.
func ParseSize(s string) (uint64, error) {
	return options.ParseSize(s)
}
