#!/bin/bash
# The measures that need more CPUs than the 2-vCPU development machine has, made in one
# call of a lent 16-core machine (docs/performance.md, "Measuring on a lent machine").
# That machine is bare (no DPDK, iperf3 or cargo; maybe no iproute2) and reaches no
# network, so everything it needs travels with the working tree in .devpack/:
#
#   bench/device.sh pack            # here: release build, stripped binaries, dpdk-testpmd
#                                   # (3 PMDs), iperf3, ip, ping, sysctl and their libraries
#   bench/device.sh run [BUDGET_S]  # there, as root: the steps below in order, each cut
#                                   # to what is left of BUDGET_S (default 540); one log
#                                   # per step in $OUT (or ./devout)
#   bench/device.sh check           # here: `run`'s first step (the probe) and a short
#                                   # testpmd start from .devpack with the system's PMD
#                                   # directory hidden, as on the lent machine
#
# Steps, most wanted first (issue 18 section 3, issue 15, issue 18 sections 2 and 4):
#   scaling   one switch of 8 port pairs on 1, 2, 4 and 8 threads (--switch-threads)
#   memif     the DPDK memif pair (huge pages) against testpmd <-> ours <-> pkt-gen
#   vhost     testpmd virtio_user on 1, 2 and 4 queue pairs, a switch of 4 threads
#   tap       iperf3 -P 4 between TAP ports: 1, 2, 4 queues on 1, 2, 4 threads, and the bridge
#   ours      the pinned, touching, unpinned, broadcast and RTT rows, and paced traffic
#   host      one iperf3 stream and ping between TAP ports, against the bridge
# From here: the device tool's run(command="bench/device.sh run 540", carry=[".devpack"],
# timeout_s=600); the logs come back as files (7: summary.txt and one per step; the tool
# returns at most 8). Tools the machine has are used; the carried ones only stand in for
# missing ones (.devpack/path is last in PATH). Standard tools only (bash, coreutils,
# python3).
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
PACK=$HERE/.devpack

# A program and the libraries it loads that are not glibc's own (the machine has a
# glibc; ours, 2.36, is what every carried file was linked against, and no carried
# file needs a newer one: `pack` checks), into $PACK/lib; a wrapper in $PACK/path.
carry_exe() { # path name [extra args for the wrapper]
  local exe=$1 name=$2; shift 2
  cp -L "$exe" "$PACK/lib/$name.bin"
  carry_libs "$exe"
  {
    echo '#!/bin/sh'
    echo 'D=$(dirname "$(readlink -f "$0")")/..'
    echo "LD_LIBRARY_PATH=\$D/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec \"\$D/lib/$name.bin\" $* \"\$@\""
  } >"$PACK/path/$name"
  chmod +x "$PACK/path/$name"
}
carry_libs() { # file...
  local lib
  for lib in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
    case $(basename "$lib") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*) continue ;;
    esac
    [ -e "$PACK/lib/$(basename "$lib")" ] || cp -L "$lib" "$PACK/lib/"
  done
}

