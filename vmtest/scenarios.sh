#!/usr/bin/env bash
# scenarios.sh — runs inside a vmtest guest (as root, from the repository
# root, via boot.sh) and prints one "@@ROW" line per context × scenario:
#
#   @@ROW <tab> context <tab> scenario <tab> pass|FAIL <tab> status <tab> figures <tab> note
#
# plus "@@INFO key value" lines (kernel, model probe, default limit). The
# output of a failed scenario follows its row (last lines), so that the log
# of the boot shows why. matrix.sh turns the rows into the table.
#
# Contexts: root (the kernel's default RLIMIT_MEMLOCK), root-64K, and uid
# 65534 ("nobody") with 64 KiB and 8 MiB. Scenarios: see the list at the end.
# Everything a scenario needs is prebuilt on the host (matrix.sh does it):
# build/libsecretheap.so, build/secretheap, build/tls_server,
# build/cshim-test/*, build/vmtest/bin/*.test, build/vmtest/probe.
#
# VMTEST_GUEST_ONLY=regex limits the rows run ("context/scenario").
set -uo pipefail
# The whole script is one block: bash reads it before running it, so editing
# (or git checkout of) this file while it runs cannot change what it does.
{

root=$PWD
lib=$root/build/libsecretheap.so
bin=$root/build/vmtest/bin
work=/tmp/vmtest
mkdir -p "$work"
chmod 0777 "$work"
only=${VMTEST_GUEST_ONLY:-}
export SECRETHEAP_REQUIRE=1

info() { printf '@@INFO\t%s\t%s\n' "$1" "$2"; }
info kernel "$(uname -r) ($(uname -v | sed 's/^#[0-9]* SMP PREEMPT_DYNAMIC //'))"
info cmdline "$(cat /proc/cmdline)"
model=$("$root/build/vmtest/probe" 2>&1)
info model "$model"
# Without memfd_secret (ENOSYS: Debian's 6.1 booted without
# secretmem.enable=1) the test suites run without SECRETHEAP_REQUIRE, so that
# tests needing memfd_secret skip instead of failing, and such a row passes
# only if nothing failed and every skip names memfd_secret (check_skips).
# Go examples cannot skip and print what a kernel with memfd_secret prints
# (their "// Output:"), so they run on the other boots only.
nosecret=""
[[ $model == *ENOSYS* ]] && nosecret=1
info default-memlock "$(ulimit -l) KiB"
ip link set lo up 2>/dev/null || true

# A throwaway certificate for the handshakes, made without the library.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
	-days 1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 0644 "$work/key.pem" "$work/cert.pem"

# as CONTEXT CMD...: runs CMD in the context's user and limit.
as() {
	local ctx=$1
	shift
	case $ctx in
	root) "$@" ;;
	root-64K) prlimit --memlock=65536:65536 -- "$@" ;;
	nobody-64K) prlimit --memlock=65536:65536 -- setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@" ;;
	nobody-8M) prlimit --memlock=8388608:8388608 -- setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@" ;;
	*) echo "scenarios.sh: unknown context $ctx" >&2; return 2 ;;
	esac
}

