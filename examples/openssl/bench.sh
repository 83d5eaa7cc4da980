#!/usr/bin/env bash
# bench.sh — the OpenSSL side of `make bench`: every figure with and without
# libsecretheap.so, in one run, so the ratios compare like with like.
#   1. OPENSSL_malloc+free pairs (32/256/4096 B, 1 and 2 threads) and churn vs glibc
#   2. in-process TLS 1.3 full handshakes per second (ECDSA P-256)
#   3. start-up of `openssl version`
#   4. committed secret memory of `openssl s_server` after 100 handshakes vs the
#      peak live bytes OpenSSL asks for in the same workload (ossl_peak.so)
#
#   examples/openssl/bench.sh [malloc] [handshake] [startup] [memory]   (default: all four)
set -euo pipefail
sections=" ${*:-malloc handshake startup memory} "
want() { [[ $sections == *" $1 "* ]]; }
root=$(cd "$(dirname "$0")/../.." && pwd)
b=$root/build
lib=$b/libsecretheap.so
for f in "$lib" "$b/ossl_malloc_bench" "$b/ossl_handshake_bench" "$b/ossl_peak.so"; do
  [ -e "$f" ] || { echo "bench.sh: $f missing: run make first" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
div() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }

if want malloc; then
echo "## OPENSSL_malloc + free (ns per pair, best of 5; glibc column = malloc+free in the same process)"
"$b/ossl_malloc_bench" > "$tmp/plain.txt"
LD_PRELOAD=$lib "$b/ossl_malloc_bench" > "$tmp/lib.txt"
printf '%-24s %10s %16s %18s %8s\n' case glibc OPENSSL_malloc "OPENSSL_malloc+lib" "lib/glibc"
while read -r api what rest; do
  [ "$api" = glibc ] || continue
  key="$what $rest"; key=${key% ns/*}
  g=$(grep "^glibc $key " "$tmp/lib.txt" | awk '{print $NF}')
  o=$(grep "^OPENSSL_malloc $key " "$tmp/plain.txt" | awk '{print $NF}')
  l=$(grep "^OPENSSL_malloc $key " "$tmp/lib.txt" | awk '{print $NF}')
  printf '%-24s %10s %16s %18s %8.2f\n' "$key" "$g" "$o" "$l" "$(div "$l" "$g")"
done < "$tmp/plain.txt"
echo
fi

if want handshake; then
echo "## TLS 1.3 full handshakes per second, in-process (ECDSA P-256, memory BIOs), best of 5 runs of 1.5 s each, interleaved"
for i in 1 2 3 4 5; do
  "$b/ossl_handshake_bench" -secs 1.5 | awk '{print $NF}' | tr -d '/s' >> "$tmp/hs_plain"
  LD_PRELOAD=$lib "$b/ossl_handshake_bench" -secs 1.5 | awk '{print $NF}' | tr -d '/s' >> "$tmp/hs_lib"
done
hp=$(sort -g "$tmp/hs_plain" | tail -1); hl=$(sort -g "$tmp/hs_lib" | tail -1)
printf 'without %s/s   with %s/s   ratio %.3f\n' "$hp" "$hl" "$(div "$hl" "$hp")"
echo
fi

if want startup; then
echo "## start-up: openssl version"
if command -v hyperfine >/dev/null; then
  hyperfine -N -w 20 -r 300 --export-json "$tmp/hf.json" \
    'openssl version' "env LD_PRELOAD=$lib openssl version" 'env openssl version' 2>/dev/null |
    grep -E 'Time|openssl' || true
  python3 - "$tmp/hf.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
m = {x["command"]: x["mean"] * 1e3 for x in r}
plain = [v for k, v in m.items() if k == "env openssl version"][0]
lib = [v for k, v in m.items() if "LD_PRELOAD" in k][0]
print(f"without (env) {plain:.3f} ms   with {lib:.3f} ms   difference {lib - plain:+.3f} ms")
PY
else
  for mode in plain lib; do
    s=$(date +%s%N)
    for _ in $(seq 200); do
      if [ $mode = lib ]; then LD_PRELOAD=$lib openssl version >/dev/null; else openssl version >/dev/null; fi
    done
    echo "$mode $(( ($(date +%s%N) - s) / 200000 )) us per run"
  done
fi
echo
fi

if want memory; then
echo "## s_server after 100 handshakes: committed secret memory vs peak live OpenSSL bytes"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -days 1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
serve() { # $1 = preload, $2 = stats env name/value
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env LD_PRELOAD="$1" $2 openssl s_server -accept "127.0.0.1:$port" -cert "$tmp/cert.pem" \
    -key "$tmp/key.pem" -tls1_3 -naccept 100 -rev -no_cache -num_tickets 0 </dev/null >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05
  done
  # the probe above used one accept: 99 more
  for _ in $(seq 99); do
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -brief \
      -verify_quiet >/dev/null 2>&1 || true
  done
  wait "$pid" || true
}
serve "$b/ossl_peak.so" "OSSL_PEAK_OUT=$tmp/peak.txt"
serve "$lib" "SECRETHEAP_STATS=$tmp/stats.txt"
peak=$(awk '/openssl_peak_live_bytes/{print $2}' "$tmp/peak.txt")
committed=$(grep -o 'committed [0-9]* KiB' "$tmp/stats.txt" | tail -1 | awk '{print $2 * 1024}')
mapped=$(grep -o 'mapped [0-9]* KiB' "$tmp/stats.txt" | tail -1 | awk '{print $2 * 1024}')
echo "peak live OpenSSL bytes (ossl_peak.so): $peak"
echo "secretheap bytes_committed: $committed   bytes_mapped: $mapped"
[ -n "$peak" ] && [ -n "$committed" ] &&
  printf 'committed / peak live = %.2f\n' "$(div "$committed" "$peak")"
fi
