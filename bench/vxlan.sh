#!/usr/bin/env bash
# VXLAN uplinks, ours against the kernel's, in one run (docs/performance.md section 10).
# Usage (root, after cargo build --release -p valed -p vale-tools):
#   bench/vxlan.sh [RUNS] [SECS]     (default 3 runs of 5 s)
# Rows, each a median of RUNS:
#   tcp kernel->kernel   iperf3 between two namespaces whose kernel vxlan devices are the VTEPs
#   tcp ours->kernel     iperf3 from a host behind valed's switch (a TAP) over valed's
#                        uplink to a kernel vxlan device; tcp kernel->ours the other way
#   tcp ours->ours       iperf3 between hosts behind two valeds joined only by VXLAN
#   udp60 kernel->kernel / ours->kernel: iperf3 -u -l 18 -b 0 (60-byte frames), the
#                        receiving kernel vx0's rx packets/s
#   pkt-gen60 ours->ours pkt-gen -l 60 into valed 1, frames out of valed 2's uplink per s
# Every "ours" row twice per run: with UDP GSO/GRO (the default, "gso") and with the
# uplinks made again with --no-offloads ("plain"), in turns, so that both see the same
# machine.
# Everything runs in namespaces vxp* made here and deleted on exit.
set -uo pipefail
RUNS=${1:-3}
SECS=${2:-5}
B=$(cd "$(dirname "$0")/.." && pwd)/target/release
D=$(mktemp -d /tmp/vxperf.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for n in vxpA vxpB vxpV vxpK vxpH vxpV2 vxpH2; do ip netns del $n 2>/dev/null; done
    rm -rf "$D"
}
trap cleanup EXIT
q() { "$@" >/dev/null 2>&1; }
ns() { ip netns add "$1"; ip -n "$1" link set lo up; ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; }
for n in vxpA vxpB vxpV vxpK vxpH vxpV2 vxpH2; do ip netns del $n 2>/dev/null; ns $n; done

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# commit $(git -C "$B/../.." rev-parse --short HEAD), runs $RUNS x ${SECS}s, machine shared with other builds"

# Kernel pair: A <-> B.
ip link add vxpa type veth peer name vxpb
ip link set vxpa netns vxpA; ip link set vxpb netns vxpB
ip -n vxpA addr add 198.18.9.1/24 dev vxpa; ip -n vxpA link set vxpa up
ip -n vxpB addr add 198.18.9.2/24 dev vxpb; ip -n vxpB link set vxpb up
ip -n vxpA link add vx0 type vxlan id 42 dstport 4789 local 198.18.9.1 remote 198.18.9.2 dev vxpa
ip -n vxpB link add vx0 type vxlan id 42 dstport 4789 local 198.18.9.2 remote 198.18.9.1 dev vxpb
ip -n vxpA addr add 198.19.9.1/24 dev vx0; ip -n vxpA link set vx0 up
ip -n vxpB addr add 198.19.9.2/24 dev vx0; ip -n vxpB link set vx0 up

# Ours against the kernel: H (TAP) - valed in V - K (kernel vxlan).
ip link add vxpv type veth peer name vxpk
ip link set vxpv netns vxpV; ip link set vxpk netns vxpK
ip -n vxpV addr add 198.18.8.1/24 dev vxpv; ip -n vxpV link set vxpv up
ip -n vxpK addr add 198.18.8.2/24 dev vxpk; ip -n vxpK link set vxpk up
ip netns exec vxpK ethtool -K vxpk tx off >/dev/null   # inner TCP checksums (README)
ip -n vxpK link add vx0 type vxlan id 42 dstport 4789 local 198.18.8.2 remote 198.18.8.1 dev vxpk
ip -n vxpK addr add 198.19.8.2/24 dev vx0; ip -n vxpK link set vx0 up
export VALE_SOCKET=$D/v1.sock
ip netns exec vxpV "$B/valed" --socket "$D/v1.sock" 2>"$D/v1.log" & PIDS+=($!)
# A second valed for ours<->ours: V2 over vxpw/vxpx, host H2.
ip link add vxpw type veth peer name vxpx
ip link set vxpw netns vxpV; ip link set vxpx netns vxpV2
ip -n vxpV addr add 198.18.7.1/24 dev vxpw; ip -n vxpV link set vxpw up
ip -n vxpV2 addr add 198.18.7.2/24 dev vxpx; ip -n vxpV2 link set vxpx up
ip netns exec vxpV2 "$B/valed" --socket "$D/v2.sock" 2>"$D/v2.log" & PIDS+=($!)
sleep 1
C1="$B/vale-ctl --socket $D/v1.sock"; C2="$B/vale-ctl --socket $D/v2.sock"
$C1 -n vxpt0 && $C1 -a vale0:vxpt0 && ip -n vxpV link set vxpt0 netns vxpH
ip -n vxpH addr add 198.19.8.1/24 dev vxpt0; ip -n vxpH link set vxpt0 mtu 1450 up
# Every uplink of ours made again, with offloads ($1 = gso) or without (plain).
uplinks() {
    local o=""; [ "$1" = plain ] && o=--no-offloads
    q $C1 -d vale0:up; q $C1 -d vale1:up7; q $C2 -d vale1:up7
    q $C1 -d vale2:up9; q $C2 -d vale2:up9
    q $C1 vxlan vale0:up --vni 42 --local 198.18.8.1 --remote 198.18.8.2 $o
    q $C1 vxlan vale1:up7 --vni 7 --local 198.18.7.1 --remote 198.18.7.2 $o
    q $C2 vxlan vale1:up7 --vni 7 --local 198.18.7.2 --remote 198.18.7.1 $o
    q $C1 vxlan vale2:up9 --vni 9 --local 198.18.7.1 --port 4790 --remote 198.18.7.2 $o
    q $C2 vxlan vale2:up9 --vni 9 --local 198.18.7.2 --port 4790 --remote 198.18.7.1 $o
    sleep 0.3
}
q $C1 vxlan vale0:up --vni 42 --local 198.18.8.1 --remote 198.18.8.2
$C1 -n vxpt1 && $C1 -a vale1:vxpt1 && ip -n vxpV link set vxpt1 netns vxpH
ip -n vxpH addr add 198.19.7.1/24 dev vxpt1; ip -n vxpH link set vxpt1 mtu 1450 up
q $C1 vxlan vale1:up7 --vni 7 --local 198.18.7.1 --remote 198.18.7.2
$C2 -n vxpt2 && $C2 -a vale1:vxpt2 && ip -n vxpV2 link set vxpt2 netns vxpH2
ip -n vxpH2 addr add 198.19.7.2/24 dev vxpt2; ip -n vxpH2 link set vxpt2 mtu 1450 up
q $C2 vxlan vale1:up7 --vni 7 --local 198.18.7.2 --remote 198.18.7.1
for dst in "vxpA 198.19.9.2" "vxpH 198.19.8.2" "vxpH 198.19.7.2"; do
    set -- $dst; ip netns exec "$1" ping -c 2 -W 1 -q "$2" >/dev/null || echo "# no ping $dst"
