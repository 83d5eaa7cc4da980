#!/usr/bin/env bash
# run.sh — run the pre-forking TLS server with libsecretheap.so preloaded:
# throwaway ECDSA P-256 key and certificate, N workers, the parent's own
# client handshakes plus `openssl s_client` ones, then the library's stats.
#
#   examples/openssl/run.sh [workers] [handshakes]     (from the repository root, after make)
#
# Environment: SECRETHEAP_* as usual (SECRETHEAP_STATS is set to stderr here).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
lib=$root/build/libsecretheap.so
server=$root/build/tls_server
workers=${1:-4}
handshakes=${2:-200}
for f in "$lib" "$server"; do
  [ -e "$f" ] || { echo "run.sh: $f missing: run make first" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -days 1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

echo "== tls_server: key loaded in the parent, $workers workers, $handshakes handshakes"
# The parent makes the handshakes itself (-selftest), against its workers, then
# every process checks its canary and key, and the library prints its stats.
SECRETHEAP_STATS=stderr LD_PRELOAD=$lib "$server" -cert "$tmp/cert.pem" -key "$tmp/key.pem" \
  -workers "$workers" -selftest "$handshakes" > "$tmp/port" 2> "$tmp/server.log" || {
  cat "$tmp/server.log"; echo "run.sh: server FAILED" >&2; exit 1; }
grep -E '^tls_server:' "$tmp/server.log"

echo
echo "== the same server against openssl s_client (TLS 1.3), 5 connections"
SECRETHEAP_STATS=stderr LD_PRELOAD=$lib "$server" -cert "$tmp/cert.pem" -key "$tmp/key.pem" \
  -workers 2 > "$tmp/port2" 2> "$tmp/server2.log" &
pid=$!
for _ in $(seq 50); do grep -q '^port' "$tmp/port2" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/^port/{print $2}' "$tmp/port2")
for i in 1 2 3 4 5; do
  echo "hello $i" | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -quiet \
    -verify_quiet 2>/dev/null || true
done
kill -TERM "$pid"; wait "$pid" || true
grep -E '^tls_server:' "$tmp/server2.log"

echo
echo "== library stats of the first run"
# Every process prints its report at exit; the parent, which waits for its
# workers, prints last. Workers: one line each. Parent: the whole report.
log=$tmp/server.log
awk '/^secretheap stats \(pid/{pid=$4} /fork re-privatisations/{line[pid]=$0}
     END{for (p in line) print "  worker/parent pid " p ":" line[p]}' "$log" | sed 's/(pid //; s/,:/:/' | sort
echo
start=$(grep -n '^secretheap stats (pid' "$log" | tail -1 | cut -d: -f1)
tail -n +"$start" "$log"
