package alloc_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secretheap/secretheap/alloc"
	statstable "github.com/secretheap/secretheap/internal/stats"
)

// TestStatsTable: alloc.Stats and alloc.ClassStats have exactly the fields
// the stats table (internal/stats) gives a Go name, so a value added to the
// Go struct alone, or to the table alone, fails here.
func TestStatsTable(t *testing.T) {
	check := func(typ reflect.Type, table []statstable.Field, skip string) {
		named := map[string]bool{}
		for _, f := range table {
			if f.Go == "" {
				continue
			}
			named[f.Go] = true
			_, ok := typ.FieldByName(f.Go)
			assert.True(t, ok, "internal/stats names %s.%s (key %s), which does not exist", typ.Name(), f.Go, f.Key)
		}
		for i := 0; i < typ.NumField(); i++ {
			if n := typ.Field(i).Name; n != skip {
				assert.True(t, named[n], "%s.%s has no row in internal/stats", typ.Name(), n)
			}
		}
	}
	check(reflect.TypeOf(alloc.Stats{}), statstable.Fields, "Classes")
	check(reflect.TypeOf(alloc.ClassStats{}), statstable.ClassFields, "")
	assert.Equal(t, alloc.NumClasses, statstable.NumClasses)
}

// TestStatsJSON: the Go JSON has the C report's keys for the values both
// have (read back with the reader the CLI uses), with their values.
func TestStatsJSON(t *testing.T) {
	s := alloc.Stats{Classes: make([]alloc.ClassStats, alloc.NumClasses), LiveBlocks: 3, MemlockBypass: true,
		MemlockLimit: ^uint64(0), Model: 2}
	s.Classes[1] = alloc.ClassStats{Size: 32, LiveBlocks: 2, Slabs: 1}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	r, err := statstable.ReadLast(b)
	require.NoError(t, err)
	var want []string
	for _, f := range statstable.Fields {
		if f.Go != "" {
			want = append(want, f.Key)
		}
	}
	var got []string
	for k := range r.Values {
		got = append(got, k)
	}
	assert.ElementsMatch(t, want, got)
	assert.Equal(t, uint64(3), r.Values["live_blocks"])
	assert.Equal(t, uint64(1), r.Values["memlock_bypass"])
	assert.Equal(t, ^uint64(0), r.Values["memlock_limit"])
	assert.Equal(t, uint64(2), r.Values["model"])
	require.Len(t, r.Classes, alloc.NumClasses)
	assert.Equal(t, map[string]uint64{"size": 32, "requested_bytes": 0, "reserved_bytes": 0, "live_blocks": 2, "slabs": 1}, r.Classes[1])
}
