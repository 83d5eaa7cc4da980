package ccore

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// lazyEdges are the only calls that may close a loop between the C core's
// files: sh_init (init.c), which every entry calls before it first needs the
// allocator, and sh_fork_gate_wait (fork.c), which an allocator entry calls
// when a fork is under way or when it is the first call in a child whose
// handlers have not run, and which then finishes the child's side of the
// fork (sh_heap_postfork_child): lazy initialisation of a fork child.
var lazyEdges = map[string]bool{"sh_init": true, "sh_fork_gate_wait": true}

// TestCallGraph compiles each file of the C core (and preload/openssl.c) to
// an object, reads which functions each defines and uses (nm), and checks
// that the file-level call graph, without the lazyEdges, has no loop: every
// other call goes down the layers (init → heap → pmdcache → secretmem →
// options). It logs the edges, which docs/design.md draws.
func TestCallGraph(t *testing.T) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	for _, tool := range []string{cc, "nm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	mk, err := os.ReadFile("../../cshim/cshim.mk")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^CSHIM_CORE\s*:=\s*(.*)$`).FindSubmatch(mk)
	require.NotNil(t, m, "CSHIM_CORE line in cshim/cshim.mk")
	srcs := append(strings.Fields(string(m[1])), "preload/openssl.c")

	dir := t.TempDir()
	defs := map[string]string{}          // function -> file defining it
	uses := map[string]map[string]bool{} // file -> functions it calls
	for _, src := range srcs {
		name := filepath.Base(src)
		obj := filepath.Join(dir, strings.TrimSuffix(name, ".c")+".o")
		out, err := exec.Command(cc, "-std=c11", "-D_GNU_SOURCE", "-O2", "-fPIC", "-fvisibility=hidden",
			"-pthread", "-I../../cshim", "-c", "-o", obj, filepath.Join("../..", src)).CombinedOutput()
		require.NoError(t, err, "%s: %s", src, out)
		out, err = exec.Command("nm", obj).Output()
		require.NoError(t, err)
		uses[name] = map[string]bool{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && (f[1] == "T" || f[1] == "W"):
				defs[f[2]] = name
			case len(f) == 2 && f[0] == "U":
				uses[name][f[1]] = true
			}
		}
	}

	edges := map[string]map[string]bool{} // file -> files it calls, lazyEdges left out
	var lines []string
	for from, syms := range uses {
		calls := map[string][]string{}
		for s := range syms {
			if to, ok := defs[s]; ok && to != from {
				calls[to] = append(calls[to], s)
			}
		}
		for to, ss := range calls {
			slices.Sort(ss)
			lines = append(lines, from+" -> "+to+": "+strings.Join(ss, " "))
			for _, s := range ss {
				if !lazyEdges[s] {
					if edges[from] == nil {
						edges[from] = map[string]bool{}
					}
					edges[from][to] = true
				}
			}
		}
	}
	slices.Sort(lines)
	t.Logf("C call graph between files:\n%s", strings.Join(lines, "\n"))

	// Depth-first search for a back edge.
	const (
		unseen = iota
		open
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(f string)
	visit = func(f string) {
		state[f] = open
		path = append(path, f)
		for to := range edges[f] {
			switch state[to] {
			case open:
				i := slices.Index(path, to)
				t.Errorf("loop between C files beyond lazy initialisation: %s -> %s",
					strings.Join(path[i:], " -> "), to)
			case unseen:
				visit(to)
			}
		}
		path = path[:len(path)-1]
		state[f] = done
	}
	files := make([]string, 0, len(uses))
	for f := range uses {
		files = append(files, f)
	}
	slices.Sort(files)
	for _, f := range files {
		if state[f] == unseen {
			visit(f)
		}
	}
}
