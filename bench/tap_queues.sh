#!/bin/bash
# TCP between two TAP ports of vale0 (iperf3 -P 4), one namespace each: queues 1 vs 2,
# switch threads 1 vs 2, and the Linux bridge between two veth pairs, interleaved, REPS
# rounds of SECS seconds each. Prints one line per run: config, Gbit/s, and its sum.
# Usage (root, release build): bench/tap_queues.sh [REPS] [SECS]
# CONFIGS="1:1 2:2 4:4" (queues:threads, default "1:1 2:1 1:2 2:2") picks ours' rows.
set -u
REPS=${1:-3}; SECS=${2:-3}; CONFIGS=${CONFIGS:-1:1 2:1 1:2 2:2}
BIN=${BIN:-$(dirname "$0")/../target/release}
T=$(mktemp -d); S=$T/valed.sock
VP=
cleanup() {
  ip netns del vbq_a 2>/dev/null; ip netns del vbq_b 2>/dev/null
  ip link del vbqbr 2>/dev/null
  [ -n "$VP" ] && kill "$VP" 2>/dev/null && wait "$VP" 2>/dev/null
  VP=
}
trap 'cleanup; rm -rf $T' EXIT
nsup() {
  for n in a b; do
    ip netns add vbq_$n; ip -n vbq_$n link set lo up
    ip netns exec vbq_$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  done
}
place() { ip link set "$1" netns "$2"; ip -n "$2" addr add "$3" dev "$1"; ip -n "$2" link set "$1" up; }
measure() { # label
  ip netns exec vbq_a ping -c 2 -i 0.2 -W 1 198.20.0.2 >/dev/null || { echo "$1 FAILED ping"; return; }
  ip netns exec vbq_b iperf3 -s -1 -B 198.20.0.2 >/dev/null 2>&1 & local sp=$!
  sleep 0.5
  local g
  g=$(timeout $((SECS + 20)) ip netns exec vbq_a iperf3 -c 198.20.0.2 -t "$SECS" -P 4 -J |
      python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
  wait $sp 2>/dev/null
  echo "$1 ${g:-FAILED}"
}
ours() { # queues threads
  local extra=(); [ "$2" -gt 1 ] && extra=(--switch-threads "vale0=$2")
  "$BIN/valed" --socket "$S" "${extra[@]}" 2>"$T/valed.log" & VP=$!
  for _ in $(seq 50); do [ -S "$S" ] && break; sleep 0.1; done
  nsup
  for s in a b; do
    "$BIN/vale-ctl" --socket "$S" -n vbq$s --queues "$1" >/dev/null
    "$BIN/vale-ctl" --socket "$S" -a vale0:vbq$s >/dev/null
  done
  place vbqa vbq_a 198.20.0.1/24; place vbqb vbq_b 198.20.0.2/24
  measure "ours-q$1-t$2"
  "$BIN/vale-ctl" --socket "$S" list | grep "TAP interface," | sed 's/^ */  /'
  cleanup
}
bridge() {
  nsup
  ip link add vbqbr type bridge stp_state 0 forward_delay 0; ip link set vbqbr up
  for s in a b; do
    ip link add vbq$s type veth peer name vbq${s}p
    ip link set vbq${s}p master vbqbr; ip link set vbq${s}p up
  done
  place vbqa vbq_a 198.20.0.1/24; place vbqb vbq_b 198.20.0.2/24
  measure bridge
  cleanup
}
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs; iperf3 -P 4 -t $SECS, $REPS rounds"
for r in $(seq "$REPS"); do
  echo "# round $r"
  bridge
  for c in $CONFIGS; do ours "${c%%:*}" "${c##*:}"; done
done
