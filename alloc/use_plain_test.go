//go:build !(goexperiment.runtimesecret && linux && (amd64 || arm64))

package alloc_test

const wantErasing = false

// insideSecretDo: without the experiment there is no runtime/secret.Do.
func insideSecretDo() bool { return false }
