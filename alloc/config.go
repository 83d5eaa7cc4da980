package alloc

import (
	"fmt"
	"os"
	"strconv"
	"strings"

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

// ParseOnExhausted parses a SECRETHEAP_ON_EXHAUSTED value.
func ParseOnExhausted(s string) (OnExhausted, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "fallback":
		return ExhaustedFallback, nil
	case "null":
		return ExhaustedNull, nil
	case "abort":
		return ExhaustedAbort, nil
	}
	return 0, fmt.Errorf("invalid on-exhausted value %q (accepted: fallback, null, abort)", s)
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
}

// Environment variables read by ConfigFromEnv (the same names as the C
// library; SECRETHEAP_OPENSSL, _SECURE_RESERVE, _FORK, _STATS, _VERBOSE and
// _NODUMP are C-only and ignored here).
const (
	EnvBackend     = "SECRETHEAP_BACKEND"
	EnvLimit       = "SECRETHEAP_LIMIT"
	EnvIdleChunks  = "SECRETHEAP_IDLE_CHUNKS"
	EnvOnExhausted = "SECRETHEAP_ON_EXHAUSTED"
	EnvCheckZero   = "SECRETHEAP_CHECK_ZERO"
)

// ConfigFromEnv builds a Config from the SECRETHEAP_* environment variables.
// An unset or empty variable keeps the default; an invalid value is an error
// naming the variable and the accepted values.
func ConfigFromEnv() (Config, error) {
	return configFromLookup(os.LookupEnv)
}

func configFromLookup(lookup func(string) (string, bool)) (Config, error) {
	var cfg Config
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	if v, ok := get(EnvBackend); ok {
		p, err := secretmem.ParsePolicy(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretheap: %s=%q is invalid (accepted: auto, secret, locked): %w", EnvBackend, v, err)
		}
		cfg.Policy = p
	}
	if v, ok := get(EnvLimit); ok {
		n, err := ParseSize(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretheap: %s=%q is invalid (accepted: a byte count with optional K, M or G suffix, 0 for no limit): %w", EnvLimit, v, err)
		}
		cfg.Limit = n
	}
	if v, ok := get(EnvIdleChunks); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return Config{}, fmt.Errorf("secretheap: %s=%q is invalid (accepted: an integer ≥ 0)", EnvIdleChunks, v)
		}
		if n == 0 {
			n = -1 // keep none; Config's 0 means the default
		}
		cfg.MaxIdleChunks = n
	}
	if v, ok := get(EnvOnExhausted); ok {
		o, err := ParseOnExhausted(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretheap: %s=%q is invalid (accepted: fallback, null, abort)", EnvOnExhausted, v)
		}
		cfg.OnExhausted = o
	}
	if v, ok := get(EnvCheckZero); ok {
		switch v {
		case "0":
		case "1":
			cfg.CheckZero = true
		default:
			return Config{}, fmt.Errorf("secretheap: %s=%q is invalid (accepted: 0, 1)", EnvCheckZero, v)
		}
	}
	return cfg, nil
}

// ParseSize parses a byte count with an optional K, M or G suffix (powers of
// 1024, case-insensitive, an optional trailing "B" or "iB" is accepted).
func ParseSize(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "IB")
	t = strings.TrimSuffix(t, "B")
	shift := 0
	switch {
	case strings.HasSuffix(t, "K"):
		shift = 10
	case strings.HasSuffix(t, "M"):
		shift = 20
	case strings.HasSuffix(t, "G"):
		shift = 30
	}
	if shift != 0 {
		t = t[:len(t)-1]
	}
	n, err := strconv.ParseUint(strings.TrimSpace(t), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a size: %q", s)
	}
	if n > (^uint64(0))>>shift {
		return 0, fmt.Errorf("size overflows: %q", s)
	}
	return n << shift, nil
}
