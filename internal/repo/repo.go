// Package repo finds the secretheap source tree and what `make` built in it
// (build/): the one finder the tests, the benchmark report and the library
// search of the secretheap command share.
package repo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ModulePath is the module the root's go.mod declares.
const ModulePath = "github.com/secretheap/secretheap"

// BuildDir is where `make` puts what it builds, under the root.
const BuildDir = "build"

// RootFrom walks up from dir to the directory whose go.mod declares
// ModulePath (the benchmark report's own go.mod, in cmd/benchreport, is
// passed by).
func RootFrom(dir string) (string, bool) {
	for {
		if isOurGoMod(filepath.Join(dir, "go.mod")) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Root is RootFrom the working directory (go test runs in the package's
// directory).
func Root() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root, ok := RootFrom(wd)
	if !ok {
		return "", fmt.Errorf("no go.mod of %s above %s", ModulePath, wd)
	}
	return root, nil
}

// Built returns the path of name under the root's build directory, and an
// error naming the fix when it is not there.
func Built(name string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, BuildDir, name)
	if _, err := os.Stat(p); err != nil {
		return p, fmt.Errorf("%s missing: run make (%v)", p, err)
	}
	return p, nil
}

// isOurGoMod reports whether the file at path is a go.mod whose module line
// names ModulePath.
func isOurGoMod(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == ModulePath
		}
	}
	return false
}
