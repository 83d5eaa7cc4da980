package alloc

// Do runs f with the secret's bytes (nil after Destroy), and cleans up what
// f leaves behind when the program is built with GOEXPERIMENT=runtimesecret
// on linux/amd64 or linux/arm64 (Erasing reports whether it is): f then runs
// under runtime/secret.Do, which erases the registers and the stack f used
// before Do returns, and every heap allocation made inside f once the
// garbage collector finds it unreachable. Built without the experiment, Do
// just calls f.
//
// So: keep the long-lived key in the Secret (out of the kernel's direct map,
// unreadable to other processes), and derive everything from it inside f —
// hmac.New, aes.NewCipher, a Go-heap copy for an API that cannot take secret
// memory — so that what the crypto derives (HMAC pads and midstates, AES
// round keys, expanded Ed25519 keys) is erased after use instead of staying
// in freed Go memory for the program's life. Return results through
// variables declared outside f (a MAC, a ciphertext, a signature); a result
// that is itself secret (an HKDF output, a shared secret) belongs in another
// Secret, copied there inside f.
//
// What Do cannot clean (see "Key material" in the package docs): global
// variables f writes, goroutines f starts, values f allocates that stay
// reachable (erased only once they are dropped), and copies made outside f.
// Pass the key to nothing that keeps it: the bytes are in secret memory,
// and an API that remembers the slice (a cache keyed by its address, a
// goroutine) outlives f.
func (s *Secret) Do(f func(key []byte)) {
	run(func() { f(s.Bytes()) })
}

// Erasing reports whether Secret.Do erases what f leaves behind: true when
// the program was built with GOEXPERIMENT=runtimesecret for linux/amd64 or
// linux/arm64, where runtime/secret.Do does the work; false otherwise, where
// Do just calls f. A program that must not run without it can check at
// start-up:
//
//	if !alloc.Erasing() {
//		log.Fatal("built without GOEXPERIMENT=runtimesecret: derived key material would stay in memory")
//	}
func Erasing() bool { return erasing }
