// Package verify is the attack suite behind `make verify`: it starts real
// programs that hold key material (openssl s_server, the forking TLS server
// from examples/openssl, a Go program holding an alloc.Secret, a Go program
// using an HMAC key and an Ed25519 seed with and without runtime/secret),
// reads their memory from outside the way an attacker with the same uid
// would, and searches what it read for the secrets.
//
// Every attack runs twice: against the program with the library, where it
// must find nothing the coverage table claims is protected, and against the
// same program without it, where it must find the secret — a run that finds
// nothing there proves only that the attack is broken, so the suite fails.
//
// Vocabulary:
//
//	needle:   a byte string whose presence in a memory image means a secret
//	          leaked (a key scalar in one byte order, a PEM line, a TLS secret).
//	kind:     the class a needle belongs to (scalar-be, scalar-le, pem, tls);
//	          the coverage table is written per kind and OpenSSL mode.
//	image:    what one attack read from one process: mappings with their
//	          names and the bytes that could be read.
//	hit:      one needle found in one image, with the mapping it sat in.
package verify
