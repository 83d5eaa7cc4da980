package alloc_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	"github.com/secretheap/secretheap/internal/testutil"
	"github.com/secretheap/secretheap/secretmem"
)

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name, env, val string
		want           alloc.Config
		err            string // substring of the error; "" = valid
	}{
		{"backend secret", alloc.EnvBackend, "secret", alloc.Config{Policy: secretmem.PolicySecret}, ""},
		{"backend locked", alloc.EnvBackend, "LOCKED", alloc.Config{Policy: secretmem.PolicyLocked}, ""},
		{"backend bad", alloc.EnvBackend, "memfd", alloc.Config{}, "SECRETHEAP_BACKEND=\"memfd\" is invalid (accepted: auto, secret, locked)"},
		{"limit bytes", alloc.EnvLimit, "65536", alloc.Config{Limit: 65536}, ""},
		{"limit K", alloc.EnvLimit, "64K", alloc.Config{Limit: 64 << 10}, ""},
		{"limit M", alloc.EnvLimit, "8m", alloc.Config{Limit: 8 << 20}, ""},
		{"limit G", alloc.EnvLimit, "1G", alloc.Config{Limit: 1 << 30}, ""},
		{"limit MiB", alloc.EnvLimit, "2MiB", alloc.Config{Limit: 2 << 20}, ""},
		{"limit bad", alloc.EnvLimit, "lots", alloc.Config{}, "SECRETHEAP_LIMIT"},
		{"limit overflow", alloc.EnvLimit, "99999999999G", alloc.Config{}, "K, M or G"},
		{"idle", alloc.EnvIdleChunks, "5", alloc.Config{MaxIdleChunks: 5}, ""},
		{"idle none", alloc.EnvIdleChunks, "0", alloc.Config{MaxIdleChunks: -1}, ""},
		{"idle bad", alloc.EnvIdleChunks, "-3", alloc.Config{}, "SECRETHEAP_IDLE_CHUNKS=\"-3\" is invalid (accepted: an integer from 0 to 4096)"},
		{"on exhausted null", alloc.EnvOnExhausted, "null", alloc.Config{OnExhausted: alloc.ExhaustedNull}, ""},
		{"on exhausted abort", alloc.EnvOnExhausted, "abort", alloc.Config{OnExhausted: alloc.ExhaustedAbort}, ""},
		{"on exhausted bad", alloc.EnvOnExhausted, "retry", alloc.Config{}, "(accepted: fallback, null, abort)"},
		{"check zero", alloc.EnvCheckZero, "1", alloc.Config{CheckZero: true}, ""},
		{"check zero bad", alloc.EnvCheckZero, "yes", alloc.Config{}, "SECRETHEAP_CHECK_ZERO=\"yes\" is invalid (accepted: 0 or 1)"},
		{"empty is default", alloc.EnvLimit, "", alloc.Config{}, ""},
		// One syntax with C (internal/options): "16 K" was valid in Go and a
		// silent default in C; it is an error in both now.
		{"limit with a space", alloc.EnvLimit, "16 K", alloc.Config{}, "SECRETHEAP_LIMIT=\"16 K\" is invalid"},
		{"limit blanks around", alloc.EnvLimit, " 16K\t", alloc.Config{Limit: 16 << 10}, ""},
		{"idle above C's range", alloc.EnvIdleChunks, "4097", alloc.Config{}, "(accepted: an integer from 0 to 4096)"},
		{"idle plus sign", alloc.EnvIdleChunks, "+5", alloc.Config{}, "SECRETHEAP_IDLE_CHUNKS"},
		{"nodump", alloc.EnvNoDump, "1", alloc.Config{NoDump: true}, ""},
		{"nodump bad", alloc.EnvNoDump, "yes", alloc.Config{}, "SECRETHEAP_NODUMP=\"yes\" is invalid (accepted: 0 or 1)"},
		// C-only options are validated (fail closed), and ignored when valid.
		{"C-only variable valid", "SECRETHEAP_FORK", "dontfork", alloc.Config{}, ""},
		{"C-only variable invalid", "SECRETHEAP_FORK", "bogus", alloc.Config{}, "SECRETHEAP_FORK=\"bogus\" is invalid (accepted: copy, dontfork)"},
		{"C-only stats typo", "SECRETHEAP_STATS", "stdrr", alloc.Config{}, "(accepted: off, stderr, or a file path containing a /)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []string{alloc.EnvBackend, alloc.EnvLimit, alloc.EnvIdleChunks, alloc.EnvOnExhausted, alloc.EnvCheckZero, alloc.EnvNoDump, "SECRETHEAP_FORK", "SECRETHEAP_STATS"} {
				t.Setenv(v, "")
			}
			t.Setenv(tc.env, tc.val)
			cfg, err := alloc.ConfigFromEnv()
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg)
		})
	}
}

