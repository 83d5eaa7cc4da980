#!/usr/bin/env bash
# demo.sh — run by `make demo` (which builds everything first).
#
# Starts `openssl s_server` twice on 127.0.0.1 with a throwaway ECDSA P-256 key:
# once as it is, once under `secretheap run` (libsecretheap.so preloaded). After
# a few TLS handshakes against each, `secretheap scan` reads the server's memory
# from outside (/proc/PID/mem, as root or the same user) looking for the private
# key in three forms:
#   - the 32-byte scalar, big-endian (as in the key file's DER and in decoded
#     ASN.1 buffers),
#   - the same scalar little-endian (how a BIGNUM holds it on x86-64: 64-bit
#     limbs, least significant first),
#   - the second base64 line of the PEM file (the text of the key file: it
#     encodes scalar bytes 12..31; the first line is the same for every P-256
#     key, so it proves nothing).
# Whatever is found is printed, with the library too.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SECRETHEAP_BIN:-build/secretheap}
LIB=${SECRETHEAP_LIBRARY:-build/libsecretheap.so}
HANDSHAKES=${HANDSHAKES:-5}

if [ -t 1 ]; then
  B=$'\e[1m' RED=$'\e[31m' GRN=$'\e[32m' YEL=$'\e[33m' DIM=$'\e[2m' RST=$'\e[0m'
else
  B='' RED='' GRN='' YEL='' DIM='' RST=''
fi
say()  { printf '%s\n' "$*"; }
step() { printf '\n%s== %s%s\n' "$B" "$*" "$RST"; }
die()  { printf '%sdemo: %s%s\n' "$RED" "$*" "$RST" >&2; exit 1; }

for tool in openssl "$BIN"; do
  command -v "$tool" >/dev/null || [ -x "$tool" ] || die "$tool not found (run make first)"
done

# Reading another process's memory needs root, or the same uid and (under Yama
# ptrace_scope 1, the default on Ubuntu) being its ancestor: `secretheap scan`
# is the servers' sibling here.
if [ "$(id -u)" -ne 0 ] && [ "$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)" != 0 ]; then
  die "Yama ptrace_scope is $(cat /proc/sys/kernel/yama/ptrace_scope): the outside read needs root here (sudo make demo)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/secretheap-demo.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "1. A throwaway ECDSA P-256 key and certificate (in $TMP)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=secretheap-demo -days 1 \
  >/dev/null 2>&1 || die "openssl req failed"
# The private scalar from `openssl pkey -text`: the hex lines between "priv:"
# and "pub:", left-padded to 32 bytes (-text drops leading zero bytes and adds
# a 00 when the top bit is set).
hex=$(openssl pkey -in "$TMP/key.pem" -text -noout |
  awk '/^priv:/{on=1; next} /^pub:/{on=0} on' | tr -d ' :\n')
