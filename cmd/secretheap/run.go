package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/secretheap/secretheap/internal/ldpreload"
	"github.com/secretheap/secretheap/internal/options"
)

// runOption is one flag of `secretheap run`, made from a row of the options
// table (internal/options): its name, SECRETHEAP_* variable, syntax, default
// and meaning all come from there. Only flags given on the command line are
// exported, so variables already in the environment pass through untouched.
type runOption struct {
	flag, env, usage string
	opt              *options.Option
}

// check validates a flag's value with the library's own rules and returns
// the form to export: the canonical one (sizes in bytes, enum words in lower
// case), which the C and Go parsers read the same way. A blank value is an
// error here (in the environment it would mean the default).
func (o runOption) check(v string) (string, error) {
	val, err := o.opt.Parse(v)
	if err != nil || strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("accepted: %s", o.opt.Accepted())
	}
	return o.opt.Canonical(val), nil
}

// runOptions are the valued options, runBoolOptions the on/off ones
// (--nodump is --nodump=true), both in the table's order. SECRETHEAP_STATS
// is --stats, which run handles itself.
var runOptions, runBoolOptions = runFlagsFromTable()

func runFlagsFromTable() (valued, bools []runOption) {
	for i := range options.Table {
		o := &options.Table[i]
		if o.Kind == options.Output {
			continue
		}
		ro := runOption{flag: o.Flag(), env: o.Name, opt: o, usage: o.Meaning}
		if o.IsBool() {
			ro.usage = strings.TrimPrefix(ro.usage, "1: ")
			bools = append(bools, ro)
			continue
		}
		ro.usage += " (default " + o.Default + ")"
		valued = append(valued, ro)
	}
	return valued, bools
}

func runRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "run [options] -- PROGRAM [ARGS…]",
		"Runs PROGRAM with libsecretheap.so preloaded (prepended to LD_PRELOAD), so that\n"+
			"OpenSSL's allocations (and the C API's) live in secret memory. Each option sets\n"+
			"the SECRETHEAP_* variable named in brackets; variables already in the\n"+
			"environment pass through when the option is not given. The library's stats are\n"+
			"printed to stderr when PROGRAM exits (the human lines; --stats FILE keeps the whole\n"+
			"report, with its machine-readable key value lines, --stats json:FILE as JSON),\n"+
			"unless --quiet or --stats is given.\n"+
			"Signals sent to secretheap are passed on to PROGRAM (SIGINT and SIGQUIT only\n"+
			"when secretheap is not in the terminal's foreground: there the terminal sends\n"+
			"them to PROGRAM itself). The exit status is PROGRAM's (128+N when it was killed\n"+
			"by signal N); a killed program writes no stats.\n\n"+
			"The library is $SECRETHEAP_LIBRARY, else libsecretheap.so next to this binary\n"+
			"or in ../lib next to it, else build/ of the source tree holding the working\n"+
			"directory, else $PREFIX/lib, else /usr/local/lib. A library path that LD_PRELOAD\n"+
			"cannot carry (a space, a colon: ld.so splits on them) is preloaded through a\n"+
			"symbolic link in a private directory under $XDG_RUNTIME_DIR or the temporary\n"+
			"directory, removed when PROGRAM exits. An existing LD_PRELOAD is kept after it,\n"+
			"its relative paths made absolute (ld.so would resolve them against whatever\n"+
			"directory each program starts in).\n"+
			"The library must be a regular file, not world-writable, owned by root, you, or\n"+
			"the owner of this command: it runs inside PROGRAM.", stderr)
	values := make(map[string]*string)
	for _, o := range runOptions {
		values[o.flag] = fs.String(o.flag, "", fmt.Sprintf("%s [%s]", o.usage, o.env))
	}
	bools := make(map[string]*bool)
	for _, o := range runBoolOptions {
		bools[o.flag] = fs.Bool(o.flag, false, fmt.Sprintf("%s [%s=1]", o.usage, o.env))
	}
	statsOpt := options.Lookup("SECRETHEAP_STATS")
	statsDest := fs.String(statsOpt.Flag(), "", statsOpt.Meaning+" (instead of printing the report's human lines here) ["+statsOpt.Name+"]")
	quiet := fs.Bool("quiet", false, "do not print the stats at exit")
	library := fs.String("library", "", "path of libsecretheap.so (default: found as described above) [SECRETHEAP_LIBRARY]")
	say := fs.Bool("v", false, "say what run does: the library, how it is put in LD_PRELOAD, the variables set")
	if done, st := parseFlags(fs, args); done {
		return st
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "secretheap run: no program given (usage: secretheap run [options] -- PROGRAM [ARGS…])")
		return exitUsage
	}

	env := os.Environ()
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, o := range runOptions {
		if !given[o.flag] {
			continue
		}
		v, err := o.check(*values[o.flag])
		if err != nil {
			fmt.Fprintf(stderr, "secretheap run: --%s=%q is invalid (%v)\n", o.flag, *values[o.flag], err)
			return exitUsage
		}
		env = setEnv(env, o.env, v)
	}
	for _, o := range runBoolOptions {
		if given[o.flag] {
			v := "0"
			if *bools[o.flag] {
				v = "1"
			}
			env = setEnv(env, o.env, v)
		}
	}

	lib, err := ldpreload.Resolve(*library)
	if err != nil {
		fmt.Fprintf(stderr, "secretheap run: %v\n", err)
		return 127
	}
	// LD_PRELOAD cannot carry a path with a space or a colon (ld.so splits
	// on them, and would then try the pieces, relative ones against the
	// program's working directory): such a library is preloaded through a
	// link in a private directory instead, removed when the program ends.
	name, linked, cleanup, err := ldpreload.Loadable(lib)
	if err != nil {
		fmt.Fprintf(stderr, "secretheap run: %v\n", err)
		return 127
	}
	defer cleanup()
	env, absolutised := absolutePreloads(env)
	env = ldpreload.Env(env, name)
	if *say {
		fmt.Fprintf(stderr, "secretheap run: library %s\n", escape(lib))
		if linked {
			fmt.Fprintf(stderr, "secretheap run: its path holds a space, tab, newline or colon, which LD_PRELOAD cannot carry: preloading it through the link %s (removed at exit)\n", escape(name))
		}
		for _, a := range absolutised {
			fmt.Fprintf(stderr, "secretheap run: your LD_PRELOAD entry %s is relative: passed on as %s\n", escape(a[0]), escape(a[1]))
		}
		for _, kv := range env {
			if strings.HasPrefix(kv, "LD_PRELOAD=") || strings.HasPrefix(kv, "SECRETHEAP_") {
				fmt.Fprintf(stderr, "secretheap run: %s\n", escape(kv))
			}
		}
	}

	// Stats: an explicit --stats (or SECRETHEAP_STATS already set) is the
	// user's; otherwise the library writes them to a private temporary file
	// that we print after the program exits, so they do not interleave with
	// the program's own output.
	var statsFile string
	switch {
	case given[statsOpt.Flag()]:
		// The library takes a path only with a '/' in it (so that a
		// misspelt "stderr" is an error, not a file): make a bare file
		// name one relative to here.
		dest := *statsDest
		if d := strings.ToLower(strings.TrimSpace(dest)); d != "stderr" && d != "off" && d != "0" && d != "" && !strings.Contains(dest, "/") {
			dest = "./" + dest
		}
		env = setEnv(env, "SECRETHEAP_STATS", dest)
	case *quiet || os.Getenv("SECRETHEAP_STATS") != "":
	default:
		dir, err := os.MkdirTemp("", "secretheap-run-")
		if err != nil {
			fmt.Fprintf(stderr, "secretheap run: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		statsFile = filepath.Join(dir, "stats.json")
		env = setEnv(env, "SECRETHEAP_STATS", statsEnv(statsFile))
		if *say {
			fmt.Fprintf(stderr, "secretheap run: SECRETHEAP_STATS=%s (printed here at exit)\n", escape(statsEnv(statsFile)))
		}
	}

	status := execForward(argv, env, stderr)
	if statsFile != "" {
		printRunStats(stderr, statsFile, argv[0])
	}
	return status
}

// printRunStats prints what the library wrote at exit. A program killed by a
// signal, or one that left through _exit, writes none: say so instead of
// printing nothing.
func printRunStats(w io.Writer, path, prog string) {
	rs, err := readStats(path)
	if len(rs) == 0 {
		fmt.Fprintf(w, "secretheap: no stats from %s (it was killed, called _exit, or did not load the library)\n", filepath.Base(prog))
		return
	}
	fmt.Fprintf(w, "secretheap: stats of %s at exit:\n", filepath.Base(prog))
	b := statsSummary(rs)
	w.Write(b)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		fmt.Fprintln(w)
	}
	if err != nil { // a report cut short: a reader that stopped, a full disk
		fmt.Fprintf(w, "secretheap: the stats file is damaged after %d reports: %v\n", len(rs), err)
	}
}

