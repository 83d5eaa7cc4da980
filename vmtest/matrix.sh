#!/usr/bin/env bash
# matrix.sh — the kernel matrix (`make vmtest`): builds what the guests run,
# boots each kernel of boots.tsv with boot.sh, runs scenarios.sh inside, and
# prints one table, kernel × scenario, to stdout and build/vmtest/table.md.
# Exits 1 if a row that must pass (every row not excused in expect.tsv) did
# not, or if a boot did not finish.
#
#   vmtest/matrix.sh [LABEL-REGEX]       (from the repository root)
#
# Environment: VMTEST_ONLY=regex (context/scenario rows to run),
# VMTEST_FULL=1 (also the full C unit tests and the e2e Go tests, as root),
# and boot.sh's VMTEST_* variables. Logs: build/vmtest/<label>.log.
set -euo pipefail
# The whole script is one block: bash reads it before running it, so editing
# (or git checkout of) this file while it runs cannot change what it does.
{
cd "$(dirname "$0")/.."
here=vmtest
out=build/vmtest
pick=${1:-.}
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
mkdir -p "$out/bin"

# --- what the guests run, built here with the host's toolchain -------------
echo "vmtest: building the library, the CLI, tls_server, the test binaries" >&2
make -s all >&2
make -s $(for t in cshim/tests/test_*.c; do echo "build/cshim-test/$(basename "$t" .c)"; done) >&2
for p in alloc internal/ccore secretmem pmdcache cmd/secretheap e2e; do
	$GO test -c -o "$out/bin/$(basename "$p").test" "./$p" >&2
done
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -o "$out/probe" "$here/probe.c"

# --- the boots ---------------------------------------------------------------
# CPU seconds used by this script's finished children (qemu included): the
# matrix's cost on a shared machine, where wall time depends on the load.
children_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($16 + $17) / hz}' "/proc/$$/stat"; }

rows=$out/rows.tsv
: >"$rows"
failed_boots=()
start_all=$SECONDS
while IFS=$'\t' read -r label kernel kargs; do
	case $label in '#'* | '') continue ;; esac
	[[ $label =~ $pick ]] || continue
	[ "$kargs" = - ] && kargs=""
	log=$out/$label.log
	echo "vmtest: booting $label ($kernel $kargs)" >&2
	s=$SECONDS
	c0=$(children_cpu)
	rc=0
	# shellcheck disable=SC2086 # kargs is a list of kernel arguments
	VMTEST_GUEST_ONLY=${VMTEST_ONLY:-} VMTEST_GUEST_FULL=${VMTEST_FULL:-} \
		"$here/boot.sh" "$kernel" $kargs -- bash "$here/scenarios.sh" >"$log" 2>&1 </dev/null || rc=$?
	secs=$((SECONDS - s))
	cpu=$(($(children_cpu) - c0))
	grep '^@@ROW' "$log" | cut -f2- | sed "s/^/$label\t/" >>"$rows" || true
	n=$(grep -c '^@@ROW' "$log" || true)
	echo "vmtest: $label: $n rows in ${secs}s (exit $rc)" >&2
	if ! grep -q '^@@DONE' "$log" || [ "$rc" -ne 0 ]; then
		failed_boots+=("$label (exit $rc after ${secs}s; see $log)")
	fi
	{
		printf '%s\t' "$label"
		grep '^@@INFO' "$log" | awk -F'\t' '$2=="kernel"{k=$3} $2=="model"{m=$3} $2=="default-memlock"{l=$3}
			END{printf "%s\t%s\t%s", k, m, l}'
		printf '\t%s\t%ss (%ss CPU)\n' "$kernel $kargs" "$secs" "$cpu"
	} >>"$out/boots.tsv.new"
done <"$here/boots.tsv"
mv "$out/boots.tsv.new" "$out/boots.tsv" 2>/dev/null || : >"$out/boots.tsv"
total=$((SECONDS - start_all))

# --- expectations ------------------------------------------------------------
# known LABEL CTX/SCENARIO: prints the reason if expect.tsv excuses the row.
mapfile -t excuses < <(grep -v '^#' "$here/expect.tsv" | grep -v '^[[:space:]]*$' || true)
known() {
	local e b r why
	for e in "${excuses[@]}"; do
		IFS=$'\t' read -r b r why <<<"$e"
		if [[ $1 =~ ^($b)$ ]] && [[ $2 =~ ^($r)$ ]]; then
			echo "$why"
			return 0
		fi
	done
	return 1
}

table=$out/table.md
bad=0
{
	echo "# secretheap kernel matrix"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), ${total}s in all"
	echo
	echo "| boot | kernel | memfd_secret model (vmtest/probe.c) | default memlock | time in the guest |"
	echo "|---|---|---|---|---|"
	awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $6}' "$out/boots.tsv"
	echo
	# The grid: one line per context/scenario, one column per boot.
	labels=$(cut -f1 "$out/boots.tsv")
	printf '| context / scenario |'
	for l in $labels; do printf ' %s |' "$l"; done
	echo
	printf '|---|'
	for l in $labels; do printf '%s' '---|'; done
	echo
	for key in $(awk -F'\t' '!seen[$2"/"$3]++{print $2"/"$3}' "$rows"); do
		printf '| %s |' "$key"
		for l in $labels; do
			r=$(awk -F'\t' -v l="$l" -v k="$key" '$1==l && $2"/"$3==k {print $4; exit}' "$rows")
			if [ -z "$r" ]; then
				cell="—"
			elif why=$(known "$l" "$key"); then
				[ "$r" = pass ] && cell="pass (flip?)" || cell="FAIL (known)"
			else
				cell=$r
			fi
			printf ' %s |' "$cell"
		done
		echo
	done
	echo
	echo "Figures (from each process's SECRETHEAP_STATS report: processes, backends, secret bytes"
	echo "committed summed over processes and the largest, fallbacks to ordinary memory, fork"
	echo "re-privatisations; signals: workers killed by a signal):"
	echo
	echo "| boot | context | scenario | result | status | figures | note | time |"
	echo "|---|---|---|---|---|---|---|---|"
	# \037 (not tab) separates fields here: read collapses empty tab fields.
	while IFS=$'\037' read -r l ctx sc res st fig note secs; do
		if why=$(known "$l" "$ctx/$sc"); then
			if [ "$res" = pass ]; then res="pass (listed as known failure: flip?)"; else res="FAIL (known: $why)"; fi
		elif [ "$res" != pass ]; then
			res="**FAIL**"
		fi
		note=${note//|/\\|}
		fig=${fig//|/\\|}
		echo "| $l | $ctx | $sc | $res | $st | $fig | $note | $secs |"
	done < <(tr '\t' '\037' <"$rows")
	echo
	for b in "${failed_boots[@]}"; do echo "- boot did not finish: $b"; done
} >"$table"

while IFS=$'\037' read -r l ctx sc res _; do
	[ "$res" = pass ] && continue
	known "$l" "$ctx/$sc" >/dev/null && continue
	bad=$((bad + 1))
done < <(tr '\t' '\037' <"$rows")

cat "$table"
if [ ${#failed_boots[@]} -gt 0 ] || [ $bad -gt 0 ]; then
	echo "vmtest: FAILED: $bad required row(s) failed, ${#failed_boots[@]} boot(s) did not finish (table: $table)" >&2
	exit 1
fi
echo "vmtest: every required row passed (table: $table)" >&2
exit
}
