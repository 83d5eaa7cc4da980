package ldpreload

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVersionShared checks that the version has one value everywhere: the
// header the library and pkg-config take it from, the header's numeric
// parts, this package, and the README.
func TestVersionShared(t *testing.T) {
	h, err := os.ReadFile("../../cshim/include/secretheap.h")
	require.NoError(t, err)
	def := func(name string) string {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` "?([^"\s]+)"?$`).FindSubmatch(h)
		require.NotNil(t, m, "no #define %s in cshim/include/secretheap.h", name)
		return string(m[1])
	}
	assert.Equal(t, def("SECRETHEAP_VERSION"), Version, "ldpreload.Version and SECRETHEAP_VERSION differ")
	parts := def("SECRETHEAP_VERSION_MAJOR") + "." + def("SECRETHEAP_VERSION_MINOR") + "." + def("SECRETHEAP_VERSION_PATCH")
	assert.Equal(t, parts, Version, "SECRETHEAP_VERSION_{MAJOR,MINOR,PATCH}")

	pc, err := os.ReadFile("../../cshim/secretheap.pc.in")
	require.NoError(t, err)
	assert.Contains(t, string(pc), "Version: @VERSION@", "pkg-config takes the version from the header (cshim/cshim.mk)")

	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`secretheap (\d+\.\d+\.\d+)`).FindAllStringSubmatch(string(readme), -1) {
		assert.Equal(t, Version, m[1], "README names another version")
	}
	assert.True(t, strings.Contains(string(readme), "secretheap "+Version), "README names the version as \"secretheap %s\"", Version)
}
