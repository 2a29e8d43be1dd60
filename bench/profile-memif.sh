#!/usr/bin/env bash
# Profiles valed's forwarding thread on the memif path: dpdk-testpmd (memif client,
# txonly, 64-byte frames) -> valed's memif port -> the switch -> pkt-gen rx, with
# `perf record` on the thread "vale-fwd0" for 4 s, then `perf report` of its top symbols.
# Needs root, dpdk-testpmd and perf (linux-perf); uses the release build.
# Usage: bench/profile-memif.sh [SECONDS_OF_TRAFFIC]   (default 14; bounded)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-14}
B=target/release
D=$(mktemp -d /tmp/vale-prof.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
$B/valed --socket "$D/ctl.sock" > "$D/valed.log" 2>&1 &
pids+=($!)
vp=$!
for _ in $(seq 50); do [ -S "$D/ctl.sock" ] && break; sleep 0.1; done
$B/vale-ctl --socket "$D/ctl.sock" memif vale0:m --path "$D/m.sock" --id 0
VALE_SOCKET=$D/ctl.sock $B/pkt-gen -i vale0:r -f rx --duration $((secs + 6)) > "$D/pkt-gen.log" 2>&1 &
pids+=($!)
timeout -s INT "$secs" dpdk-testpmd -l 0,1 --no-huge -m 512 --no-pci --file-prefix "prof$$" \
    --vdev=net_memif0,role=client,id=0,socket="$D/m.sock",socket-abstract=no \
    -- --forward-mode=txonly --txpkts=64 --nb-cores=1 --total-num-mbufs=16384 --stats-period 1 \
    > "$D/testpmd.log" 2>&1 &
pids+=($!)
sleep $((secs / 2))
tid=$(grep -l "^vale-fwd0$" /proc/$vp/task/*/comm | head -1 | cut -d/ -f5)
perf record -F 2000 -g -t "$tid" -o "$D/perf.data" -- sleep 4 2>/dev/null
perf report -i "$D/perf.data" --no-children --stdio 2>/dev/null | grep -E '^ +[0-9]+\.[0-9]+%' | head -25
echo "logs and perf.data: $D"
