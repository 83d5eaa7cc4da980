#!/usr/bin/env bash
# prereq.sh — checks, in well under a second, that what a make target needs
# is installed, and names the Debian package (or download) for whatever is
# missing. Run by the Makefile before building (make: build; make test: test;
# make lint: lint; make bench: bench; make demo: run; make verify: verify). The list is the README's
# Prerequisites section; keep the two together.
#
#   scripts/prereq.sh build|test|lint|bench|run|verify...
#
# Exit status 0 when everything is there, 1 (after listing all that is
# missing) when not. Environment: CC, FUZZ_CC, GO as the Makefile passes them.
set -u
cd "$(dirname "$0")/.."

CC=${CC:-gcc}
FUZZ_CC=${FUZZ_CC:-clang}
GO=${GO:-go}
missing=()
pkgs=()

need() { # need WHAT PACKAGE-OR-HINT: record one missing prerequisite
  missing+=("$1")
  pkgs+=("$2")
}

have() { command -v "$1" >/dev/null 2>&1; }

# go.mod's go line is the oldest toolchain that builds the module.
go_want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)

check_build() {
  have make || need "make" "make (apt-get install build-essential)"
  if ! have "$CC"; then
    need "C compiler $CC" "gcc (apt-get install build-essential)"
  elif ! printf '#include <openssl/evp.h>\nint main(void){return 0;}\n' |
      "$CC" -x c -fsyntax-only - >/dev/null 2>&1; then
    need "OpenSSL headers (openssl/evp.h)" "libssl-dev (apt-get install libssl-dev)"
  fi
  if ! have "$GO"; then
    if [ -x /usr/local/go/bin/go ]; then
      need "go on PATH" "export PATH=\$PATH:/usr/local/go/bin"
    else
      need "Go $go_want or later" "Go from https://go.dev/dl/ (Debian 12's golang package is too old), unpacked in /usr/local/go"
    fi
  else
    have=$("$GO" env GOVERSION 2>/dev/null | sed 's/^go//')
    if [ -n "$go_want" ] && [ -n "$have" ] &&
        [ "$(printf '%s\n%s\n' "$go_want" "$have" | sort -V | head -1)" != "$go_want" ] &&
        [ "$("$GO" env GOTOOLCHAIN)" = local ]; then
      need "Go $go_want or later (found $have, GOTOOLCHAIN=local)" "Go from https://go.dev/dl/, or unset GOTOOLCHAIN"
    fi
  fi
}

check_run() {
  have openssl || need "openssl command" "openssl (apt-get install openssl)"
}

check_test() {
  check_run
  if ! have "$FUZZ_CC"; then
    need "$FUZZ_CC (the fuzzer and sanitizer builds)" "clang (apt-get install clang)"
  else
    # libFuzzer's runtime comes in a package of its own on Debian.
    tmp=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' > "$tmp/f.c"
    if ! "$FUZZ_CC" -fsanitize=fuzzer -o "$tmp/f" "$tmp/f.c" >/dev/null 2>&1; then
      v=$("$FUZZ_CC" -dumpversion 2>/dev/null | cut -d. -f1)
      need "libFuzzer runtime for $FUZZ_CC" "libclang-rt-${v:-14}-dev (apt-get install libclang-rt-${v:-14}-dev)"
    fi
    rm -rf "$tmp"
  fi
}

check_lint() {
  have "${CLANG_FORMAT:-clang-format}" || need "clang-format (make lint: one C style)" "clang-format (apt-get install clang-format)"
  if have "$GO"; then
    have staticcheck || [ -x "$("$GO" env GOPATH)/bin/staticcheck" ] ||
      need "staticcheck (make lint)" "go install honnef.co/go/tools/cmd/staticcheck@latest"
  fi
}

check_verify() {
  check_run
  have gdb || need "gdb (the gcore attack of make verify)" "gdb (apt-get install gdb)"
}

check_bench() {
  check_run
  have hyperfine || need "hyperfine" "hyperfine (apt-get install hyperfine)"
  have valgrind || need "valgrind (start-up instruction counts)" "valgrind (apt-get install valgrind)"
  printf '#include <sodium.h>\nint main(void){return 0;}\n' | "$CC" -x c -fsyntax-only - >/dev/null 2>&1 ||
    need "libsodium headers (the C baseline)" "libsodium-dev (apt-get install libsodium-dev)"
}

for what in "$@"; do
  case $what in
    build) check_build ;;
    run) check_run ;;
    verify) check_build; check_verify ;;
    test) check_build; check_test; check_lint ;;
    lint) check_build; check_lint ;;
    bench) check_build; check_bench ;;
    *) echo "prereq.sh: unknown target $what (build, test, lint, bench, run, verify)" >&2; exit 2 ;;
  esac
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "secretheap: missing prerequisites (README.md, Prerequisites):" >&2
  declare -A seen=()
  for i in "${!missing[@]}"; do
    [ -n "${seen[${missing[$i]}]:-}" ] && continue
    seen[${missing[$i]}]=1
    printf '  %-45s install: %s\n' "${missing[$i]}" "${pkgs[$i]}" >&2
  done
  exit 1
fi
exit 0
