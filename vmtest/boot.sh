#!/usr/bin/env bash
# boot.sh KERNEL [KERNEL-ARG...] -- CMD [ARG...]
#
# Boots a Debian cloud kernel under QEMU (TCG: no /dev/kvm needed) and runs
# CMD as root inside it, in this machine's root filesystem (shared read-only
# through virtiofs, with a RAM overlay on top so that the guest can write
# anywhere without touching the host), in the current directory, with the
# host's own binaries and libraries. CMD's output is printed as it runs;
# boot.sh exits with CMD's status (125: the guest could not run it,
# 124: the per-boot timeout killed the guest).
#
# KERNEL is a Debian kernel version: 6.1.192 (the linux-image-cloud-amd64
# version with that upstream number), 6.12.118, or a prefix such as 6.12
# (the newest served). Packages come from apt (`apt-get download`, never
# installed on the host); debs and extracted kernels are kept in
# $VMTEST_CACHE (default /var/cache/secretheap-vmtest).
#
# Environment:
#   VMTEST_MEM=2G VMTEST_SMP=2 VMTEST_TIMEOUT=900 (seconds per boot)
#   VMTEST_CONSOLE=1   print the guest kernel's console to stderr as well
#   SECRETHEAP_*, GO*  passed on to CMD
# Example: vmtest/boot.sh 6.1.192 secretmem.enable=1 -- ./build/cshim-test/test_memlock
set -euo pipefail
# The whole script is one block: bash reads it before running it, so editing
# (or git checkout of) this file while it runs cannot change what it does.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${VMTEST_CACHE:-/var/cache/secretheap-vmtest}
MEM=${VMTEST_MEM:-2G}
SMP=${VMTEST_SMP:-2}
TIMEOUT=${VMTEST_TIMEOUT:-900}
VIRTIOFSD=/usr/lib/qemu/virtiofsd

usage() {
	sed -n '2,3p' "$0" | sed 's/^# \{0,1\}/usage: /' >&2
	exit 2
}
log() { echo "vmtest: $*" >&2; }
die() {
	log "$*"
	exit 125
}

