#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Builds and runs the C checks of our netmap headers (crates/vale-netmap/include):
#   - each header alone, first in its translation unit (self-contained), with
#     NETMAP_WITH_LIBS and without, including an extra-strict warning set;
#   - layout.c, nm_open_parse.c, legacy_rings.c under -Wall -Wextra -Werror in
#     c99 -pedantic, c11 -pedantic, gnu99 and gnu11, at -O0 and -O2, and as C++;
#   - with every compiler found: gcc, clang (C) and g++, clang++ (C++). A missing
#     compiler prints SKIP; finding none of gcc/clang/cc is a failure.
# Then runs every binary (layout's output goes to $OUT/layout.txt).
# Usage: compile_all.sh [OUT_DIR]   (default: a temporary directory, removed after)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
inc="$(cd "$here/../../include" && pwd)"
if [[ $# -ge 1 ]]; then
	out="$1"
	mkdir -p "$out"
else
	out="$(mktemp -d)"
	trap 'rm -rf "$out"' EXIT
fi

warn=(-Wall -Wextra -Werror)
strict=(-Wshadow -Wcast-qual -Wconversion -Wsign-conversion -Wstrict-prototypes
	-Wmissing-prototypes -Wredundant-decls -Wundef -Wcast-align -Wpointer-arith)
tests=(layout nm_open_parse legacy_rings)

ccs=()
for c in gcc clang; do
	if command -v "$c" >/dev/null; then ccs+=("$c"); else echo "SKIP $c: not installed"; fi
done
if [[ ${#ccs[@]} -eq 0 ]]; then
	command -v cc >/dev/null || { echo "FAIL: no C compiler (gcc, clang, cc)"; exit 1; }
	ccs=(cc)
fi
cxxs=()
for c in g++ clang++; do
	if command -v "$c" >/dev/null; then cxxs+=("$c"); else echo "SKIP $c: not installed"; fi
done

built=0
compile() { # compiler, output, flags and sources...
	local c="$1" o="$2"
	shift 2
	if ! "$c" "$@" -I "$inc" -o "$o"; then
		echo "FAIL: $c $* -o $o"
		exit 1
	fi
	built=$((built + 1))
}

# Each header first and alone in its translation unit.
cat > "$out/only_netmap.c" <<'C'
#include <net/netmap.h>
int main(void) { struct netmap_ring *r = 0; return (int)sizeof(*r) - 256 + (r ? nm_ring_empty(r) : 0); }
C
cat > "$out/only_user.c" <<'C'
#include <net/netmap_user.h>
int main(void) { D("%s", "headers"); RD(1, "rate limited"); ND("never %d", 1); return 0; }
C
cat > "$out/only_libs.c" <<'C'
#define NETMAP_WITH_LIBS
#include <net/netmap_user.h>
int main(void) { return nm_open("not-netmap", NULL, 0, NULL) == NULL ? 0 : 1; }
C

for c in "${ccs[@]}"; do
	for h in only_netmap only_user only_libs; do
		for std in c99 c11 gnu11; do
			compile "$c" "$out/$h-$c-$std" -std="$std" -pedantic -O2 "${warn[@]}" "${strict[@]}" \
				"$out/$h.c"
		done
	done
	for t in "${tests[@]}"; do
		for std in c99 c11 gnu99 gnu11; do
			ped=()
			[[ $std == c* ]] && ped=(-pedantic)
			for opt in -O0 -O2; do
				compile "$c" "$out/$t-$c-$std$opt" -std="$std" "${ped[@]}" "$opt" "${warn[@]}" \
					"$here/$t.c"
			done
		done
		# Programs that ask for 64-bit file offsets (open64/mmap64) build the same.
		compile "$c" "$out/$t-$c-lfs" -std=gnu11 -O2 -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE \
			"${warn[@]}" "$here/$t.c"
	done
done
for c in "${cxxs[@]}"; do
	for h in only_netmap only_user only_libs; do
		compile "$c" "$out/$h-$c" -x c++ -std=c++11 -O2 "${warn[@]}" -Wshadow -Wconversion \
			"$out/$h.c"
	done
	for t in "${tests[@]}"; do
		for std in c++98 c++11 c++17; do
			compile "$c" "$out/$t-$c-$std" -x c++ -std="$std" -O2 "${warn[@]}" "$here/$t.c"
		done
	done
done
echo "built $built programs with: ${ccs[*]} ${cxxs[*]}"

# Run them: every build of a test must pass.
ran=0
for b in "$out"/*; do
	[[ -x $b && -f $b ]] || continue
	name="$(basename "$b")"
	if [[ $name == layout-* ]]; then
		"$b" > "$out/$name.txt" || { echo "FAIL: $name"; exit 1; }
		[[ -e $out/layout.txt ]] || cp "$out/$name.txt" "$out/layout.txt"
	elif [[ $name == only_user-* ]]; then
		"$b" 2>/dev/null || { echo "FAIL: $name"; exit 1; }
	else
		"$b" > /dev/null 2> "$out/$name.err" || { cat "$out/$name.err"; echo "FAIL: $name"; exit 1; }
	fi
	ran=$((ran + 1))
done
# Every compiler and mode printed the same layout.
for f in "$out"/layout-*.txt; do
	cmp -s "$f" "$out/layout.txt" || { echo "FAIL: $(basename "$f") differs"; exit 1; }
done
echo "ran $ran programs: all passed ($(wc -l < "$out/layout.txt") layout facts)"