# Figures of a library stats file (one report per process, SECRETHEAP_STATS).
stats_figures() {
	awk '
	/^secretheap stats \(pid/ { n++ }
	/^  backend [0-9]+$/ { b[$2]++ }
	/^  committed_bytes / { c += $2; if ($2 > m) m = $2 }
	/^  fallbacks / { f += $2 }
	/^  fork_reprivatised / { r += $2 }
	END {
		if (n == 0) { printf "no stats"; exit }
		be = ""
		if (b[1]) be = be "secret"
		if (b[2]) be = be (be ? "+" : "") "locked"
		if (be == "") be = "none"
		printf "%d proc; %s; committed %d KiB (max %d KiB); fallbacks %d", n, be, c / 1024, m / 1024, f
		if (r) printf "; repriv %d", r
	}' "$1"
}

# Figures of a go test -test.v log: top-level tests passed/failed/skipped.
go_figures() {
	awk '/^--- PASS/{p++} /^--- FAIL/{f++} /^--- SKIP/{s++}
	END { printf "%d passed, %d failed, %d skipped", p, f, s }' "$1"
}

row=0
# scenario CONTEXT NAME TIMEOUT CMD...: runs CMD (a shell function below)
# and prints the row. The function sets FIG (figures) and NOTE, and returns
# nonzero on failure beyond its exit status (CHECK_FAILED).
scenario() {
	local ctx=$1 name=$2 t=$3
	shift 3
	[ -n "$only" ] && ! [[ "$ctx/$name" =~ $only ]] && return 0
	row=$((row + 1))
	local d=$work/$row
	mkdir -p "$d"
	chmod 0777 "$d"
	: >"$d/stats"
	chmod 0666 "$d/stats"
	FIG="" NOTE="" CHECK=""
	local start=$SECONDS rc
	D=$d CTX=$ctx T=$t "$@" >"$d/out" 2>&1
	rc=$?
	local secs=$((SECONDS - start)) status result=pass
	case $rc in
	0) status="exit 0" ;;
	124) status="timeout ${t}s" result=FAIL ;;
	12[5-8]) status="exit $rc" result=FAIL ;;
	1[3-9][0-9] | 2[0-5][0-9]) status="signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))" result=FAIL ;;
	*) status="exit $rc" result=FAIL ;;
	esac
	[ -n "$CHECK" ] && result=FAIL && NOTE="${NOTE:+$NOTE; }$CHECK"
	printf '@@ROW\t%s\t%s\t%s\t%s\t%s\t%s\t%ss\n' "$ctx" "$name" "$result" "$status" "$FIG" "$NOTE" "$secs"
	if [ "$result" != pass ] || [ -n "${VMTEST_GUEST_VERBOSE:-}" ]; then
		echo "---- $ctx/$name output (last 25 lines):"
		grep -vE '^ *(=== (RUN|PAUSE|CONT|NAME)|--- (PASS|SKIP))' "$d/out" | tail -n 25 | sed 's/^/    /'
		echo "----"
	fi
}

# The library's stats and worker deaths, common to the preloaded scenarios.
preload_figures() {
	FIG=$(stats_figures "$D/stats")
	local sig
	sig=$(grep -c 'killed by signal' "$D/out")
	[ "$sig" -gt 0 ] && FIG="$FIG; signals $sig"
	local warn
	warn=$(grep -m1 -o 'fork child cannot re-privatise[^:]*' "$D/out" || true)
	[ -n "$warn" ] && NOTE="${NOTE:+$NOTE; }$warn"
	return 0
}

# Runs CMD in the context with the library preloaded and its stats in $D.
preloaded() {
	as "$CTX" timeout -k 5 "$T" env LD_PRELOAD="$lib" SECRETHEAP_STATS="$D/stats" "$@"
}

s_genpkey_ec() {
	preloaded openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/ec.pem"
	local rc=$?
	preload_figures
	[ $rc -eq 0 ] && ! grep -q 'BEGIN PRIVATE KEY' "$D/ec.pem" && CHECK="no key written"
	return $rc
}

s_genpkey_rsa() {
	preloaded openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/rsa.pem"
	local rc=$?
	preload_figures
	[ $rc -eq 0 ] && ! grep -q 'BEGIN PRIVATE KEY' "$D/rsa.pem" && CHECK="no key written"
	return $rc
}

