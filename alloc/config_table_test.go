package alloc

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/internal/options"
)

// TestConfigFromTable: Config has exactly one field per option of scope Both
// in the options table (internal/options, its Config column), and
// configFromEnv sets each from its variable: an option added to the table
// but not to Config or its reading, or a Config field with no option, fails
// here. The C-only options have no Config field.
func TestConfigFromTable(t *testing.T) {
	typ := reflect.TypeOf(Config{})
	named := map[string]bool{}
	for _, o := range options.Table {
		if o.Scope != options.Both {
			assert.Empty(t, o.Config, "%s is C-only and has no Config field", o.Name)
			continue
		}
		require.NotEmpty(t, o.Config, "%s (scope Both) names no Config field", o.Name)
		_, ok := typ.FieldByName(o.Config)
		require.True(t, ok, "Config has no field %s for %s", o.Config, o.Name)
		named[o.Config] = true

		// A value other than the default must reach the field.
		var raw string
		switch o.Kind {
		case options.Enum:
			raw = o.Values[len(o.Values)-1]
		case options.Size:
			raw = "12K"
		case options.Int:
			raw = strconv.FormatInt(o.Max, 10)
		}
		require.NotEqual(t, o.Default, raw, o.Name)
		env := map[string]string{o.Name: raw}
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		cfg, _, err := configFromEnv(lookup, []string{o.Name + "=" + raw})
		require.NoError(t, err, "%s=%s", o.Name, raw)
		def, _, err := configFromEnv(func(string) (string, bool) { return "", false }, nil)
		require.NoError(t, err)
		assert.NotEqual(t, reflect.ValueOf(def).FieldByName(o.Config).Interface(), reflect.ValueOf(cfg).FieldByName(o.Config).Interface(),
			"%s=%s does not reach Config.%s", o.Name, raw, o.Config)
		for i := 0; i < typ.NumField(); i++ {
			if f := typ.Field(i).Name; f != o.Config {
				assert.Equal(t, reflect.ValueOf(def).Field(i).Interface(), reflect.ValueOf(cfg).Field(i).Interface(),
					"%s=%s changed Config.%s too", o.Name, raw, f)
			}
		}
	}
	for i := 0; i < typ.NumField(); i++ {
		assert.True(t, named[typ.Field(i).Name], "Config.%s has no option in internal/options", typ.Field(i).Name)
	}
	for _, name := range []string{EnvBackend, EnvLimit, EnvIdleChunks, EnvOnExhausted, EnvCheckZero, EnvNoDump} {
		o := options.Lookup(name)
		if assert.NotNil(t, o, name) {
			assert.Equal(t, options.Both, o.Scope, name)
		}
	}
}
