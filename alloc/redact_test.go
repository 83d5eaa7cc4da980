package alloc_test

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
)

// leaks reports whether out shows testKey's bytes in any form fmt, the
// encoders or a hex/decimal dump would give them.
func leaks(out string) bool {
	flat := strings.NewReplacer(" ", "", ",", "", "0x", "").Replace(out)
	for _, pat := range []string{
		"0123456789abcdef",                // the text itself
		"3031323334353637",                // hex, any case, any separator
		"4849505152535455",                // decimal bytes
		base64Prefix,                      // base64 (encoding/json, gob of []byte)
		"\\x30\\x31", "\\u0030", "060061", // escapes, octal
	} {
		if strings.Contains(strings.ToLower(flat), strings.ToLower(pat)) || strings.Contains(out, pat) {
			return true
		}
	}
	return false
}

// base64Prefix is how encoding/json and gob's text show testKey's start.
const base64Prefix = "MDEyMzQ1Njc4OWFiY2Rl"

// holders puts a Secret everywhere a program keeps one: by value and by
// pointer, in exported and unexported struct fields, in slices and maps.
type (
	exported struct {
		Key    alloc.Secret
		KeyPtr *alloc.Secret
	}
	unexported struct {
		key    alloc.Secret
		keyPtr *alloc.Secret
	}
)

func holders(s *alloc.Secret) map[string]any {
	return map[string]any{
		"value":                   *s,
		"pointer":                 s,
		"exported fields":         exported{Key: *s, KeyPtr: s},
		"exported fields pointer": &exported{Key: *s, KeyPtr: s},
		"unexported fields":       unexported{key: *s, keyPtr: s},
		"slice of values":         []alloc.Secret{*s},
		"map of values":           map[string]alloc.Secret{"k": *s},
	}
}

// TestSecretRedactedEverywhere: no fmt verb, no encoder and no logger shows
// a Secret's bytes, whether it is held by value or by pointer, alone or
// inside a struct (exported or unexported field), a slice or a map. Each
// case has a control: the same holder with a plain []byte leaks.
func TestSecretRedactedEverywhere(t *testing.T) {
	h := newHeap(t, alloc.Config{})
	s, err := h.Wrap(bytes.Clone(testKey))
	require.NoError(t, err)
	defer s.Destroy()
	require.True(t, leaks(fmt.Sprintf("%x", testKey)), "control: the detector sees hex")

	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x", "%d", "%10v", "%-50s", "%T"}
	for name, v := range holders(s) {
		t.Run(name, func(t *testing.T) {
			for _, verb := range verbs {
				out := fmt.Sprintf(verb, v)
				assert.False(t, leaks(out), "fmt %s printed %q", verb, out)
			}
			for _, out := range []string{fmt.Sprint(v), fmt.Sprintln(v)} {
				assert.False(t, leaks(out), "fmt.Sprint printed %q", out)
			}
			if j, err := json.Marshal(v); err == nil {
				assert.False(t, leaks(string(j)), "json printed %s", j)
			}
			if name != "map of values" && name != "unexported fields" {
				x, err := xml.Marshal(v)
				if err == nil {
					assert.False(t, leaks(string(x)), "xml printed %s", x)
				}
			}
			var g bytes.Buffer
			if err := gob.NewEncoder(&g).Encode(v); err == nil {
				assert.False(t, bytes.Contains(g.Bytes(), testKey), "gob wrote the key")
			}
			for _, hname := range []string{"text", "json"} {
				var out bytes.Buffer
				var hd slog.Handler = slog.NewTextHandler(&out, nil)
				if hname == "json" {
					hd = slog.NewJSONHandler(&out, nil)
				}
				slog.New(hd).Info("key loaded", "key", v)
				assert.False(t, leaks(out.String()), "slog %s handler printed %s", hname, out.String())
			}
			var lg bytes.Buffer
			log.New(&lg, "", 0).Printf("%v %+v", v, v)
			assert.False(t, leaks(lg.String()), "log printed %s", lg.String())
		})
	}
	t.Run("redacted forms", func(t *testing.T) {
		want := "secretheap.Secret(32 bytes)"
		assert.Equal(t, want, fmt.Sprint(*s))
		assert.Equal(t, want, fmt.Sprintf("%#v", *s))
		txt, err := any(s).(interface{ MarshalText() ([]byte, error) }).MarshalText()
		require.NoError(t, err)
		assert.Equal(t, want, string(txt))
		j, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, `"`+want+`"`, string(j))
		assert.Equal(t, want, any(s).(slog.LogValuer).LogValue().String())
		for _, v := range []any{s, *s} {
			// encoding/gob ignores MarshalText (its support is
			// commented out in Go 1.26) and refuses a struct with no
			// exported fields: an error, never the bytes.
			err := gob.NewEncoder(io.Discard).Encode(v)
			assert.ErrorContains(t, err, "alloc.Secret has no exported fields")
		}
		x, err := xml.Marshal(exported{Key: *s, KeyPtr: s})
		require.NoError(t, err)
		assert.Equal(t, "<exported><Key>"+want+"</Key><KeyPtr>"+want+"</KeyPtr></exported>", string(x))
		var nilSecret *alloc.Secret
		assert.Equal(t, "<nil>", fmt.Sprint(nilSecret))
		j, err = json.Marshal(nilSecret)
		require.NoError(t, err)
		assert.Equal(t, "null", string(j))
	})
}

// TestRedactionControl: the holders above leak with a plain []byte, so the
// checks in TestSecretRedactedEverywhere can fail.
func TestRedactionControl(t *testing.T) {
	type plain struct{ key []byte }
	type plainExp struct{ Key []byte }
	for name, v := range map[string]any{"slice": testKey, "unexported": plain{testKey}, "exported": plainExp{testKey}} {
		assert.True(t, leaks(fmt.Sprintf("%v", v)), "%s: fmt %%v", name)
		assert.True(t, leaks(fmt.Sprintf("%x", v)), "%s: fmt %%x", name)
		if name != "unexported" {
			j, _ := json.Marshal(v)
			assert.True(t, leaks(string(j)), "%s: json %s", name, j)
			var out bytes.Buffer
			slog.New(slog.NewJSONHandler(&out, nil)).Info("m", "key", v)
			assert.True(t, leaks(out.String()), "%s: slog %s", name, out.String())
		}
	}
}