pack() {
  cd "$HERE" || exit 1
  cargo build --release -q -p vale-tools -p vale-bench -p vale-netmap -p valed || exit 1
  rm -rf "$PACK"; mkdir -p "$PACK"/{bin,lib,pmds,path}
  local b
  for b in valed vale-ctl pkt-gen pair copy-ceiling afpkt; do
    objcopy --strip-all "target/release/$b" "$PACK/bin/$b"
  done
  local tp pmds
  tp=$(command -v dpdk-testpmd) || { echo "pack: dpdk-testpmd not installed (apt-get install dpdk-dev)"; exit 1; }
  pmds=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* | head -1)
  # The three drivers the rows load (memif, virtio_user, the ring mempool); EAL loads
  # every file of the directory given with -d.
  for b in net_memif net_virtio mempool_ring; do
    cp -L "$pmds/librte_$b.so" "$PACK/pmds/"
  done
  carry_libs "$PACK"/pmds/*.so
  carry_exe "$tp" dpdk-testpmd '-d "$D/pmds"'
  for b in iperf3 ip ping sysctl; do
    if command -v "$b" >/dev/null; then carry_exe "$(command -v "$b")" "$b"; else echo "pack: no $b here, not carried"; fi
  done
  # ping needs CAP_NET_RAW or this group range; root has both.
  strip --strip-unneeded "$PACK"/lib/* "$PACK"/pmds/* 2>/dev/null
  local newest
  newest=$(for f in "$PACK"/bin/* "$PACK"/lib/* "$PACK"/pmds/*; do objdump -T "$f" 2>/dev/null; done |
           grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  echo "pack: $(du -sh "$PACK" | cut -f1) in $PACK (newest glibc symbol needed: $newest), commit $(git rev-parse --short HEAD)"
  git rev-parse HEAD >"$PACK/commit"
}

probe() {
  echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB"
  echo "# pack of commit $(cat "$PACK/commit" 2>/dev/null || echo '?'), tree at $(cd "$HERE" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  grep -m1 "model name" /proc/cpuinfo
  local t
  for t in python3 ip ping iperf3 dpdk-testpmd sysctl mount timeout; do
    printf '  %-13s %s\n' "$t" "$(command -v "$t" || echo MISSING)"
  done
  [ -c /dev/net/tun ] && echo "  /dev/net/tun  present" || echo "  /dev/net/tun  MISSING (tap and host rows fail)"
  if ip netns add vbprobe 2>/dev/null; then
    ip -n vbprobe link add vbp0 type veth peer name vbp1 2>/dev/null && echo "  netns + veth  work" || echo "  veth         FAILS"
    ip -n vbprobe link add vbpbr type bridge 2>/dev/null && echo "  bridge        works" || echo "  bridge       FAILS"
    ip netns del vbprobe
  else
    echo "  netns         FAILS (tap rows cannot run)"
  fi
  echo "  hugepages     $(grep -E 'HugePages_(Total|Free)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
}

# One step: its log in $OUTDIR/NAME.txt, cut at CAP seconds or what is left of the budget.
step() { # name cap command...
  local name=$1 cap=$2; shift 2
  local left=$((END - $(date +%s)))
  if [ "$left" -lt 20 ]; then
    echo "== $name: not run, ${left} s of the budget left" | tee -a "$OUTDIR/summary.txt"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (at most $cap s): $*" | tee -a "$OUTDIR/summary.txt"
  local t0=$(date +%s) rc=0
  timeout -k 5 "$cap" "$@" >"$OUTDIR/$name.txt" 2>&1 || rc=$?
  echo "   rc $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/summary.txt"
  grep -E "^(scaling|row|ours|DPDK|memif|vhost|bridge|host|broadcast|paced|#|  )|x linear|FAILED|SKIP|Mpps|Gbit" \
    "$OUTDIR/$name.txt" | tail -40 >>"$OUTDIR/summary.txt"
}

run() {
  local budget=${1:-540}
  OUTDIR=${OUT:-$HERE/devout}; mkdir -p "$OUTDIR"
  END=$(($(date +%s) + budget))
  [ -x "$PACK/bin/valed" ] || { echo "run: no $PACK (bench/device.sh pack, then carry .devpack)"; exit 1; }
  export PATH=$PATH:$PACK/path VALE_BENCH_BIN=$PACK/bin BIN=$PACK/bin PYTHONUNBUFFERED=1
  cd "$HERE" || exit 1
  probe | tee "$OUTDIR/summary.txt"
  local py="python3 bench/run.py --no-build"
  step scaling 120 $py --scaling 1,2,4,8 --one-switch --runs 3 --secs 3
  step memif 150 $py --only memif --runs 2 --memif-runs 4 --secs 3
  step vhost 150 $py --only vhost --runs 1 --secs 3 --vhost-queues 1,2,4 --valed-args "--switch-threads vale0=4"
  step tap 100 env CONFIGS="1:1 2:2 4:4" bench/tap_queues.sh 2 3
  step ours 120 $py --only ours,paced --runs 2 --secs 3
  step host 60 $py --only bridge,host --runs 2 --secs 3
  echo "== done, $((END - $(date +%s))) s of the budget left" | tee -a "$OUTDIR/summary.txt"
}

check() {
  [ -x "$PACK/bin/valed" ] || { echo "check: run bench/device.sh pack first"; exit 1; }
  export PATH=/usr/bin:/bin:$PACK/path
  # The lent machine has no DPDK: hide the system's so that the carried one is what runs.
  local tp
  tp=$(command -v dpdk-testpmd)
  local t=/tmp/vbcheck$$
  mkdir -p $t
  "$PACK/bin/valed" --socket $t/v.sock --no-pin --vhost-trust-unsealed 2>$t/valed.log & local vp=$!
  for _ in $(seq 50); do [ -S $t/v.sock ] && break; sleep 0.1; done
  "$PACK/bin/vale-ctl" --socket $t/v.sock vhost-user vale0:v --path $t/vh.sock >/dev/null
  unshare -m bash -c "
    [ -d /usr/lib/x86_64-linux-gnu/dpdk ] && mount -t tmpfs none /usr/lib/x86_64-linux-gnu/dpdk
    mount --bind /dev/null $tp
    export PATH=/usr/sbin:/sbin:\$PATH:$PACK/path
    case \$(command -v dpdk-testpmd) in
      $PACK/path/*) echo \"testpmd: \$(command -v dpdk-testpmd)\" ;;
      *) echo 'check: FAILED, the system testpmd is not hidden'; exit 1 ;;
    esac
    timeout 40 dpdk-testpmd -l 0,1 --no-huge -m 512 --no-pci --file-prefix vbcheck$$ \
          --vdev=net_memif0,role=server,socket=$t/memif.sock --vdev=net_virtio_user0,path=$t/vh.sock \
          -- --total-num-mbufs 16384 --auto-start --stats-period 1 >$t/pmd.out 2>&1 </dev/null &
    pmd=\$!
    for i in \$(seq 300); do grep -q 'Port 1: ' $t/pmd.out && break; kill -0 \$pmd 2>/dev/null || break; sleep 0.1; done
    kill \$pmd 2>/dev/null; wait \$pmd 2>/dev/null
    out=\$(cat $t/pmd.out)
    echo \"\$out\" | grep -E 'Port [0-9]+: |EAL: (Error|Cannot)|No probed' | head -8
    echo \"\$out\" | grep -q 'Port 1: ' && echo 'check: testpmd from .devpack probed memif and virtio_user' ||
      { echo \"\$out\" | tail -15; echo 'check: FAILED, testpmd from .devpack did not probe both ports'; exit 1; }
  "
  local rc=$?
  kill $vp; wait $vp 2>/dev/null; rm -rf $t
  return $rc
}

case ${1:-} in
  pack) pack ;;
  run) shift; run "$@" ;;
  check) check && (export PATH=$PATH:$PACK/path; probe) ;;
  *) sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2 ;;
esac