# openssl s_server and s_client, both preloaded: 3 TLS 1.3 handshakes,
# each fetching s_server's status page.
s_handshake() {
	local port=$((20000 + row)) ok=0 i
	preloaded openssl s_server -accept "127.0.0.1:$port" -naccept 3 -tls1_3 -www \
		-cert "$work/cert.pem" -key "$work/key.pem" >"$D/server.log" 2>&1 &
	local spid=$!
	for _ in $(seq 100); do
		grep -q ACCEPT "$D/server.log" && break
		sleep 0.1
	done
	for i in 1 2 3; do
		printf 'GET / HTTP/1.0\r\n\r\n' |
			preloaded openssl s_client -connect "127.0.0.1:$port" -tls1_3 -quiet -verify_quiet \
				>"$D/client$i.log" 2>&1 && grep -q '200 ok' "$D/client$i.log" && ok=$((ok + 1))
	done
	local rc=0
	wait "$spid" || rc=$?
	cat "$D/server.log" "$D"/client*.log
	preload_figures
	FIG="$ok/3 handshakes; $FIG"
	[ "$ok" -eq 3 ] || CHECK="$((3 - ok)) of 3 handshakes failed"
	return $rc
}

# examples/openssl's pre-forking server: W workers, N handshakes made by the
# parent against its workers; every process checks its canary and key.
tls_server() {
	local w=$1 n=$2
	preloaded "$root/build/tls_server" -cert "$work/cert.pem" -key "$work/key.pem" -workers "$w" -selftest "$n"
	local rc=$?
	preload_figures
	local st
	st=$(grep -o 'parent selftest [0-9]*/[0-9]* handshakes ok' "$D/out" | grep -o '[0-9]*/[0-9]*')
	FIG="${st:-0/$n} handshakes; $FIG"
	[ $rc -eq 0 ] && ! grep -q 'tls_server: all verified' "$D/out" && CHECK="no 'all verified'"
	return $rc
}
s_tls4() { tls_server 4 200; }
s_tls16() { tls_server 16 200; }

# secretheap doctor: its verdicts, and the two facts it must get right.
s_doctor() {
	as "$CTX" timeout -k 5 "$T" "$root/build/secretheap" doctor
	local rc=$?
	FIG=$(awk '$1=="OK"{o++} $1=="WARN"{w++} $1=="FAIL"{f++} END{printf "OK %d, WARN %d, FAIL %d", o, w, f}' "$D/out")
	NOTE=$(awk '$2=="memlock"{$1=$2=""; sub(/^ +/, ""); print; exit}' "$D/out" | cut -c1-90)
	local model
	model=$("$root/build/vmtest/probe")
	case $model in
	*ENOSYS*) grep -q 'secretmem.enable=1' "$D/out" || CHECK="does not name secretmem.enable=1" ;;
	"model new"*) grep -q 'bypasses RLIMIT_MEMLOCK' "$D/out" && CHECK="promises a CAP_IPC_LOCK bypass the new model does not give" ;;
	esac
	# Exit 1 is doctor's verdict "not ready", a correct answer where memfd_secret
	# is missing; anything else is a crash.
	[ $rc -eq 1 ] && [[ $model == *ENOSYS* ]] && return 0
	return $rc
}

# suite CMD...: runs a test suite's CMD in the context, with
# SECRETHEAP_REQUIRE=1 unless memfd_secret is missing (see nosecret).
suite() {
	if [ -n "$nosecret" ]; then
		as "$CTX" timeout -k 5 "$T" env -u SECRETHEAP_REQUIRE "$@"
	else
		as "$CTX" timeout -k 5 "$T" "$@"
	fi
}