// forwardedSignals are passed on to the program. SIGINT and SIGQUIT from the
// terminal already reach the program (it is in our foreground process group),
// so they are forwarded only when they cannot have come from there.
var forwardedSignals = []os.Signal{
	unix.SIGTERM, unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT,
}

// execForward starts argv with env, forwards signals, waits, and returns the
// exit status the shell would see.
func execForward(argv, env []string, stderr io.Writer) int {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "secretheap run: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "secretheap run: %v\n", err)
		return 126
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if (s == unix.SIGINT || s == unix.SIGQUIT) && inForeground() {
					continue
				}
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	return exitStatus(cmd.ProcessState, err, stderr)
}

// inForeground reports whether our process group owns the terminal on stdin:
// then a ^C reached the program directly and forwarding would deliver it twice.
func inForeground() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

func exitStatus(ps *os.ProcessState, err error, stderr io.Writer) int {
	if ps == nil {
		fmt.Fprintf(stderr, "secretheap run: %v\n", err)
		return 126
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// absolutePreloads rewrites the relative entries of env's LD_PRELOAD that
// hold a slash (ld.so would resolve them against the working directory of
// every program that starts, including children after a chdir) as absolute
// paths from our working directory, where the user meant them. Names
// without a slash are searched in the library directories and stay. It
// returns the rewrites made, as [old, new] pairs.
func absolutePreloads(env []string) ([]string, [][2]string) {
	const key = "LD_PRELOAD="
	var done [][2]string
	out := make([]string, len(env))
	for i, kv := range env {
		out[i] = kv
		v, ok := strings.CutPrefix(kv, key)
		if !ok {
			continue
		}
		parts := strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' })
		for j, p := range parts {
			if strings.Contains(p, "/") && !filepath.IsAbs(p) {
				if abs, err := filepath.Abs(p); err == nil && ldpreload.Preloadable(abs) {
					done = append(done, [2]string{p, abs})
					parts[j] = abs
				}
			}
		}
		out[i] = key + strings.Join(parts, ":")
	}
	return out, done
}
