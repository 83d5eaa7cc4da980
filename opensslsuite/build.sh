#!/usr/bin/env bash
# Fetches upstream OpenSSL through Debian's source packages and builds it
# twice into a cache outside the clone (once per link style):
#
#   $CACHE/upstream   ./Configure linux-x86_64 shared, as upstream ships it:
#                     libcrypto.so.3 and libssl.so.3 linked with -Bsymbolic
#   $CACHE/debian     the same tree relinked without -Bsymbolic, as Debian
#                     links its libcrypto (internal calls go through the PLT,
#                     so an LD_PRELOAD sees them)
#
# Idempotent: a finished build leaves a stamp and is not redone.
# Environment: SECRETHEAP_OPENSSL_CACHE (default /var/cache/secretheap-openssl),
# JOBS (default 2).
set -euo pipefail

CACHE=${SECRETHEAP_OPENSSL_CACHE:-/var/cache/secretheap-openssl}
JOBS=${JOBS:-2}
mkdir -p "$CACHE"
cd "$CACHE"

log() { echo "opensslsuite: $*" >&2; }

# 1. The upstream tarball, as Debian's source package carries it.
tarball=$(ls openssl_*.orig.tar.gz 2>/dev/null | head -1 || true)
if [ -z "$tarball" ]; then
  src=/etc/apt/sources.list.d/secretheap-deb-src.sources
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null &&
     ! grep -rqs '^deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null; then
    log "enabling deb-src in $src"
    # Same archives and suites as the system's deb lines, source only.
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    cat > "$src" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
  # Only the .orig.tar.gz is needed; a mirror missing the .dsc or the
  # Debian diff makes apt-get fail after it fetched the tarball.
  apt-get source --download-only openssl || log "apt-get source reported errors; using the tarball if it arrived"
  tarball=$(ls openssl_*.orig.tar.gz 2>/dev/null | head -1 || true)
  [ -n "$tarball" ] || { log "no openssl_*.orig.tar.gz from apt-get source"; exit 1; }
  tar -tzf "$tarball" >/dev/null || { log "$tarball is not a readable tarball"; exit 1; }
fi
version=${tarball#openssl_}; version=${version%.orig.tar.gz}
log "OpenSSL $version from $tarball"

# Build tools the test suite needs (perl modules ship with perl-modules).
for p in build-essential perl; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq "$p" >/dev/null; }
done

# 2. Upstream link style.
if [ ! -e upstream/.built ]; then
  rm -rf upstream && mkdir upstream
  tar -xzf "$tarball" -C upstream --strip-components=1
  (cd upstream && ./Configure linux-x86_64 shared >configure.log 2>&1 &&
     nice make -j"$JOBS" >build.log 2>&1)
  grep -q 'Bsymbolic' upstream/Makefile || { log "upstream Makefile has no -Bsymbolic: unexpected"; exit 1; }
  touch upstream/.built
fi

# 3. Debian link style: the same objects, libcrypto/libssl relinked without
#    -Bsymbolic (Debian's rules drop it the same way).
if [ ! -e debian/.built ]; then
  rm -rf debian
  cp -a upstream debian
  rm -f debian/.built
  (cd debian &&
     sed -i 's/ -Wl,-Bsymbolic//g' Makefile &&
     rm -f libcrypto.so* libssl.so* &&
     nice make -j"$JOBS" >relink.log 2>&1)
  touch debian/.built
fi
log "ready: $CACHE/upstream $CACHE/debian"