done

# iperf3 TCP from namespace $1 to $3 in $2: Gbit/s received.
tcp() {
    ip netns exec "$2" timeout $((SECS + 10)) iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    sleep 0.5
    ip netns exec "$1" timeout $((SECS + 10)) iperf3 -c "$3" -t "$SECS" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' 2>/dev/null || echo FAILED
    wait
}
rxpk() { ip -n "$1" -j -s link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
# iperf3 UDP 60-byte frames from $1 to $3 (in $2, whose $4 counts): Mpps received.
udp60() {
    ip netns exec "$2" timeout $((SECS + 10)) iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    sleep 0.5
    ip netns exec "$1" timeout $((SECS + 10)) iperf3 -c "$3" -u -l 18 -b 0 -t $((SECS + 2)) >/dev/null 2>&1 &
    sleep 1.5; a=$(rxpk "$2" "$4"); sleep "$SECS"; b=$(rxpk "$2" "$4")
    wait
    python3 -c "print('%.3f' % (($b - $a) / $SECS / 1e6))"
}
up_from() { $1 --json list | python3 -c 'import json,sys; print([h for h in json.load(sys.stdin)["hosts"] if h["name"] == "up9"][0]["counters"]["from_host"])'; }
pktgen60() {
    "$B/pkt-gen" -i vale2:a -f tx -l 60 >/dev/null 2>&1 &
    local p=$!
    sleep 1.5; a=$(up_from "$C2"); sleep "$SECS"; b=$(up_from "$C2")
    kill $p; wait $p 2>/dev/null
    python3 -c "print('%.3f' % (($b - $a) / $SECS / 1e6))"
}
q $C1 vxlan vale2:up9 --vni 9 --local 198.18.7.1 --port 4790 --remote 198.18.7.2
q $C2 vxlan vale2:up9 --vni 9 --local 198.18.7.2 --port 4790 --remote 198.18.7.1
# The receiving side needs a port for the frames to go to: a pkt-gen receiver.
VALE_SOCKET=$D/v2.sock "$B/pkt-gen" -i vale2:b -f rx >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5

for r in $(seq "$RUNS"); do
    echo "tcp kernel->kernel run $r: $(tcp vxpA vxpB 198.19.9.2) Gbit/s"
    echo "udp60 kernel->kernel run $r: $(udp60 vxpA vxpB 198.19.9.2 vx0) Mpps"
    for m in gso plain; do
        uplinks $m
        echo "tcp ours->kernel $m run $r: $(tcp vxpH vxpK 198.19.8.2) Gbit/s"
        echo "tcp kernel->ours $m run $r: $(tcp vxpK vxpH 198.19.8.1) Gbit/s"
        echo "tcp ours->ours $m run $r: $(tcp vxpH vxpH2 198.19.7.2) Gbit/s"
        echo "udp60 ours->kernel $m run $r: $(udp60 vxpH vxpK 198.19.8.2 vx0) Mpps"
        echo "pkt-gen60 ours->ours $m run $r: $(pktgen60) Mpps"
    done
    # The counters of the last mode's rows (plain: gso_sends and gro_reads stay 0).
    [ "$r" = "$RUNS" ] || continue
    uplinks gso
    echo "# ours->ours gso once more, for the counters: $(tcp vxpH vxpH2 198.19.7.2) Gbit/s"
    $C1 list | grep -A3 "vxlan vale1:up7"
    $C2 list | grep -A3 "vxlan vale1:up7"
done
