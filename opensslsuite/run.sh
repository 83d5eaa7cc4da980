#!/usr/bin/env bash
# Runs OpenSSL's own test suite (`make test`) in the builds that build.sh
# made, without and with libsecretheap.so preloaded, and compares the
# per-recipe results.
#
#   opensslsuite/run.sh [TESTS...]
#
# Environment:
#   STYLES   link styles to run, default "debian upstream" (see build.sh)
#   MODES    "none" (no library) and SECRETHEAP_OPENSSL modes, default
#            "none all secure"
#   LIB      the library, default build/libsecretheap.so (made absolute)
#   OUT      results directory, default build/opensslsuite
#   JOBS     HARNESS_JOBS for the suite, default 2
#   SECRETHEAP_OPENSSL_CACHE  where build.sh put the builds
#   SUMMARY_ONLY=1  run nothing: summarise the results already in $OUT
#
# Writes $OUT/<style>-<mode>.log (make test's output), .tsv (recipe and
# result: ok, skipped, failed) and .cpu (user and system seconds of every
# process of the run), then $OUT/summary.txt: counts and CPU per run and
# every recipe that passes without the library but not with it. Such a
# recipe fails the run unless opensslsuite/exceptions.txt lists it with its
# reason (columns: recipe, style or *, mode or *, reason).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CACHE=${SECRETHEAP_OPENSSL_CACHE:-/var/cache/secretheap-openssl}
STYLES=${STYLES:-debian upstream}
MODES=${MODES:-none all secure}
LIB=$(realpath "${LIB:-$root/build/libsecretheap.so}")
OUT=${OUT:-$root/build/opensslsuite}
JOBS=${JOBS:-2}
TESTS_ARG="$*"
mkdir -p "$OUT"
[ -f "$LIB" ] || { echo "opensslsuite: $LIB missing: run make" >&2; exit 2; }

# clock ticks of CPU used by this shell's waited-for children (utime, stime).
ticks() { awk '{print $16, $17}' "/proc/$$/stat"; }
hz=$(getconf CLK_TCK)

parse() { # make test output → "recipe<TAB>ok|skipped|failed"
  sed -nE 's/^[0-9]+-(test_[A-Za-z0-9_.-]+)\.t \.*[ ]*(.*)$/\1\t\2/p' "$1" |
    awk -F'\t' '{ r = $2 ~ /^ok/ ? "ok" : $2 ~ /^skipped/ ? "skipped" : $2 == "" ? "" : "failed";
                  if (r != "") res[$1] = r; else if (!($1 in res)) res[$1] = "failed" }
                END { for (k in res) print k "\t" res[k] }' | sort
}

for style in $STYLES; do
  [ "${SUMMARY_ONLY:-}" = 1 ] && break
  dir=$CACHE/$style
  [ -e "$dir/.built" ] || { echo "opensslsuite: $dir not built: run opensslsuite/build.sh" >&2; exit 2; }
  for mode in $MODES; do
    name=$style-$mode
    envs=(env -u LD_PRELOAD -u SECRETHEAP_OPENSSL -u SECRETHEAP_STATS)
    [ "$mode" = none ] || envs+=(LD_PRELOAD="$LIB" SECRETHEAP_OPENSSL="$mode")
    echo "opensslsuite: $name${TESTS_ARG:+ (TESTS=$TESTS_ARG)}" >&2
    read -r u0 s0 < <(ticks)
    set +e
    (cd "$dir" && "${envs[@]}" HARNESS_JOBS="$JOBS" nice make test ${TESTS_ARG:+TESTS="$TESTS_ARG"}) \
      >"$OUT/$name.log" 2>&1
    rc=$?
    set -e
    read -r u1 s1 < <(ticks)
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v rc=$rc \
      'BEGIN { printf "%.1f %.1f %d\n", u / hz, s / hz, rc }' >"$OUT/$name.cpu"
    parse "$OUT/$name.log" >"$OUT/$name.tsv"
  done
done

# Summary: counts and CPU per run, then regressions against "none".
{
  printf "%-18s %6s %6s %7s %9s %9s %9s\n" run passed failed skipped user_s sys_s cpu_s
  for style in $STYLES; do for mode in $MODES; do
    f=$OUT/$style-$mode
    [ -f "$f.tsv" ] || continue
    read -r u s rc <"$f.cpu"
    printf "%-18s %6d %6d %7d %9s %9s %9.1f\n" "$style-$mode" \
      "$(grep -c $'\tok$' "$f.tsv" || true)" "$(grep -c $'\tfailed$' "$f.tsv" || true)" \
      "$(grep -c $'\tskipped$' "$f.tsv" || true)" "$u" "$s" "$(echo "$u $s" | awk '{print $1+$2}')"
  done; done
} >"$OUT/summary.txt"
bad=0
for style in $STYLES; do
  base=$OUT/$style-none.tsv
  [ -f "$base" ] || continue
  for mode in $MODES; do
    [ "$mode" = none ] && continue
    f=$OUT/$style-$mode.tsv
    [ -f "$f" ] || continue
    join -t $'\t' "$base" "$f" | awk -F'\t' '$2 == "ok" && $3 != "ok" {print $1 "\t" $3}' |
      while IFS=$'\t' read -r recipe res; do
        reason=$(awk -F'\t' -v r="$recipe" -v s="$style" -v m="$mode" \
          '!/^#/ && $1 == r && ($2 == s || $2 == "*") && ($3 == m || $3 == "*") {print $4; exit}' \
          "$here/exceptions.txt" 2>/dev/null || true)
        if [ -n "$reason" ]; then
          echo "$style-$mode: $recipe $res (listed: $reason)"
        else
          echo "$style-$mode: $recipe $res: REGRESSION (passes without the library)"
        fi
      done
  done
done >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
grep -q 'REGRESSION' "$OUT/summary.txt" && bad=1
exit $bad
