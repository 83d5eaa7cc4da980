package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/testutil"
)

// TestDemo runs `secretheap demo` (what `make demo` runs) and checks its
// verdicts: the key is readable from outside the plain server (the
// control), no form of it is readable from the protected one, whose
// memfd_secret mapping the kernel refuses (EIO), and the exit status says so.
func TestDemo(t *testing.T) {
	testutil.RequireSecretMem(t)
	lib := requireLibrary(t)
	requireOpenSSL(t)

	var out, errb bytes.Buffer
	code := dispatch([]string{"demo", "--json", "--library", lib, "--handshakes", "3"}, &out, &errb)
	require.Equal(t, 0, code, "stderr: %s\nstdout: %s", errb.String(), out.String())
	var rep demoReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	assert.True(t, rep.KeyReadableWithout, "the control: the key is readable in the plain server: %+v", rep.Without.Scan)
	assert.False(t, rep.KeyReadableWith, "no form of the key is readable with the library: %+v", rep.With.Scan)
	assert.True(t, rep.SecretRefused)
	errno, _ := rep.With.refusedSecret()
	assert.Equal(t, "EIO", errno)
	assert.Equal(t, 3, rep.Without.Handshakes)
	assert.Equal(t, 3, rep.With.Handshakes)
	assert.Positive(t, rep.With.SecretMaps)
	assert.Contains(t, rep.With.OpenSSLHook, "yes: every OpenSSL allocation")
	assert.Empty(t, rep.Without.Library)
	assert.Equal(t, lib, rep.With.Library)

	// The text the README's first command prints.
	out.Reset()
	errb.Reset()
	code = dispatch([]string{"demo", "--library", lib, "--handshakes", "2"}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Contains(t, out.String(), "→ the private key can be read out of the unprotected server.")
	assert.Contains(t, out.String(), "→ no copy of the private key is readable from outside the protected server.")
	assert.Contains(t, out.String(), "refused    1 memfd_secret mapping(s)")
}

// TestDemoControl: with the library's OpenSSL hooks off the protected
// server is not protected, and the demo must say the key is readable — or
// its verdict above could not fail.
func TestDemoControl(t *testing.T) {
	testutil.RequireSecretMem(t)
	lib := requireLibrary(t)
	requireOpenSSL(t)
	rep, err := demo(context.Background(), io.Discard, lib, 3, []string{"SECRETHEAP_OPENSSL=off"})
	require.NoError(t, err)
	assert.True(t, rep.KeyReadableWith, "with the hooks off the key is in ordinary memory: %+v", rep.With.Scan)
}
