//go:build goexperiment.runtimesecret && linux && (amd64 || arm64)

package alloc_test

import "runtime/secret"

const wantErasing = true

func insideSecretDo() bool { return secret.Enabled() }
