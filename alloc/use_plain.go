//go:build !(goexperiment.runtimesecret && linux && (amd64 || arm64))

package alloc

// erasing: built without GOEXPERIMENT=runtimesecret (or for a platform
// runtime/secret does not erase on), Secret.Do only calls f.
const erasing = false

func run(f func()) { f() }
