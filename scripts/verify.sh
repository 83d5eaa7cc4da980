#!/usr/bin/env bash
# scripts/verify.sh — `make verify`: the attack suite, then the hardening tests.
# The attack suite starts real programs (openssl s_server, examples/openssl
# tls_server, a Go program) with and without build/libsecretheap.so and reads
# their memory from outside; see verify/doc.go. Exit status non-zero if any
# part fails. VERIFY_ARGS passes flags to the suite (e.g. "-v").
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
BUILD=${BUILD:-build}

status=0
$GO build -o "$BUILD/verify" ./verify/cmd/verify || exit 1
$GO build -o "$BUILD/verify-gotarget" ./verify/cmd/gotarget || exit 1
$GO build -o "$BUILD/verify-gokeys" ./verify/cmd/gokeys || exit 1
GOEXPERIMENT=runtimesecret $GO build -o "$BUILD/verify-gokeys-erasing" ./verify/cmd/gokeys || exit 1

echo "== attack suite"
# shellcheck disable=SC2086
"$BUILD/verify" -lib "$BUILD/libsecretheap.so" -tls-server "$BUILD/tls_server" \
  -gotarget "$BUILD/verify-gotarget" -gokeys "$BUILD/verify-gokeys" \
  -gokeys-erasing "$BUILD/verify-gokeys-erasing" ${VERIFY_ARGS:-} || status=1

echo
echo "== hardening options (death tests in child processes)"
$GO test -count=1 -v -run 'Hardening' ./verify 2>&1 | grep -E '^(=== RUN|--- |    --- |ok|FAIL|PASS)|Error|expected|actual' || true
$GO test -count=1 -run 'Hardening' ./verify >/dev/null 2>&1 || status=1

exit $status
