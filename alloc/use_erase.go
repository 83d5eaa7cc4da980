//go:build goexperiment.runtimesecret && linux && (amd64 || arm64)

package alloc

import "runtime/secret"

// erasing: runtime/secret.Do erases registers, stack and heap on this
// platform (elsewhere it only calls f).
const erasing = true

func run(f func()) { secret.Do(f) }
