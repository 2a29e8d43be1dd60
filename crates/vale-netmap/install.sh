#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Installs what building netmap programs against valed needs:
#   PREFIX/include/vale-netmap/net/netmap.h, net/netmap_user.h   (our headers)
#   LIBDIR/libvale_netmap.so (+ libvale-netmap.so, a link to it)  (the library)
#   LIBDIR/pkgconfig/vale-netmap.pc
# The headers go in their own directory so they never shadow netmap's own in
# PREFIX/include/net; `pkg-config --cflags vale-netmap` points the compiler there.
#
# Usage: crates/vale-netmap/install.sh [--headers-only] [PREFIX]
#   PREFIX   default /usr/local
#   env LIBDIR   default PREFIX/lib
#   env LIB      the built library, default target/release/libvale_netmap.so
#                (cargo build --release -p vale-netmap)
#   env DESTDIR  staging root, prepended to every installed path (packaging)
#
# Then:  cc prog.c $(pkg-config --cflags --libs vale-netmap)   runs against valed
#        (add LIBDIR to the loader's path or -Wl,-rpath if it is not a system one),
#   or:  LD_PRELOAD=LIBDIR/libvale_netmap.so ./prog              for existing binaries.
set -euo pipefail

crate="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$crate/../.." && pwd)"

headers_only=0
if [[ ${1:-} == --headers-only ]]; then
	headers_only=1
	shift
fi
prefix="${1:-/usr/local}"
libdir="${LIBDIR:-$prefix/lib}"
includedir="$prefix/include/vale-netmap"
lib="${LIB:-$root/target/release/libvale_netmap.so}"
dest="${DESTDIR:-}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"

if [[ $headers_only -eq 0 && ! -f $lib ]]; then
	echo "install.sh: $lib not found; build it first (cargo build --release -p vale-netmap)," >&2
	echo "            point LIB at it, or pass --headers-only" >&2
	exit 1
fi

install -d "$dest$includedir/net" "$dest$libdir/pkgconfig"
install -m 0644 "$crate/include/net/netmap.h" "$crate/include/net/netmap_user.h" \
	"$dest$includedir/net/"
if [[ $headers_only -eq 0 ]]; then
	install -m 0755 "$lib" "$dest$libdir/libvale_netmap.so"
	ln -sf libvale_netmap.so "$dest$libdir/libvale-netmap.so"
fi
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" \
	-e "s|@INCLUDEDIR@|$includedir|g" -e "s|@VERSION@|$version|g" \
	"$crate/vale-netmap.pc.in" > "$dest$libdir/pkgconfig/vale-netmap.pc"
chmod 0644 "$dest$libdir/pkgconfig/vale-netmap.pc"

echo "installed under $dest$prefix:"
echo "  headers  $includedir/net/{netmap.h,netmap_user.h}"
[[ $headers_only -eq 1 ]] || echo "  library  $libdir/libvale_netmap.so (and libvale-netmap.so)"
echo "  pkg-config  $libdir/pkgconfig/vale-netmap.pc"
echo "build:  cc prog.c \$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs vale-netmap)"