func TestOnExhaustedString(t *testing.T) {
	for _, o := range []alloc.OnExhausted{alloc.ExhaustedFallback, alloc.ExhaustedNull, alloc.ExhaustedAbort} {
		got, err := alloc.ParseOnExhausted(o.String())
		require.NoError(t, err)
		assert.Equal(t, o, got)
	}
}

// TestConfigNotes: what the Go allocator does not do is reported — C-only
// options that are set, SECRETHEAP_* names that are no option (main ignored
// both silently) — and the project's tool variables are not.
func TestConfigNotes(t *testing.T) {
	env := map[string]string{
		"SECRETHEAP_STATS":   "stderr",
		"SECRETHEAP_VERBOSE": "1",
		"SECRETHEAP_BACKND":  "secret",
		"SECRETHEAP_REQUIRE": "1",
		"SECRETHEAP_LIMIT":   "1M",
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	cfg, notes, err := alloc.ConfigFromEnvNotes(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, environ)
	require.NoError(t, err)
	assert.Equal(t, alloc.Config{Limit: 1 << 20}, cfg)
	all := strings.Join(notes, "\n")
	assert.Contains(t, all, "SECRETHEAP_STATS is set, but it applies to the C library only: the Go allocator ignores it")
	assert.Contains(t, all, "SECRETHEAP_VERBOSE is set, but it applies to the C library only")
	assert.Contains(t, all, "SECRETHEAP_BACKND is not an option of secretheap and is ignored")
	assert.NotContains(t, all, "SECRETHEAP_REQUIRE")
	assert.NotContains(t, all, "SECRETHEAP_LIMIT")
	assert.Len(t, notes, 3)
}

// TestDefaultReportsOnce: Default prints the notes once on stderr, and an
// invalid value is its error on every call (checked in a child: Default is
// built once per process).
func TestDefaultReportsOnce(t *testing.T) {
	if testutil.InChild(t) {
		_, err := alloc.Default()
		_, err2 := alloc.Default()
		if os.Getenv("SECRETHEAP_LIMIT") == "lots" {
			require.Error(t, err)
			require.Equal(t, err, err2)
			fmt.Println("default error:", err)
			return
		}
		require.NoError(t, err)
		return
	}
	testutil.RequireSecretMem(t)
	res := testutil.RunChild(t, testutil.ChildOptions{Env: []string{"SECRETHEAP_FORK=copy", "SECRETHEAP_BACKND=1"}})
	require.True(t, res.Clean(), res.Output)
	assert.Equal(t, 1, strings.Count(res.Output, "secretheap: SECRETHEAP_FORK is set, but it applies to the C library only"), res.Output)
	assert.Equal(t, 1, strings.Count(res.Output, "secretheap: SECRETHEAP_BACKND is not an option"), res.Output)
	res = testutil.RunChild(t, testutil.ChildOptions{Env: []string{"SECRETHEAP_LIMIT=lots"}})
	require.True(t, res.Clean(), res.Output)
	assert.Contains(t, res.Output, `default error: secretheap: SECRETHEAP_LIMIT="lots" is invalid (accepted: a size in bytes`)
}

// TestNoDump: SECRETHEAP_NODUMP=1 works in Go too (main ignored it): the
// default heap makes the process non-dumpable (checked in a child).
func TestNoDump(t *testing.T) {
	if testutil.InChild(t) {
		_, err := alloc.Default()
		require.NoError(t, err)
		d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		require.NoError(t, err)
		fmt.Println("dumpable:", d)
		return
	}
	testutil.RequireSecretMem(t)
	res := testutil.RunChild(t, testutil.ChildOptions{Env: []string{"SECRETHEAP_NODUMP=1"}})
	require.True(t, res.Clean(), res.Output)
	assert.Contains(t, res.Output, "dumpable: 0")
	res = testutil.RunChild(t, testutil.ChildOptions{Env: []string{"SECRETHEAP_NODUMP=0"}})
	require.True(t, res.Clean(), res.Output)
	assert.Contains(t, res.Output, "dumpable: 1", "control")
}