# check_skips LOG: where memfd_secret is missing, every skip in LOG must
# name it (Go's "--- SKIP" line, whose reason -test.v prints on the message
# line just before it, or just after for a test that logged nothing; the C
# tests' "skip:" lines); sets CHECK otherwise.
check_skips() {
	[ -n "$nosecret" ] || return 0
	local bad
	bad=$(awk '
		pending { if ($0 !~ /memfd_secret/) { print skip; n++ } pending = 0 }
		/^ *--- SKIP/ { if (msg !~ /memfd_secret/) { pending = 1; skip = $0 } msg = ""; next }
		/^ *(=== |--- )/ { msg = ""; next }
		{ msg = $0 }
		/^skip:/ && !/memfd_secret/ { print; n++ }
		END { if (pending) { print skip; n++ } exit n > 0 }' "$1" | head -n 3 | tr '\n' ' ') ||
		CHECK="${CHECK:+$CHECK; }a skip that does not name memfd_secret: $bad"
}

# A go test binary built by matrix.sh, in its package directory, verbose.
gotest() {
	local pkg=$1 log=$D/$(basename "$1").log rc=0
	shift
	[ -n "$nosecret" ] && set -- -test.skip '^Example' "$@"
	(cd "$root/$pkg" && suite "$bin/$(basename "$pkg").test" -test.v -test.count=1 "$@") \
		>"$log" 2>&1 || rc=$?
	cat "$log"
	FIG=$(go_figures "$log")
	check_skips "$log"
	return $rc
}
# The shared conformance suite on the Go heap (alloc) and the C core (internal/ccore).
s_conformance() {
	local rc=0 f1
	gotest alloc -test.run 'Conformance' || rc=$?
	f1=$FIG
	gotest internal/ccore -test.run 'Conformance' || rc=$?
	FIG="Go heap $f1; C core $FIG"
	return $rc
}

# The C unit tests (cshim/tests): each prints "N passed, M failed" last.
c_tests() {
	local rc=0 p=0 f=0 s=0 t line
	for t in "$@"; do
		echo "== $t"
		suite "$root/build/cshim-test/$t" >"$D/$t.log" 2>&1 || rc=$?
		cat "$D/$t.log"
		check_skips "$D/$t.log"
		grep -q '^skip:' "$D/$t.log" && s=$((s + 1))
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$D/$t.log" | tail -n1)
		[ -n "$line" ] || { f=$((f + 1)); NOTE="${NOTE:+$NOTE, }$t: no result"; continue; }
		p=$((p + ${line%% *}))
		f=$((f + $(echo "$line" | cut -d' ' -f3)))
		[ "$(echo "$line" | cut -d' ' -f3)" = 0 ] || NOTE="${NOTE:+$NOTE, }$t"
	done
	FIG="$p passed, $f failed"
	[ $s -eq 0 ] || FIG="$FIG ($s skipped: memfd_secret unavailable)"
	[ $f -eq 0 ] || CHECK="${CHECK:+$CHECK; }failed: $NOTE" NOTE=""
	return $rc
}
s_c_memlock() { c_tests test_memlock; }
s_c_unit() { c_tests test_basic test_misuse test_openssl test_threads test_fork; }
s_go_memlock() {
	local rc=0 f1
	gotest secretmem || rc=$?
	f1=$FIG
	gotest pmdcache || rc=$?
	FIG="secretmem $f1; pmdcache $FIG"
	return $rc
}
s_go_cli() { gotest cmd/secretheap; }
s_go_e2e() { gotest e2e; }

# ---- the scenarios ---------------------------------------------------------
# Root-only suites re-execute themselves as uid 65534 with their own limits.
for ctx in root root-64K nobody-64K nobody-8M; do
	scenario "$ctx" doctor 60 s_doctor
	scenario "$ctx" genpkey-ec 120 s_genpkey_ec
	scenario "$ctx" genpkey-rsa 300 s_genpkey_rsa
	scenario "$ctx" s_server 120 s_handshake
	scenario "$ctx" tls_server-4w 300 s_tls4
	scenario "$ctx" tls_server-16w 300 s_tls16
done
# The conformance suite allocates up to 1 MiB blocks and expects them in
# secret memory: it needs a few MiB, so it runs where the budget allows that.
for ctx in root nobody-8M; do
	scenario "$ctx" conformance 300 s_conformance
done
scenario root c-memlock 300 s_c_memlock
scenario root go-secretmem 300 s_go_memlock
scenario root go-cli 300 s_go_cli
if [ -n "${VMTEST_GUEST_FULL:-}" ]; then
	scenario root c-unit 900 s_c_unit
	scenario root go-e2e 600 s_go_e2e
fi
echo "@@DONE $row"
exit
}