[ $# -ge 3 ] || usage
spec=$1
shift
kargs=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	kargs+=("$1")
	shift
done
[ "${1:-}" = -- ] || usage
shift
[ $# -gt 0 ] || usage

# --- host tools -------------------------------------------------------------
ensure_tools() {
	local missing=() p
	for p in qemu-system-x86 busybox-static cpio xz-utils binutils; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}
ensure_tools
[ -x "$VIRTIOFSD" ] || die "$VIRTIOFSD missing (package qemu-system-common)"

# --- kernel: resolve SPEC to a package and version, fetch and extract -------
# Prints "PACKAGE VERSION" for SPEC from apt's lists.
resolve() {
	local s=$1 v p
	# linux-image-cloud-amd64 versions are the upstream number plus a
	# Debian revision; the meta package depends on the real image.
	v=$(apt-cache madison linux-image-cloud-amd64 2>/dev/null |
		awk -F'|' '{gsub(/ /,"",$2); print $2}' |
		grep -E "^${s//./\\.}([.-])" | sort -V | tail -n1 || true)
	if [ -n "$v" ] && [[ $s =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
		p=$(apt-cache show "linux-image-cloud-amd64=$v" |
			sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -n1)
		echo "$p $v"
		return
	fi
	# Versioned package names: linux-image-6.12.118+deb12-cloud-amd64.
	p=$(apt-cache pkgnames "linux-image-$s" 2>/dev/null |
		grep -E "^linux-image-${s//./\\.}[.0-9]*\+deb[0-9]+-cloud-amd64$" | sort -V | tail -n1 || true)
	if [ -z "$p" ] && [ -n "$v" ]; then
		p=$(apt-cache show "linux-image-cloud-amd64=$v" |
			sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -n1)
		echo "$p $v"
		return
	fi
	[ -n "$p" ] || return 1
	v=$(apt-cache madison "$p" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -V | tail -n1)
	echo "$p $v"
}

# cached SPEC: "PACKAGE VERSION" of the newest kernel of the cache that
# matches SPEC, for when apt no longer serves it (a security update
# replaced 6.1.192): the matrix keeps booting what it booted before.
cached() {
	local d
	d=$(ls -d "$CACHE"/kernels/linux-image-*_"$1"[.-]* 2>/dev/null | sort -V | tail -n1)
	[ -n "$d" ] && [ -f "$d/ready" ] || return 1
	d=$(basename "$d")
	echo "${d%%_*} ${d#*_}"
}

if ! pv=$(resolve "$spec"); then
	log "kernel $spec not in apt's lists; running apt-get update"
	apt-get update -qq >&2 || true
	pv=$(resolve "$spec") || pv=$(cached "$spec") || die "no Debian cloud kernel package matches '$spec'"
fi
read -r pkg ver <<<"$pv"
kdir=$CACHE/kernels/${pkg}_$ver

# Module names the guest needs if the kernel does not build them in.
WANT_MODULES="virtio_pci virtiofs overlay"

# Writes the load order of WANT_MODULES and their dependencies (modules.builtin
# excluded) to $kdir/initrd/modules/load, decompressing each .ko there.
collect_modules() {
	local root=$1 out=$2 rel
	rel=$(ls "$root/lib/modules")
	local mdir=$root/lib/modules/$rel
	declare -A done=()
	mkdir -p "$out"
	: >"$out/load"
	add() {
		local name=$1 f deps d
		name=${name//-/_}
		[ -n "${done[$name]:-}" ] && return
		done[$name]=1
		if grep -qE "/${name//_/[-_]}\.ko$" "$mdir/modules.builtin"; then return; fi
		f=$(grep -E "(^|/)${name//_/[-_]}\.ko(\.xz|\.zst)?$" "$mdir/modules.order" | head -n1 || true)
		[ -n "$f" ] || f=$(cd "$mdir" && find kernel -regextype posix-extended -regex ".*/${name//_/[-_]}\.ko(\.xz|\.zst)?" | head -n1)
		[ -n "$f" ] || die "module $name is neither built in nor shipped in $pkg"
		f=$(cd "$mdir" && ls "$f" "$f.xz" "$f.zst" 2>/dev/null | head -n1 || true)
		case $f in
		*.xz) xz -dc "$mdir/$f" >"$out/$name.ko" ;;
		*.zst) zstd -qdc "$mdir/$f" >"$out/$name.ko" ;;
		*) cp "$mdir/$f" "$out/$name.ko" ;;
		esac
		deps=$(strings -a "$out/$name.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')
		for d in $deps; do add "$d"; done
		echo "$name" >>"$out/load"
	}
	local m
	for m in $WANT_MODULES; do add "$m"; done
	echo "$rel" >"$kdir/release"
}

prepare_kernel() {
	[ -f "$kdir/ready" ] && return
	local deb tmp
	mkdir -p "$CACHE/debs"
	deb=$(ls "$CACHE/debs/${pkg}_${ver//:/%3a}_amd64.deb" 2>/dev/null || true)
	if [ -z "$deb" ]; then
		log "downloading $pkg $ver"
		(cd "$CACHE/debs" && apt-get download -q "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
			die "apt-get download $pkg=$ver failed"
		deb=$(ls "$CACHE/debs/${pkg}_"*"_amd64.deb" | head -n1)
	fi
	log "extracting $pkg $ver"
	rm -rf "$kdir"
	mkdir -p "$kdir/initrd/bin"
	tmp=$(mktemp -d)
	dpkg-deb -x "$deb" "$tmp"
	cp "$tmp"/boot/vmlinuz-* "$kdir/vmlinuz"
	cp "$tmp"/boot/config-* "$kdir/config"
	collect_modules "$tmp" "$kdir/initrd/modules"
	rm -rf "$tmp"
	cp /bin/busybox "$kdir/initrd/bin/busybox"
	cp "$here/guest-init" "$kdir/initrd/init"
	chmod 0755 "$kdir/initrd/init"
	(cd "$kdir/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$kdir/initrd.cpio"
	touch "$kdir/ready"
}
# Parallel runs (other worktrees) share the cache: one prepares at a time.
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
prepare_kernel
# The cached initrd carries a guest-init: this checkout's may differ.
initrd=$kdir/initrd.cpio
if ! cmp -s "$here/guest-init" "$kdir/initrd/init"; then
	initrd=$(mktemp /tmp/vmtest-initrd.XXXXXX)
	mkdir -p "$initrd.d"
	cp -r "$kdir/initrd/." "$initrd.d/"
	cp "$here/guest-init" "$initrd.d/init"
	(cd "$initrd.d" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$initrd"
	rm -rf "$initrd.d"
fi
flock -u 9
exec 9>&-

# --- this boot ---------------------------------------------------------------
run=$(mktemp -d /tmp/vmtest.XXXXXX)
vpid=
qpid=
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
	[ -n "$vpid" ] && kill "$vpid" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command, run by the guest's chroot: same directory, same environment
# for the variables that matter here, arguments quoted by bash itself.
{
	echo '#!/bin/bash'
	echo 'export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp'
	while IFS='=' read -r name _; do
		case $name in SECRETHEAP_* | GO* | VMTEST_GUEST_*) printf 'export %s=%q\n' "$name" "${!name}" ;; esac
	done < <(env)
	printf 'cd %q || exit 125\n' "$PWD"
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$run/vmtest-run.sh"
(cd "$run" && echo vmtest-run.sh | cpio -o -H newc --quiet) >"$run/cmd.cpio"
cat "$initrd" "$run/cmd.cpio" >"$run/initrd"
[ "$initrd" = "$kdir/initrd.cpio" ] || rm -f "$initrd"

"$VIRTIOFSD" --socket-path="$run/fs.sock" -o source=/ -o sandbox=chroot -o cache=always \
	-o no_posix_lock -o log_level=err >"$run/virtiofsd.log" 2>&1 &
vpid=$!
for _ in $(seq 100); do [ -S "$run/fs.sock" ] && break; sleep 0.05; done
[ -S "$run/fs.sock" ] || die "virtiofsd did not start: $(cat "$run/virtiofsd.log")"

: >"$run/out"
: >"$run/console"
# timeout(1) ends a hung guest; its status 124 tells boot.sh so.
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp "$SMP" -m "$MEM" \
	-object memory-backend-memfd,id=mem,size="$MEM",share=on -machine pc,memory-backend=mem \
	-kernel "$kdir/vmlinuz" -initrd "$run/initrd" \
	-append "console=ttyS0 panic=-1 loglevel=4 ${kargs[*]}" \
	-chardev socket,id=fs,path="$run/fs.sock" -device vhost-user-fs-pci,chardev=fs,tag=host \
	-display none -monitor none -no-reboot -nic none \
	-serial file:"$run/console" -serial file:"$run/out" </dev/null >"$run/qemu.log" 2>&1 &
qpid=$!
start=$SECONDS
if [ "${VMTEST_CONSOLE:-0}" = 1 ]; then
	tail -n +1 -s 0.2 -f --pid="$qpid" "$run/console" >&2 &
fi
# A shell loop, not awk: mawk reads a pipe in blocks and would hold the
# output back until the guest ends.
tail -n +1 -s 0.2 -f --pid="$qpid" "$run/out" | while IFS= read -r line || [ -n "$line" ]; do
	case $line in
	*"@@VMTEST-EXIT "*) # CMD's last line may lack its newline
		[ -n "${line%%@@VMTEST-EXIT *}" ] && printf '%s\n' "${line%%@@VMTEST-EXIT *}"
		echo "${line##*@@VMTEST-EXIT }" >"$run/rc"
		;;
	*) printf '%s\n' "$line" ;;
	esac
done
qrc=0
wait "$qpid" || qrc=$?
qpid=

if [ -f "$run/rc" ]; then
	exit "$(cat "$run/rc")"
fi
if [ "$qrc" = 124 ]; then
	log "guest ($spec ${kargs[*]}) killed after ${TIMEOUT}s; console tail:"
	tail -n 20 "$run/console" >&2
	exit 124
fi
log "guest ($spec ${kargs[*]}) stopped after $((SECONDS - start))s without reporting a status; qemu said: $(cat "$run/qemu.log")"
log "console tail:"
tail -n 30 "$run/console" >&2
exit 125
exit
}
