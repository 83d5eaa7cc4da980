// Command gotarget is the Go program the attack suite (verify) reads from
// outside. It reads n bytes of secret from stdin — straight into an
// alloc.Secret with -mode secret, or into an ordinary []byte with -mode
// plain, the control — prints "ready", and holds the secret until stdin is
// closed. No other copy of the bytes is made: os.Stdin.Read writes them
// directly into the buffer, so whatever an attacker finds came from there.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/secretheap/secretheap/alloc"
)

func main() {
	mode := flag.String("mode", "secret", "secret (alloc.Secret) or plain ([]byte)")
	n := flag.Int("n", 64, "bytes of secret to read from stdin")
	flag.Parse()

	var (
		buf    []byte
		secret *alloc.Secret
	)
	switch *mode {
	case "secret":
		s, err := alloc.Read(os.Stdin, *n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gotarget:", err)
			os.Exit(1)
		}
		secret = s
		buf = s.Bytes()
	case "plain":
		buf = make([]byte, *n)
		if _, err := io.ReadFull(os.Stdin, buf); err != nil {
			fmt.Fprintln(os.Stderr, "gotarget:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "gotarget: -mode %q: want secret or plain\n", *mode)
		os.Exit(2)
	}
	fmt.Println("ready")
	// Hold the secret until stdin closes (the suite ends the process).
	_, _ = io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(buf)
	if secret != nil {
		secret.Destroy()
	}
}