hex=${hex#00}
while [ ${#hex} -lt 64 ]; do hex="00$hex"; done
[ ${#hex} -eq 64 ] || die "could not read the private scalar (got '$hex')"
BE=$hex
LE=$(printf '%s' "$BE" | fold -w2 | tac | tr -d '\n')
PEMLINE=$(sed -n '3p' "$TMP/key.pem")
PEMHEX=$(printf '%s' "$PEMLINE" | od -An -tx1 -v | tr -d ' \n')
say "private scalar (big-endian):    ${BE:0:16}…"
say "same, little-endian (BIGNUM):   ${LE:0:16}…"
say "PEM file, 2nd base64 line:      ${PEMLINE:0:16}…"

# start_server LABEL [PREFIX…]: starts s_server on a free port (it binds port
# 0 and prints the one it got), sets SERVER (the s_server pid), PORT, LOG.
start_server() {
  local label=$1; shift
  LOG="$TMP/$label.log"
  # -naccept: the server exits by itself after the last handshake, so that
  # the library's exit-time stats get written (a killed process writes none).
  "$@" openssl s_server -key "$TMP/key.pem" -cert "$TMP/cert.pem" \
    -accept 127.0.0.1:0 -www -naccept $((HANDSHAKES + 1)) >"$LOG" 2>&1 &
  local launcher=$!
  PIDS+=("$launcher")
  PORT=''
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG" | head -1)
    [ -n "$PORT" ] && break
    kill -0 "$launcher" 2>/dev/null || { cat "$LOG" >&2; die "$label server exited"; }
    sleep 0.05
  done
  [ -n "$PORT" ] || { cat "$LOG" >&2; die "$label server did not start"; }
  # Under `secretheap run` the launcher is the wrapper; the server is its child.
  SERVER=$launcher
  if [ $# -gt 0 ]; then
    SERVER=$(pgrep -P "$launcher" -x openssl | head -1)
    [ -n "$SERVER" ] || die "no s_server child under $*"
  fi
  LAUNCHER=$launcher
}

handshakes() {
  local n=$1 ok=0
  for _ in $(seq "$n"); do
    if printf 'GET / HTTP/1.0\r\n\r\n' |
       openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$TMP/cert.pem" \
         -verify_return_error -quiet >/dev/null 2>&1; then
      ok=$((ok + 1))
    fi
  done
  say "$ok of $n TLS handshakes completed (certificate verified)"
  [ "$ok" -eq "$n" ] || die "handshakes failed; server log: $(cat "$LOG")"
}

# scan_server PROTECTED: reads the server's memory for the three needles.
scan_server() {
  local protected=$1 out rc=0
  out=$("$BIN" scan "$SERVER" \
    --hex "big-endian scalar=$BE" --hex "little-endian scalar=$LE" \
    --hex "PEM text=$PEMHEX" 2>&1) || rc=$?
  [ "$rc" -le 1 ] || die "scan failed: $out"
  while IFS= read -r line; do
    case "$line" in
      FOUND*)
        if [ "$protected" = yes ]; then printf '%s%s%s\n' "$YEL" "$line" "$RST"
        else printf '%s%s%s\n' "$RED" "$line" "$RST"; fi ;;
      "not found"*) printf '%s%s%s\n' "$GRN" "$line" "$RST" ;;
      *) printf '%s%s%s\n' "$DIM" "$line" "$RST" ;;
    esac
  done <<<"$out"
  FOUND_RC=$rc
}

# finish_server: the last connection -naccept allows; the server exits after
# accepting it, sometimes before the client is done, so its status is moot.
finish_server() {
  printf 'GET / HTTP/1.0\r\n\r\n' |
    openssl s_client -connect "127.0.0.1:$PORT" -quiet >/dev/null 2>&1 || true
  wait "$LAUNCHER" || true
}

step "2. openssl s_server WITHOUT the library"
start_server plain
say "server pid $SERVER on 127.0.0.1:$PORT"
handshakes "$HANDSHAKES"
say "reading the server's memory from outside (/proc/$SERVER/mem):"
scan_server no
finish_server
if [ "$FOUND_RC" -eq 0 ]; then
  say "${RED}→ the private key can be read out of the unprotected server.${RST}"
else
  say "${YEL}→ the key was not found in the unprotected server this time (nothing to compare against).${RST}"
fi

step "3. the same server WITH the library: $BIN run -- openssl s_server …"
if [ ! -e "$LIB" ]; then
  die "$LIB is missing: run make (the C library is built by cshim/cshim.mk)"
fi
start_server protected "$BIN" run --
say "server pid $SERVER on 127.0.0.1:$PORT"
handshakes "$HANDSHAKES"
say "its secret memory, as /proc/$SERVER/maps shows it:"
grep -F /secretmem "/proc/$SERVER/maps" | sed 's/^/  /' || say "  (no /secretmem mapping!)"
"$BIN" inspect "$SERVER" | grep -E '^(library|openssl hook|secretmem|memlock) ' | sed 's/^/  /'
say "reading the server's memory from outside (/proc/$SERVER/mem):"
scan_server yes
say "(refused: the kernel will not read memfd_secret pages for another process — EIO from"
say " /proc/PID/mem and ptrace, EFAULT from process_vm_readv — not even for root)"
finish_server
say "stats printed by secretheap run when the server exited (per-class lines left out):"
sed -n '/^secretheap: stats/,$p' "$LOG" | grep -v '^  class ' | sed 's/^/  /'
if [ "$FOUND_RC" -eq 1 ]; then
  say "${GRN}→ no copy of the private key is readable from outside the protected server.${RST}"
else
  say "${YEL}→ some copies above are still readable with the library; see \"Limits\" in README.md.${RST}"
fi
