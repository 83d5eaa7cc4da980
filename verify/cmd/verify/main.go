// Command verify runs the attack suite (make verify): every attack against
// every target, with and without the library, then prints the results table
// and the coverage table. It exits 1 if a protected target leaks a secret the
// coverage table claims, if an attack finds nothing in an unprotected target
// (the attack is broken), or if a target or attack fails to run.
//
//	verify [-lib build/libsecretheap.so] [-tls-server build/tls_server]
//	       [-gotarget build/verify-gotarget] [-gokeys build/verify-gokeys]
//	       [-gokeys-erasing build/verify-gokeys-erasing] [-targets s_server,tls_server,go,gokeys]
//	       [-attacks mem,vm_readv,ptrace,gcore,core] [-workers 2] [-v]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/secretheap/secretheap/verify"
)

func main() {
	lib := flag.String("lib", "build/libsecretheap.so", "the library to preload")
	tlsServer := flag.String("tls-server", "build/tls_server", "examples/openssl forking server binary")
	goTarget := flag.String("gotarget", "build/verify-gotarget", "the verify Go target binary")
	goKeys := flag.String("gokeys", "build/verify-gokeys", "the verify Go keys target binary")
	goKeysErasing := flag.String("gokeys-erasing", "build/verify-gokeys-erasing", "the same, built with GOEXPERIMENT=runtimesecret")
	targets := flag.String("targets", "s_server,tls_server,go,gokeys", "targets to attack")
	attacks := flag.String("attacks", "mem,vm_readv,ptrace,gcore,core", "attacks to run")
	workers := flag.Int("workers", 2, "workers of the forking server")
	verbose := flag.Bool("v", false, "log each target run and every hit")
	timeout := flag.Duration("timeout", 600*time.Second, "bound on the whole suite")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(os.Stderr, "verify: %s: %v\n", p, err)
			return ""
		}
		return p
	}
	work, err := os.MkdirTemp("", "secretheap-verify-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
	exit := func(code int) {
		verify.KillAll()
		os.RemoveAll(work)
		os.Exit(code)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "verify: %v: stopping every target\n", s)
		exit(130)
	}()

	s := &verify.Suite{Env: verify.Env{
		Library:       abs(*lib),
		TLSServer:     abs(*tlsServer),
		GoTarget:      abs(*goTarget),
		GoKeys:        abs(*goKeys),
		GoKeysErasing: abs(*goKeysErasing),
		WorkDir:       work,
		Workers:       *workers,
	}}
	if s.Env.Library == "" {
		fmt.Fprintln(os.Stderr, "verify: the library is required (build it with make)")
		exit(1)
	}
	if *verbose {
		s.Log = os.Stderr
	}
	for _, t := range strings.Split(*targets, ",") {
		switch strings.TrimSpace(t) {
		case "s_server":
			s.Targets = append(s.Targets, verify.SServer{Alg: "ec-p256"}, verify.SServer{Alg: "rsa-2048"})
		case "tls_server":
			s.Targets = append(s.Targets, verify.ForkServer{Alg: "ec-p256"})
		case "go":
			s.Targets = append(s.Targets, verify.GoProgram{})
		case "gokeys":
			s.Targets = append(s.Targets, verify.GoKeys{})
		case "":
		default:
			fmt.Fprintf(os.Stderr, "verify: unknown target %q\n", t)
			exit(2)
		}
	}
	all := verify.Attacks()
	for _, a := range strings.Split(*attacks, ",") {
		found := false
		for _, x := range all {
			if x.Short == strings.TrimSpace(a) {
				s.Attacks = append(s.Attacks, x)
				found = true
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "verify: unknown attack %q\n", a)
			exit(2)
		}
	}

	start := time.Now()
	s.Run(ctx)
	if *verbose {
		for _, r := range s.Results {
			for _, h := range r.Hits {
				fmt.Fprintf(os.Stderr, "hit: %s %s %s %s: %s (%s, %s) in %s at %#x\n", r.Target, r.Mode,
					r.Attack, r.Proc, h.Needle.Name, h.Needle.Kind, h.Match, h.Mapping, h.Addr)
			}
		}
	}
	fmt.Printf("\nsecretheap verify: %d results in %.1fs\n\n", len(s.Results), time.Since(start).Seconds())
	fmt.Println("Attacks (found = the secret was read without the library: the attack works;")
	fmt.Println("leak = found with the library, in a kind the coverage table does not claim;")
	fmt.Println("LEAK! = a claimed secret was read: failure; - = nothing found):")
	fmt.Println()
	fmt.Print(s.Table())
	fmt.Println()
	fmt.Println("What the attacks on the processes with the library read (refused = EIO/EFAULT, or left out of the dump):")
	fmt.Println()
	fmt.Print(s.ReadsTable())
	fmt.Println()
	fmt.Println("Coverage per OpenSSL mode (what the library keeps out of reach of these attacks):")
	fmt.Println()
	fmt.Print(s.CoverageTable())
	if t := s.CopiesTable(); t != "" {
		fmt.Println()
		fmt.Println("Go keys: copies of each key and of what Go's crypto derives from it, read by /proc/PID/mem")
		fmt.Println("after 1000 uses (whole copies, +partial = only a 16-byte head or tail):")
		fmt.Println()
		fmt.Print(t)
	}
	if len(s.Notes) > 0 {
		fmt.Println()
		fmt.Println("Library reports:")
		seen := map[string]bool{}
		for _, n := range s.Notes {
			if !seen[n] {
				seen[n] = true
				fmt.Println("  " + n)
			}
		}
	}
	fails := s.Check()
	fmt.Println()
	if len(fails) > 0 {
		fmt.Printf("FAIL: %d problem(s):\n", len(fails))
		for _, f := range fails {
			fmt.Println("  " + f.String())
		}
		exit(1)
	}
	os.RemoveAll(work)
	fmt.Println("PASS: every attack found the secrets without the library and none of the claimed ones with it.")
}
