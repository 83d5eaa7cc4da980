// Command gokeys is the Go keys target of the attack suite (verify): it
// holds a 32-byte HMAC-SHA256 key, a 32-byte Ed25519 seed and an ECDSA
// P-256 scalar read from files, uses each a thousand times, prints "ready erasing=…", and holds
// them until stdin is closed. -mode plain keeps them in Go []byte (the
// control), naive in alloc.Secrets used the obvious way, recipe in
// alloc.Secrets used through Secret.Do and alloc/signer. Build it with
// GOEXPERIMENT=runtimesecret to make Secret.Do erase what the crypto
// derives (make builds both: build/verify-gokeys and
// build/verify-gokeys-erasing).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/secretheap/secretheap/verify"
)

func main() {
	mode := flag.String("mode", verify.KeysRecipe, "plain, naive or recipe")
	hmacKey := flag.String("hmac-key", "", "file holding the 32-byte HMAC-SHA256 key")
	seed := flag.String("seed", "", "file holding the 32-byte Ed25519 seed")
	ecdsaKey := flag.String("ecdsa", "", "file holding the 32-byte ECDSA P-256 scalar (big-endian)")
	n := flag.Int("n", 1000, "uses of each key")
	flag.Parse()
	keep, err := verify.KeyWorkload(os.Stdout, *mode, verify.KeyFiles{HMAC: *hmacKey, Ed25519: *seed, ECDSA: *ecdsaKey}, *n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gokeys:", err)
		os.Exit(1)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(keep)
}
