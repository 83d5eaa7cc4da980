#!/usr/bin/env bash
# go-fuzz.sh — one Go fuzz target, the way CI runs it (make fuzz-go-short):
#
#   fuzz/go-fuzz.sh PKG FUNC FUZZTIME
#
# 1. the seed corpus (f.Add and testdata/fuzz/FUNC), deterministically, as an
#    ordinary test: a failure here is a bug, reported as is;
# 2. FUZZTIME of coverage-guided fuzzing (-fuzzminimizetime 2s, or minimising
#    one new input eats a short run).
# Step 2 is retried (up to twice) only when it failed on the fuzzing
# coordinator's own timeout ("context deadline exceeded", seen on a loaded
# machine) and found nothing: a crash (a "Failing input written to" line, or
# a failure without that timeout) is never retried.
# GO names the go command (tests use a fake one).
set -uo pipefail
pkg=$1 fn=$2 fuzztime=$3
GO=${GO:-go}

echo "go fuzz $pkg $fn: seed corpus"
"$GO" test "$pkg" -count=1 -run "^$fn\$" || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2 3; do
  echo "go fuzz $pkg $fn: fuzzing for $fuzztime (attempt $attempt)"
  "$GO" test "$pkg" -run '^$' -fuzz "^$fn\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] && exit 0
  if grep -q 'Failing input written to' "$log" || ! grep -q 'context deadline exceeded' "$log"; then
    echo "go fuzz $pkg $fn: failed (exit $rc): not retried" >&2
    exit 1
  fi
  echo "go fuzz $pkg $fn: the fuzzing coordinator timed out (context deadline exceeded) and found nothing: retrying" >&2
done
echo "go fuzz $pkg $fn: the coordinator timed out three times" >&2
exit 1
