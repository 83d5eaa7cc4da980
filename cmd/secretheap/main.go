// Command secretheap answers the operator's questions about secret memory on
// one machine and runs programs with OpenSSL's allocations moved into it.
//
// Usage:
//
//	secretheap doctor [--json]                 is this machine ready for memfd_secret?
//	secretheap run [options] -- PROGRAM ARGS…  run PROGRAM with libsecretheap.so preloaded
//	secretheap inspect [--json] PID            what a running process has in secret memory
//	secretheap scan PID --hex|--string NEEDLE  read another process's memory for a secret
//	secretheap version                         (also --version)
//
// Every subcommand takes --help. doctor exits 0 when the machine is ready and 1
// when it is not; run exits with the program's status; scan exits like grep: 0
// when a needle was found, 1 when none was, 2 on error.
//
// run finds the library without `make install`: $SECRETHEAP_LIBRARY if set,
// else libsecretheap.so next to the secretheap binary (build/secretheap uses
// build/libsecretheap.so) or in ../lib next to it, else build/ of the source
// tree, else $PREFIX/lib and /usr/local/lib (see ldpreload.LibraryPath).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/secretheap/secretheap/internal/ldpreload"
)

// exitUsage is the exit status for a command line that could not be parsed,
// the same as flag.ExitOnError uses, so scripts can tell usage errors apart.
const exitUsage = 2

// command is one subcommand: its name, one line for the overview, and the
// function that parses its own flags and runs it, returning the exit status.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order the overview prints them.
var commands = []command{
	{"doctor", "check whether this machine can give programs secret memory", runDoctor},
	{"run", "run a program with libsecretheap.so preloaded, print stats at exit", runRun},
	{"inspect", "show what a running process keeps in secret memory", runInspect},
	{"scan", "search another process's readable memory for a secret", runScan},
	{"version", "print the version of this command", runVersion},
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch picks the subcommand; split from main so tests can run the CLI in
// process and read its output.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		return runVersion(nil, stdout, stderr)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "secretheap: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "secretheap: secret memory (memfd_secret) for programs and their keys.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: secretheap COMMAND [options] [arguments]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "secretheap COMMAND --help" for the options of one command.`)
}

// newFlagSet builds a FlagSet whose --help text starts with the command's
// synopsis and a paragraph on what it does.
func newFlagSet(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: secretheap %s\n\n%s\n", synopsis, about)
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(out, "\nOptions:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args and reports the status to exit with when parsing
// ends the command: 0 for --help, exitUsage for a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, status int) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return false, 0
	case errors.Is(err, flag.ErrHelp):
		return true, 0
	default:
		return true, exitUsage
	}
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "version",
		"Prints the version of secretheap (also --version): the command's, the Go\n"+
			"module's and, for the library in the same tree, libsecretheap.so's\n"+
			"(SECRETHEAP_VERSION); `secretheap inspect` shows the version a running\n"+
			"process has loaded.", stderr)
	if done, st := parseFlags(fs, args); done {
		return st
	}
	fmt.Fprintf(stdout, "secretheap %s\n", ldpreload.Version)
	return 0
}
