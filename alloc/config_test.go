package alloc_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
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
		{"idle bad", alloc.EnvIdleChunks, "-3", alloc.Config{}, "SECRETHEAP_IDLE_CHUNKS=\"-3\" is invalid (accepted: an integer ≥ 0)"},
		{"on exhausted null", alloc.EnvOnExhausted, "null", alloc.Config{OnExhausted: alloc.ExhaustedNull}, ""},
		{"on exhausted abort", alloc.EnvOnExhausted, "abort", alloc.Config{OnExhausted: alloc.ExhaustedAbort}, ""},
		{"on exhausted bad", alloc.EnvOnExhausted, "retry", alloc.Config{}, "(accepted: fallback, null, abort)"},
		{"check zero", alloc.EnvCheckZero, "1", alloc.Config{CheckZero: true}, ""},
		{"check zero bad", alloc.EnvCheckZero, "yes", alloc.Config{}, "SECRETHEAP_CHECK_ZERO=\"yes\" is invalid (accepted: 0, 1)"},
		{"empty is default", alloc.EnvLimit, "", alloc.Config{}, ""},
		{"C-only variable ignored", "SECRETHEAP_FORK", "bogus", alloc.Config{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []string{alloc.EnvBackend, alloc.EnvLimit, alloc.EnvIdleChunks, alloc.EnvOnExhausted, alloc.EnvCheckZero} {
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
