#!/usr/bin/env python3
"""Side-by-side benchmark: our switch, a DPDK memif pair, the Linux bridge and the copy
ceiling, measured in one run on this machine. Prints medians over --runs with min-max
and the ratios the performance issue asks for.

    bench/run.py                 # 3 runs per row, 3-second windows
    bench/run.py --smoke         # 1 run, 1-second windows: proves each row works (CI)
    bench/run.py --only ours,ceiling
    (rows: ours, memif, vhost (dpdk-testpmd virtio_user on a vhost-user port), bridge,
    host (TAP ports and iperf3), attach (a veth attached through AF_PACKET and AF_XDP,
    60-byte frames each way), ceiling, paced (pkt-gen -R to a sleeping receiver: loss
    at 250k/500k/1M pps), vm (QEMU guests under TCG; not in the
    default set: about a minute per run) and shim (netmap's own pkt-gen under
    libvale_netmap.so against ours; not in the default set: needs --netmap-pktgen))

Rows that cannot run (no dpdk-testpmd, not root) print SKIP with the reason; a row whose
peer is there but fails, or that measures 0, prints FAILED and the script exits 1, and
under VALE_TEST_STRICT=1 (.ci/run, which installs every peer) a SKIP fails too unless
the machine is too small for the row (bench/test_run.py tests these rules). Every
process this script starts is stopped by PID; namespaces it creates are removed even on
failure. Standard library only.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VALE_BENCH_BIN", os.path.join(ROOT, "target", "release"))
MAC_B = "02:00:00:00:00:0b"
VALED_ARGS = []  # --valed-args
ROWS = {}  # name -> {size: [values]}, filled by main


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Procs:
    """Processes started here, stopped by PID whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, args, cpu=None, **kw):
        if cpu is not None:
            kw["preexec_fn"] = lambda: os.sched_setaffinity(0, {cpu})
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = subprocess.Popen(args, text=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------- ours


class Valed:
    def __init__(self, procs, tmp, extra=()):
        self.sock = os.path.join(tmp, "valed.sock")
        self.env = dict(os.environ, VALE_SOCKET=self.sock)
        self.p = procs.start([os.path.join(BIN, "valed"), "-q", "--socket", self.sock, *VALED_ARGS, *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("valed did not start")

    def stats(self):
        out = subprocess.run([os.path.join(BIN, "vale-ctl"), "--json", "stats"], env=self.env,
                             capture_output=True, text=True, check=True).stdout
        return {p["name"]: p["counters"] for p in json.loads(out)["ports"]}

    def fwd_cpu(self):
        """CPU seconds used so far by the forwarding thread(s)."""
        return sum(self.fwd_cpus())

    def fwd_cpus(self):
        """CPU seconds used so far by each forwarding thread."""
        out = []
        tdir = f"/proc/{self.p.pid}/task"
        for tid in os.listdir(tdir):
            try:
                with open(f"{tdir}/{tid}/comm") as f:
                    if not f.read().startswith("vale-fwd"):
                        continue
                with open(f"{tdir}/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
            except OSError:
                pass
        return out

    def pktgen(self, procs, *args):
        return procs.start([os.path.join(BIN, "pkt-gen"), *args], env=self.env,
                           stdout=subprocess.DEVNULL)

    def wait_ports(self, names, timeout=5):
        t = time.time()
        while time.time() - t < timeout:
            if all(n in self.stats() for n in names):
                return
            time.sleep(0.05)
        raise RuntimeError(f"ports {names} did not appear")


def ours_rate(secs, senders, receivers, length, broadcast, tool=None):
    """Delivered Mpps (from the daemon's counters over a window while traffic flows) and
    the forwarding thread's packets per CPU-second. `tool`: None for our pkt-gen, or
    {"rx": (path, env), "tx": (path, env)} for another pkt-gen (netmap's, under the
    LD_PRELOAD library) doing the same work; it runs until stopped."""
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp)

        def gen(*args, duration, t=None):
            if t is None:
                return v.pktgen(procs, *args, "--duration", str(duration))
            return procs.start([t[0], *args], env=dict(v.env, **t[1]), stdout=subprocess.DEVNULL)

        rx_tool, tx_tool = (tool or {}).get("rx"), (tool or {}).get("tx")
        rx_names = [f"vale0:r{i}" for i in range(receivers)]
        for n in rx_names:
            gen("-i", n, "-f", "rx", duration=int(secs) + 6, t=rx_tool)
        v.wait_ports(rx_names)
        dst = []
        if not broadcast:
            # The receiver announces its address so the senders' unicast is learned.
            subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", rx_names[0], "-f", "tx", "-n", "1",
                            "-S", MAC_B], env=v.env, stdout=subprocess.DEVNULL, check=True)
            dst = ["-D", MAC_B]
        tx_names = [f"vale0:s{i}" for i in range(senders)]
        for n in tx_names:
            gen("-i", n, "-f", "tx", "-l", str(length), *dst, duration=int(secs) + 3, t=tx_tool)
        v.wait_ports(tx_names)
        time.sleep(0.5)
        s0, c0, t0 = v.stats(), v.fwd_cpu(), time.time()
        time.sleep(secs)
        s1, c1, t1 = v.stats(), v.fwd_cpu(), time.time()
        rx = sum(s1[n]["rx_packets"] - s0[n]["rx_packets"] for n in rx_names)
        fwd = sum(s1[n]["forwarded"] - s0[n]["forwarded"] for n in tx_names)
        cpu = c1 - c0
        return rx / (t1 - t0) / 1e6, (fwd / cpu / 1e6) if cpu > 0 else None
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def ours_rtt(count):
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp)
        v.pktgen(procs, "-i", "vale0:pong", "-f", "pong", "--duration", "60")
        v.wait_ports(["vale0:pong"])
        out = subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", "vale0:ping", "-f", "ping", "-n", str(count)],
                             env=v.env, capture_output=True, text=True, timeout=120).stdout
        m = re.search(r"p50 (\d+) p90 \d+ p99 (\d+)", out)
        return (int(m.group(1)) / 1000, int(m.group(2)) / 1000) if m else (None, None)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_order():
    """This process's CPUs, one per physical core first, then their SMT siblings."""
    cpus = sorted(os.sched_getaffinity(0))
    seen, first, rest = set(), [], []
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                sib = f.read().strip()
        except OSError:
            sib = str(c)
        (rest if sib in seen else first).append(c)
        seen.add(sib)
    return first + rest


def ours_pinned(secs, length, threads=1, receivers=1, client_args=()):
    """`threads` forwarding threads, each pinned to its own CPU and owning one switch
    (vale0, vale1, ...), each switch with one `pair` client (sender and receiver in one
    busy process) pinned to another CPU (`client_args`: ("--touch",) for a client that
    writes each header and reads each frame). Returns (aggregate delivered Mpps, packets per
    forwarding CPU-second in Mpps) or a SKIP string."""
    cpus = cpu_order()
    if len(cpus) < 2 * threads:
        return f"SKIP: needs {2 * threads} CPUs, this machine gives {len(cpus)}"
    fwd_cpus, cli_cpus = cpus[0:2 * threads:2], cpus[1:2 * threads:2]
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp, ["--threads", str(threads), "--cpus", ",".join(map(str, fwd_cpus))])
        names = []
        for t in range(threads):
            # One at a time: a new switch goes to the least loaded thread.
            procs.start([os.path.join(BIN, "pair"), f"vale{t}", str(length), str(secs + 8), str(receivers),
                         *client_args],
                        cpu=cli_cpus[t], env=v.env, stdout=subprocess.DEVNULL)
            names += [f"vale{t}:a"] + ([f"vale{t}:b"] if receivers == 1 else
                                       [f"vale{t}:b{i}" for i in range(receivers)])
            v.wait_ports(names)
        time.sleep(1.0)
        s0, c0, t0 = v.stats(), v.fwd_cpu(), time.time()
        time.sleep(secs)
        s1, c1, t1 = v.stats(), v.fwd_cpu(), time.time()
        rx = sum(s1[n]["rx_packets"] - s0[n]["rx_packets"] for n in names if not n.endswith(":a"))
        cpu = c1 - c0
        return rx / (t1 - t0) / 1e6, (rx / cpu / 1e6) if cpu > 0 else None
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def ours_one_switch(secs, length, threads, pairs=8):
    """One switch (vale0) with `pairs` `pair` clients (a0->b0 .. a7->b7, unicast), forwarded
    by `threads` threads at once (valed --switch-threads vale0=N: the lane's thread and
    N-1 helpers). With enough CPUs, each forwarding thread gets its own and the clients
    share the rest; otherwise nothing is pinned (the figures then say only that the
    harness works). Returns (aggregate delivered Mpps, packets per forwarding
    CPU-second in Mpps, "pinned" or "unpinned")."""
    cpus = cpu_order()
    pinned = len(cpus) >= threads + 1
    extra = [] if threads == 1 else ["--switch-threads", f"vale0={threads}"]
    if pinned:
        extra += ["--cpus", ",".join(map(str, cpus[:threads]))]
        cli_cpus = cpus[threads:]
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp, extra)
        names = []
        for k in range(pairs):
            procs.start([os.path.join(BIN, "pair"), "vale0", str(length), str(secs + 3), "1", str(k)],
                        cpu=cli_cpus[k % len(cli_cpus)] if pinned else None, env=v.env,
                        stdout=subprocess.DEVNULL)
            names += [f"vale0:a{k}", f"vale0:b{k}"]
        v.wait_ports(names)
        time.sleep(1.0)
        s0, c0, t0 = v.stats(), v.fwd_cpu(), time.time()
        time.sleep(secs)
        s1, c1, t1 = v.stats(), v.fwd_cpu(), time.time()
        rx = sum(s1[n]["rx_packets"] - s0[n]["rx_packets"] for n in names if ":b" in n)
        cpu = c1 - c0
        return rx / (t1 - t0) / 1e6, (rx / cpu / 1e6) if cpu > 0 else None, "pinned" if pinned else "unpinned"
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def ours_rtt_pinned(count, mode):
    """ping/pong RTT with pinned processes. mode "colocated" (2 CPUs): the forwarding
    thread and a sleeping pong share one core, so its wake-up is a same-CPU one (~4 us on
    this VM, against ~24 us across CPUs), and ping spins (--busy) on the other core.
    mode "busy" (3 CPUs): ping and pong both spin, each on its own core: the switch's own
    latency, no wake-up in the path."""
    cpus = cpu_order()
    need = 2 if mode == "colocated" else 3
    if len(cpus) < need:
        return f"SKIP: needs {need} CPUs, this machine gives {len(cpus)}"
    pong_cpu, ping_cpu = (cpus[0], cpus[1]) if mode == "colocated" else (cpus[1], cpus[2])
    pong_busy = ["--busy"] if mode == "busy" else []
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp, ["--cpus", str(cpus[0])])
        procs.start([os.path.join(BIN, "pkt-gen"), "-i", "vale0:pong", "-f", "pong", *pong_busy, "--duration", "60"],
                    cpu=pong_cpu, env=v.env, stdout=subprocess.DEVNULL)
        v.wait_ports(["vale0:pong"])
        out = subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", "vale0:ping", "-f", "ping", "--busy", "-n", str(count)],
                             preexec_fn=lambda: os.sched_setaffinity(0, {ping_cpu}),
                             env=v.env, capture_output=True, text=True, timeout=120).stdout
        m = re.search(r"p50 (\d+) p90 \d+ p99 (\d+)", out)
        return (int(m.group(1)) / 1000, int(m.group(2)) / 1000) if m else "FAILED: no RTT line from pkt-gen"
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- DPDK memif


def dpdk_prefix(name):
    """A testpmd --file-prefix of this harness process alone: two harnesses (or tests)
    on one machine with the same prefix make the second testpmd exit at once (its EAL
    cannot take the first one's lock), seen as a broken pipe or a pair that never
    connects. Its runtime directory goes when this process ends (atexit)."""
    prefix = f"{name}{os.getpid()}"
    if prefix not in _PREFIXES:
        _PREFIXES.append(prefix)
    return prefix


_PREFIXES = []


@atexit.register
def _remove_dpdk_runtime_dirs():
    for p in _PREFIXES:
        shutil.rmtree(os.path.join("/var/run/dpdk", p), ignore_errors=True)


def memif(secs, length, huge=None):
    """The memif pair, tried twice: the client occasionally fails to connect."""
    r = memif_once(secs, length, huge)
    if isinstance(r, str) and "did not connect" in r:
        log(f"memif {length} B: {r}; trying once more")
        r = memif_once(secs, length, huge)
    return r


def memif_once(secs, length, huge=None):
    """dpdk-testpmd txonly (client) -> memif -> dpdk-testpmd rxonly (server); `huge`: a
    hugetlbfs mount (from Hugepages) to back their memory, else --no-huge."""
    tp = shutil.which("dpdk-testpmd")
    if not tp:
        return "SKIP: dpdk-testpmd not installed (apt-get install dpdk-dev)"
    tmp = tempfile.mkdtemp(prefix="vale-memif-")
    sock = os.path.join(tmp, "memif.sock")
    mem = ["--huge-dir", huge, "-m", "512"] if huge else ["--no-huge", "-m", "512"]
    eal = [*mem, "--no-pci", "--log-level=lib.eal:notice"]
    tparams = ["--total-num-mbufs=16384", "--nb-cores=1", "--rxq=1", "--txq=1"]
    procs = Procs()
    try:
        srv = procs.start([tp, "-l", "0,1", "--main-lcore", "1", *eal, "--file-prefix", dpdk_prefix("vbsrv"),
                           f"--vdev=net_memif0,role=server,socket={sock}", "--", "-i",
                           "--forward-mode=rxonly", *tparams], stdin=subprocess.PIPE)
        # The client gives up if the server's socket is not there yet; a server on huge
        # pages can take more than a second to map its memory, so wait for the socket.
        # (testpmd's memif socket is abstract by default: look for it in /proc/net/unix.)
        def listening():
            try:
                with open("/proc/net/unix") as f:
                    return any(line.rstrip().endswith(sock) for line in f)
            except OSError:
                return os.path.exists(sock)
        deadline = time.monotonic() + 20.0
        while not listening() and time.monotonic() < deadline and srv.poll() is None:
            time.sleep(0.05)
        if not listening():
            return "FAILED: testpmd server made no memif socket in 20 s (did not connect)"
        time.sleep(0.2)
        cli = procs.start([tp, "-l", "0,1", "--main-lcore", "0", *eal, "--file-prefix", dpdk_prefix("vbcli"),
                           f"--vdev=net_memif0,role=client,socket={sock}", "--", "-i",
                           "--forward-mode=txonly", f"--txpkts={length}", *tparams], stdin=subprocess.PIPE)
        time.sleep(3.0)
        cli.stdin.write("start\n")
        cli.stdin.flush()
        srv.stdin.write("start\n")
        srv.stdin.flush()
        time.sleep(1.5)
        # testpmd's Rx-pps is "since the last show": the first show only sets the mark.
        for _ in range(max(1, int(secs)) + 1):
            time.sleep(1.0)
            srv.stdin.write("show port stats all\n")
            srv.stdin.flush()
        time.sleep(0.5)
        for p in (cli, srv):
            p.stdin.write("stop\nquit\n")
            p.stdin.flush()
        out, _ = srv.communicate(timeout=20)
        cli.communicate(timeout=20)
        samples = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", out)][1:]
        samples = [s for s in samples if s > 0]
        if not samples:
            return "FAILED: testpmd reported no Rx-pps (memif did not connect)"
        return statistics.median(samples) / 1e6
    except (OSError, subprocess.SubprocessError) as e:
        return f"FAILED: testpmd: {e}"
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


class Hugepages:
    """2 MiB huge pages for the memif pair, reserved and mounted here (root only) and put
    back as they were on exit: `dir` is the hugetlbfs mount, or None with `why`."""

    SYS = "/sys/kernel/mm/hugepages/hugepages-2048kB"
    PAGES = 600  # two testpmds of -m 512 (256 pages each), and some slack

    def __init__(self):
        self.dir, self.why, self.orig = None, None, None
        if os.geteuid() != 0:
            self.why = "not root (hugepages are reserved through /sys and mounted)"
        elif not os.path.isdir(self.SYS):
            self.why = f"the kernel offers no 2 MiB huge pages ({self.SYS} is missing)"
        if self.why:
            return
        try:
            self.orig = self._read("nr_hugepages")
            free = self._read("free_hugepages")
            if free < self.PAGES:
                self._write(self.orig + self.PAGES - free)
            free = self._read("free_hugepages")
            if free < self.PAGES:
                self.why = f"asked for {self.PAGES} free 2 MiB pages, the kernel gave {free} (memory too fragmented?)"
                self.close()
                return
            d = tempfile.mkdtemp(prefix="vbhuge-")
            r = sh("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "vbhuge", d, check=False)
            if r.returncode != 0:
                os.rmdir(d)
                self.why = f"mount -t hugetlbfs failed: {r.stderr.strip()}"
                self.close()
                return
            self.dir = d
        except OSError as e:
            self.why = f"cannot reserve huge pages: {e}"
            self.close()

    def _read(self, name):
        with open(os.path.join(self.SYS, name)) as f:
            return int(f.read())

    def _write(self, n):
        with open(os.path.join(self.SYS, "nr_hugepages"), "w") as f:
            f.write(str(n))

    def close(self):
        if self.dir:
            sh("umount", self.dir, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.orig is not None:
            try:
                self._write(self.orig)
            except OSError as e:
                log(f"hugepages: could not set nr_hugepages back to {self.orig}: {e}")
            self.orig = None


MEMIF = "DPDK memif pair (testpmd, 64/1500 B), Mpps"


def memif_rows(a, add, notes, reps):
    """`reps` runs of the memif pair at each size, on huge pages when the machine gives
    them (said in a note either way). Each run's figure goes to the row; memif_ratios
    splits them into the pair's two regimes."""
    hp = Hugepages()
    try:
        how = f"hugepages (2 MiB, hugetlbfs at {hp.dir})" if hp.dir else f"--no-huge: {hp.why}"
        if not any(n.startswith("memif pair memory:") for n in notes):
            notes.append(f"memif pair memory: {how}")
        for _ in range(reps):
            for length, key in ((64, 60), (1500, 1514)):
                r = memif(a.secs, length, hp.dir)
                if isinstance(r, str) and hp.dir:
                    # A machine may let root mount huge pages that testpmd then cannot use
                    # (a container's hugetlb limit): fall back rather than fail the row.
                    note = f"memif {length} B on huge pages: {r.replace('FAILED', 'failed')}; ran with --no-huge"
                    if note not in notes:
                        notes.append(note)
                    r = memif(a.secs, length, None)
                if isinstance(r, str):
                    notes.append(f"memif {length} B: {r}")
                else:
                    log(f"  memif pair {length} B: {r:.2f} Mpps")
                    add(MEMIF, key, r)
    finally:
        hp.close()


def regimes(xs):
    """The memif pair is bimodal on a small machine (where the scheduler puts its two
    pollers: ~5 against ~25+ Mpps): split the runs at the widest ratio between
    neighbours when it exceeds 1.8x. Returns (slow, fast) lists, or (xs, []) for one
    regime."""
    xs = sorted(x for x in xs if isinstance(x, (int, float)) and x > 0)
    if len(xs) < 2:
        return xs, []
    i = max(range(len(xs) - 1), key=lambda k: xs[k + 1] / xs[k])
    if xs[i + 1] / xs[i] < 1.8:
        return xs, []
    return xs[:i + 1], xs[i + 1:]


def memif_ratios(m, key):
    """The memif lines of the verdict at one size: every run's figure, the median of
    each regime, and ours (the touching client, like for like; the zero-work `pair`
    beside it) over the median and over each regime's median."""
    runs = ROWS.get(MEMIF, {}).get(key, [])
    if not runs:
        return []
    slow, fast = regimes(runs)
    out = [f"memif pair {key} B, every run: {', '.join(f'{x:.2f}' for x in runs)}"]
    groups = [("all runs", runs)]
    if fast:
        out.append(f"memif pair {key} B, two regimes: slow {statistics.median(slow):.2f} Mpps ({len(slow)} runs), "
                   f"fast {statistics.median(fast):.2f} Mpps ({len(fast)} runs)")
        groups += [("slow regime", slow), ("fast regime", fast)]
    for label, row in (("touching client", TOUCH), ("zero-work pair", "ours: unicast 1->1, pinned, delivered Mpps")):
        o = m(row, key)
        if o:
            out.append(f"ours ({label}) / DPDK memif, {key} B: " +
                       ", ".join(f"{o / statistics.median(g):.2f}x ({n})" for n, g in groups))
    return out


def testpmd_on_ours(secs, length, into_switch, kind, queues=1):
    """`testpmd_on_ours_once`, tried twice when testpmd shows no traffic (seen on a
    loaded machine, as with the memif pair; a slow start-up is the suspect)."""
    r = testpmd_on_ours_once(secs, length, into_switch, kind, queues)
    if isinstance(r, str) and "did not connect" in r:
        log(f"{kind} {length} B: {r}; trying once more")
        r = testpmd_on_ours_once(secs, length, into_switch, kind, queues)
    return r


def testpmd_on_ours_once(secs, length, into_switch, kind, queues=1):
    """dpdk-testpmd on a port of ours, `kind` "memif" (a memif client on a memif port) or
    "vhost" (net_virtio_user on a vhost-user port): txonly into the switch to a pkt-gen
    receiver (its port's counter over a window), or pkt-gen into the switch to testpmd
    rxonly (its Rx-pps). With `queues` > 1 (vhost only) the port offers that many queue
    pairs, testpmd runs them all (`queues=N`, `--txq=N --rxq=N`, a forwarding core per
    pair as far as the machine has CPUs besides the main lcore: one on 2 vCPUs) and
    pkt-gen's port has as many rings (it fills ring 0 first, as netmap's does, so only
    the txonly direction spreads over the pairs). Returns (Mpps, Mpps per forwarding-thread CPU-second)."""
    tp = shutil.which("dpdk-testpmd")
    if not tp:
        return "SKIP: dpdk-testpmd not installed (apt-get install dpdk-dev)"
    if os.geteuid() != 0:
        return "SKIP: needs root for dpdk-testpmd"
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix=f"vale-{kind}-")
    try:
        sock = os.path.join(tmp, f"{kind}.sock")
        if kind == "memif":
            v = Valed(procs, tmp)
            create = ["memif", "vale0:m", "--path", sock]
            vdev = f"--vdev=net_memif0,role=client,socket={sock},socket-abstract=no"
        else:
            # testpmd --no-huge backs its memory with a memfd it made without sealing:
            # valed takes it only when told to trust the frontend.
            v = Valed(procs, tmp, extra=["--vhost-trust-unsealed"])
            # (One pair without the flag: what a daemon before --queues takes too.)
            create = ["vhost-user", "vale0:m", "--path", sock] + (["--queues", str(queues)] if queues > 1 else [])
            vdev = f"--vdev=net_virtio_user0,path={sock},queues={queues}"
        subprocess.run([os.path.join(BIN, "vale-ctl"), *create], env=v.env, check=True,
                       capture_output=True)
        mode = "txonly" if into_switch else "rxonly"
        # A forwarding core per queue pair where the machine has them (besides the main
        # lcore), so that on a big machine the pairs, each on its own switch thread with
        # `--valed-args "--switch-threads vale0=N"`, can scale; one on 2 vCPUs.
        cores = max(1, min(queues, (os.cpu_count() or 2) - 1))
        t = procs.start([tp, "-l", f"0-{cores}", "--main-lcore", "0", "--no-huge", "-m", "512", "--no-pci",
                         "--log-level=lib.eal:notice", "--file-prefix", dpdk_prefix(f"vb{kind}"), vdev, "--", "-i",
                         f"--forward-mode={mode}", f"--txpkts={length}", "--total-num-mbufs=16384",
                         f"--nb-cores={cores}", f"--txq={queues}", f"--rxq={queues}"], stdin=subprocess.PIPE)
        time.sleep(3.0)
        t.stdin.write("start\n")
        t.stdin.flush()
        conf = f"@conf:rings={queues}" if queues > 1 else ""
        if into_switch:
            v.pktgen(procs, "-i", f"vale0:r{conf}", "-f", "rx", "--duration", str(int(secs) + 4))
        else:
            v.pktgen(procs, "-i", f"vale0:t{conf}", "-f", "tx", "-l", str(length), "--duration",
                     str(int(secs) + 4))
        time.sleep(1.5)
        s0, c0, t0 = v.stats(), v.fwd_cpu(), time.time()
        for _ in range(max(1, int(secs)) + 1):
            time.sleep(1.0)
            t.stdin.write("show port stats all\n")
            t.stdin.flush()
        s1, c1, t1 = v.stats(), v.fwd_cpu(), time.time()
        t.stdin.write("stop\nquit\n")
        t.stdin.flush()
        out, _ = t.communicate(timeout=20)
        cpu = max(c1 - c0, 1e-9)
        moved = lambda port, key: s1.get(port, {}).get(key, 0) - s0.get(port, {}).get(key, 0)
        if into_switch:
            got = moved("vale0:r", "rx_packets")
            if got <= 0:
                return "FAILED: nothing arrived from testpmd"
            return got / (t1 - t0) / 1e6, got / cpu / 1e6
        samples = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", out)][1:]
        samples = [x for x in samples if x > 0]
        if not samples:
            return f"FAILED: testpmd reported no Rx-pps ({kind} did not connect)"
        return statistics.median(samples) / 1e6, moved("vale0:m", "rx_packets") / cpu / 1e6
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        return f"FAILED: {e}"
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- Linux bridge


NS = ["vbench_a", "vbench_b", "vbench_sw"]


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def bridge_down():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def bridge_up():
    bridge_down()
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sw = ["ip", "-n", "vbench_sw"]
    sh(*sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
    for side, ip in (("a", "198.18.0.1/24"), ("b", "198.18.0.2/24")):
        ns = f"vbench_{side}"
        sh("ip", "-n", ns, "link", "add", f"v{side}", "type", "veth", "peer", "name", f"s{side}", "netns", "vbench_sw")
        sh(*sw, "link", "set", f"s{side}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", ip, "dev", f"v{side}")
        sh("ip", "-n", ns, "link", "set", f"v{side}", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh(*sw, "link", "set", "br0", "up")
    time.sleep(0.5)


def bridge_rate(secs, length):
    procs = Procs()
    try:
        mac_b = sh("ip", "netns", "exec", "vbench_b", "cat", "/sys/class/net/vb/address").stdout.strip()
        rx = procs.start(["ip", "netns", "exec", "vbench_b", os.path.join(BIN, "afpkt"), "rx", "9000", str(secs)])
        time.sleep(0.3)
        payload = max(length, 42)
        sh("ip", "netns", "exec", "vbench_a", os.path.join(BIN, "afpkt"), "tx", "va", mac_b,
           "198.18.0.1", "198.18.0.2", "9000", str(payload), str(secs))
        out, _ = rx.communicate(timeout=secs + 40)
        m = re.search(r"rx: ([\d.]+) Mpps", out)
        return float(m.group(1)) if m else None
    finally:
        procs.stop_all()


def bridge_rtt(count):
    return ping_rtt("vbench_a", "198.18.0.2", count)


def busy_cpu_secs():
    """CPU-seconds all CPUs spent busy since boot (/proc/stat: everything but idle and
    iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def iperf3(client_ns, server_ns, server_ip, secs, valed=None):
    """One iperf3 TCP stream from client_ns to server_ns: (Gbit/s, CPU-seconds the
    whole machine was busy per GB received, and with `valed` its forwarding threads'
    CPU-seconds per GB), or Nones."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Until the server listens (a fixed wait lost the row on a busy machine).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and srv.poll() is None:
            ss = sh("ip", "netns", "exec", server_ns, "ss", "-Hltn", "sport = :5201", check=False).stdout
            if ss.strip():
                break
            time.sleep(0.05)
        b0, f0 = busy_cpu_secs(), valed.fwd_cpu() if valed else 0
        out = sh("ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-t", str(max(1, int(secs))), "-J",
                 check=False).stdout
        busy, fwd = busy_cpu_secs() - b0, valed.fwd_cpu() - f0 if valed else None
        try:
            r = json.loads(out)["end"]["sum_received"]
            gb = r["bytes"] / 1e9
            return r["bits_per_second"] / 1e9, busy / gb, fwd / gb if valed else None
        except (ValueError, KeyError, ZeroDivisionError):
            return None, None, None
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def ping_rtt(ns, dst, count):
    out = sh("ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.002", dst, check=False).stdout
    rtts = sorted(float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        return None, None
    return rtts[len(rtts) // 2], rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]


TAP_NS = ["vbtap_a", "vbtap_b"]


def ours_tap(secs, count):
    """Two namespaces, each with a TAP port of vale0 (vale-ctl -n / -a): iperf3 TCP
    Gbit/s and ping RTT through the switch, the kernel on both ends."""
    if os.geteuid() != 0:
        return "SKIP: needs root for network namespaces and TAP devices"
    if not shutil.which("iperf3"):
        return "SKIP: iperf3 not installed (apt-get install iperf3)"
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp)
        for ns in TAP_NS:
            sh("ip", "netns", "del", ns, check=False)
        for side, ip in (("a", "198.19.0.1/24"), ("b", "198.19.0.2/24")):
            tap, ns = f"vbtap{side}", f"vbtap_{side}"
            for args in (["-n", tap], ["-a", f"vale0:{tap}"]):
                subprocess.run([os.path.join(BIN, "vale-ctl"), *args], env=v.env, check=True, capture_output=True)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", tap, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", ip, "dev", tap)
            sh("ip", "-n", ns, "link", "set", tap, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        p50, p99 = ping_rtt("vbtap_a", "198.19.0.2", count)
        return iperf3("vbtap_a", "vbtap_b", "198.19.0.2", secs, v), p50, p99
    except subprocess.CalledProcessError as e:
        return f"FAILED: {' '.join(e.cmd)}: {(e.stderr or '').strip()}"
    finally:
        procs.stop_all()
        for ns in TAP_NS:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


ATTACH_NS = "vbnic"


def ours_attach(secs, xdp, inbound):
    """A veth whose peer sits in a namespace, attached to vale0 through AF_PACKET or
    (xdp) AF_XDP. inbound: afpkt floods 60-byte frames from the namespace into the
    switch (a pkt-gen port receives): the Mpps the sender gets out. Otherwise pkt-gen
    sends 60-byte UDP frames through the switch to the namespace's address: the Mpps
    its UDP socket receives."""
    if os.geteuid() != 0:
        return "SKIP: needs root for network namespaces"
    if xdp and not shutil.which("ethtool"):
        return "SKIP: ethtool not installed (apt-get install ethtool)"
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp)
        sh("ip", "netns", "del", ATTACH_NS, check=False)
        sh("ip", "link", "del", "vbnicb", check=False)
        sh("ip", "netns", "add", ATTACH_NS)
        sh("ip", "link", "add", "vbnica", "type", "veth", "peer", "name", "vbnicb")
        sh("ip", "link", "set", "vbnica", "netns", ATTACH_NS)
        sh("ip", "-n", ATTACH_NS, "addr", "add", "10.9.0.2/24", "dev", "vbnica")
        sh("ip", "-n", ATTACH_NS, "link", "set", "vbnica", "up")
        sh("ip", "link", "set", "vbnicb", "up")
        if xdp:
            # AF_XDP carries no offload flags: the sender must finish its checksums.
            sh("ip", "netns", "exec", ATTACH_NS, "ethtool", "-K", "vbnica", "tx", "off")
        subprocess.run([os.path.join(BIN, "vale-ctl"), "-a", "vale0:vbnicb", *(["--xdp"] if xdp else [])],
                       env=v.env, check=True, capture_output=True)
        afpkt = os.path.join(BIN, "afpkt")
        if inbound:
            rx = v.pktgen(procs, "-i", "vale0:r", "-f", "rx", "--duration", str(int(secs) + 3))
            time.sleep(1)
            out = sh("ip", "netns", "exec", ATTACH_NS, afpkt, "tx", "vbnica", "ff:ff:ff:ff:ff:ff",
                     "10.9.0.1", "10.9.0.2", "9", "60", str(secs)).stdout
            m = re.search(r"tx: ([\d.]+) Mpps", out)
        else:
            mac = sh("ip", "netns", "exec", ATTACH_NS, "cat", "/sys/class/net/vbnica/address").stdout.strip()
            rx = procs.start(["ip", "netns", "exec", ATTACH_NS, afpkt, "rx", "9", str(secs)])
            time.sleep(0.5)
            subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", "vale0:g", "-f", "tx", "-D", mac, "-s", "10.9.0.1:9",
                            "-d", "10.9.0.2:9", "-l", "60", "--duration", str(max(1, int(secs)))],
                           env=v.env, capture_output=True, check=False)
            out, _ = rx.communicate(timeout=secs + 40)
            m = re.search(r"rx: ([\d.]+) Mpps", out)
        return float(m.group(1)) if m else None
    except subprocess.CalledProcessError as e:
        return f"FAILED: {' '.join(e.cmd)}: {(e.stderr or '').strip()}"
    finally:
        procs.stop_all()
        sh("ip", "netns", "del", ATTACH_NS, check=False)
        sh("ip", "link", "del", "vbnicb", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- VMs


def vm_pair(secs, how):
    """Two TCG guests (scripts/build-guest), B running iperf3 against A for `secs`:
    how = "vhost" (our vhost-user ports on vale1), "stream" (our -netdev stream ports),
    "tap" (their tap interfaces attached to vale1 by name) or "bridge" (their taps in a
    Linux bridge). Returns
    Gbit/s from the client's report, or a SKIP string. Under TCG this measures the
    emulated guests more than the switch."""
    if os.geteuid() != 0:
        return "SKIP: needs root"
    if not shutil.which("qemu-system-x86_64"):
        return "SKIP: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    cache = os.path.join(ROOT, "target", "guest")
    r = subprocess.run([os.path.join(ROOT, "scripts", "build-guest"), cache], capture_output=True, text=True)
    if r.returncode != 0:
        return f"FAILED: scripts/build-guest: {r.stderr.strip()}"
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-vm-")
    taps = ["vbvma", "vbvmb"]
    try:
        v = Valed(procs, tmp) if how != "bridge" else None
        if how == "bridge":
            sh("ip", "link", "del", "vbvmbr", check=False)
            sh("ip", "link", "add", "vbvmbr", "type", "bridge", "stp_state", "0", "forward_delay", "0")
            sh("ip", "link", "set", "vbvmbr", "up")
        vms = []
        for i, (tap, role) in enumerate(zip(taps, ["t_role=server", f"t_role=client t_peer=10.58.0.1 t_wait=3 t_time={int(secs)}"])):
            dev = f"virtio-net-pci,netdev=n0,mac=52:54:00:12:35:0{i + 1}"
            extra = []
            if how == "stream":
                sock = os.path.join(tmp, f"{tap}.sock")
                subprocess.run([os.path.join(BIN, "vale-ctl"), "qemu-stream", f"vale1:{tap}", "--listen", sock],
                               env=v.env, check=True, capture_output=True)
                netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}"
            elif how == "vhost":
                sock = os.path.join(tmp, f"{tap}.sock")
                subprocess.run([os.path.join(BIN, "vale-ctl"), "vhost-user", f"vale1:{tap}", "--path", sock],
                               env=v.env, check=True, capture_output=True)
                # Guest memory shared with valed; vectors=0: QEMU 7.2's TCG + vhost-user
                # MSI-X pitfall (reference/qemu-guests.md).
                extra = ["-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
                         "-chardev", f"socket,id=c0,path={sock}"]
                netdev = "vhost-user,id=n0,chardev=c0"
                dev += ",vectors=0"
            else:
                netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
            log_path = os.path.join(tmp, f"{tap}.log")
            vms.append((procs.start(["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1", "-M", "pc",
                                     "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                                     "-serial", f"file:{log_path}", "-kernel", os.path.join(cache, "vmlinuz"),
                                     "-initrd", os.path.join(cache, "initramfs.gz"), "-append",
                                     f"console=ttyS0 quiet panic=-1 no_timer_check t_ip=10.58.0.{i + 1}/24 {role}",
                                     *extra, "-netdev", netdev, "-device", dev],
                                    stdout=subprocess.DEVNULL), log_path))
            if how in ("tap", "bridge"):
                for _ in range(100):
                    if sh("ip", "link", "show", tap, check=False).returncode == 0:
                        break
                    time.sleep(0.1)
                sh("ip", "link", "set", tap, "up")
                if how == "tap":
                    subprocess.run([os.path.join(BIN, "vale-ctl"), "-a", f"vale1:{tap}"], env=v.env, check=True,
                                   capture_output=True)
                else:
                    sh("ip", "link", "set", tap, "master", "vbvmbr")
        client, log_path = vms[1]
        try:
            client.wait(timeout=secs + 60)
        except subprocess.TimeoutExpired:
            return "FAILED: the client VM did not finish"
        with open(log_path, errors="replace") as f:
            out = f.read()
        m = re.search(r"([\d.]+) ([MG])bits/sec\s+receiver", out)
        if not m:
            return "FAILED: no iperf3 result from the guest"
        return float(m.group(1)) / (1000 if m.group(2) == "M" else 1)
    except subprocess.CalledProcessError as e:
        return f"FAILED: {' '.join(e.cmd)}: {(e.stderr or '').strip()}"
    finally:
        procs.stop_all()
        for t in taps:
            sh("ip", "link", "del", t, check=False)
        sh("ip", "link", "del", "vbvmbr", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- paced


PACED_RATES = (250_000, 500_000, 1_000_000)
PACED = {}  # rate -> [(sent, received, ring_full)], one per run


def paced_once(secs, rate):
    """`pkt-gen -f tx -R rate` to a `pkt-gen -f rx` that sleeps in poll(), three
    processes unpinned (valed's defaults). Returns (sent: the sender's summary, received:
    the receiver's summary, ring_full: the switch's count, forwarding thread's CPU share,
    other drops: every other drop the switch counted), or a FAILED string when the
    frames do not add up (sent = delivered + ring_full + other drops). A receiver that
    can follow the rate should get every frame."""
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="vale-bench-")
    try:
        v = Valed(procs, tmp)
        n = int(rate * secs)
        # No -W: on a loaded machine a sender can stall for a second, and the receiver
        # must not leave before the sender is done. It is stopped below.
        rx = procs.start([os.path.join(BIN, "pkt-gen"), "-i", "vale0:r", "-f", "rx",
                          "--duration", str(int(secs) * 10 + 60)], env=v.env)
        v.wait_ports(["vale0:r"])
        subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", "vale0:r", "-f", "tx", "-n", "1", "-S", MAC_B],
                       env=v.env, stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.3)
        st0, c0, t0 = v.stats(), v.fwd_cpu(), time.time()
        tx = subprocess.run([os.path.join(BIN, "pkt-gen"), "-i", "vale0:s", "-f", "tx", "-R", str(rate),
                             "-n", str(n), "-D", MAC_B], env=v.env, capture_output=True, text=True,
                            timeout=secs * 10 + 30).stdout
        fwd = (v.fwd_cpu() - c0) / (time.time() - t0)
        # The ports' counters go when their last client leaves: read them while the
        # receiver is still there, once it has had time to drain its ring.
        time.sleep(1.0)
        st = v.stats()
        rx.send_signal(signal.SIGTERM)
        out, _ = rx.communicate(timeout=20)
        sent = re.search(r"Sent (\d+) packets", tx)
        got = re.search(r"Received (\d+) packets", out)
        if not sent or not got:
            return f"FAILED: no summary from pkt-gen (tx: {tx[-200:]!r}, rx: {out[-200:]!r})"
        sent, got = int(sent.group(1)), int(got.group(1))
        # Counted from just before the sender started (the receiver's announcement is not
        # part of it).
        before = lambda port, f: f(st0[port]) if port in st0 else 0  # noqa: E731
        ring_full = sum(c["drops"]["ring_full"] - before(p, lambda c0: c0["drops"]["ring_full"])
                        for p, c in st.items())
        other = sum(sum(c["drops"].values()) - before(p, lambda c0: sum(c0["drops"].values()))
                    for p, c in st.items()) - ring_full
        delivered = st["vale0:r"]["rx_packets"] - st0["vale0:r"]["rx_packets"]
        if delivered + ring_full + other != sent or got > delivered:
            return (f"FAILED: frames do not add up: sent {sent}, delivered {delivered}, ring_full {ring_full}, "
                    f"other drops {other}, received {got}")
        return sent, got, ring_full, fwd, other
    except (OSError, subprocess.SubprocessError, RuntimeError, KeyError) as e:
        return f"FAILED: {e}"
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def paced_rows(a, add, notes):
    """One run of the `paced` row at each rate; the figures go to PACED (printed by
    paced_table) and the received Mpps to the main table."""
    for rate in PACED_RATES:
        r = paced_once(a.secs, rate)
        if isinstance(r, str):
            notes.append(f"paced {rate} pps: {r}")
            continue
        PACED.setdefault(rate, []).append(r)
        log(f"  paced {rate} pps: sent {r[0]} received {r[1]} ring_full {r[2]} fwd CPU {100 * r[3]:.0f}%")


def paced_table():
    """Lines for the `paced` row: per rate, the medians of sent / received / ring_full,
    loss % and the forwarding thread's CPU share, then each run's figures."""
    if not PACED:
        return []
    lines = ["paced: pkt-gen -f tx -R RATE -> pkt-gen -f rx (sleeps in poll), unpinned, 60 B",
             f"{'rate pps':>10} {'sent':>10} {'received':>10} {'ring_full':>10} {'loss %':>8} {'fwd CPU':>8}"
             "   per run: sent/received/ring_full (loss %)"]
    for rate, runs in PACED.items():
        loss = [100.0 * (s - g) / s if s else 100.0 for s, g, *_ in runs]
        per = "; ".join(f"{s}/{g}/{f} ({x:.3f} %)" for (s, g, f, *_), x in zip(runs, loss))
        s, g, f, c, _ = (statistics.median(col) for col in zip(*runs))
        lines.append(f"{rate:>10} {s:>10.0f} {g:>10.0f} {f:>10.0f} {statistics.median(loss):>8.3f} "
                     f"{100 * c:>7.0f}%   {per}")
    return lines


# ---------------------------------------------------------------------------- ceiling


CEILING = "copy ceiling (copy_frame only, pinned as ours), Mpps"
# The copier's copies per CPU-second of its own: against the forwarding thread's packets
# per CPU-second, a comparison that holds on a shared machine too.
CEILING_CPU = "copy ceiling: copier Mpps per CPU-second"
TOUCH_CPU = "ours: touching client, fwd Mpps per CPU-second"


def ceiling(secs, length):
    """copy-ceiling with our best path's setup: the copy on the CPU valed's forwarding
    thread gets in ours_pinned, the reader on the `pair` client's, buffers of valed's
    size (2112 B unless --valed-args says --buf-size)."""
    cpus = cpu_order()
    buf = "2112"
    if "--buf-size" in VALED_ARGS[:-1]:
        buf = VALED_ARGS[VALED_ARGS.index("--buf-size") + 1]
    copy_cpu, read_cpu = cpus[0], cpus[1 % len(cpus)]
    out = sh(os.path.join(BIN, "copy-ceiling"), str(length), str(secs), "256", buf, str(copy_cpu),
             str(read_cpu)).stdout
    m = re.search(r": ([\d.]+) Mpps .*copier ([\d.]+) Mpps per CPU-second", out)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


# ---------------------------------------------------------------------------- main


TOUCH = "ours: pinned, client touches frames (as testpmd), Mpps"


def touch_rows(a, add, notes):
    """Ours measured as the memif pair is: the same pinned setup as the `pair` row, but
    the client does testpmd's work (`pair --touch`): the sender writes each frame's
    42-byte header before publishing it (txonly), the receiver reads every byte of every
    frame (as a memif receiver copies it out of the ring). The ratio to memif uses it."""
    for length in (60, 1514):
        r = ours_pinned(a.secs, length, client_args=("--touch",))
        if isinstance(r, str):
            notes.append(f"ours pinned, touching client, {length} B: {r}")
        else:
            add(TOUCH, length, r[0])
            add(TOUCH_CPU, length, r[1])


def ours_rows(a, add, notes):
    for length in (60, 1514):
        r = ours_pinned(a.secs, length)
        if isinstance(r, str):
            notes.append(f"ours pinned {length} B: {r}")
        else:
            add("ours: unicast 1->1, pinned, delivered Mpps", length, r[0])
            add("ours: pinned fwd thread, Mpps per CPU-second", length, r[1])
    touch_rows(a, add, notes)
    r = ours_pinned(a.secs, 60, receivers=4)
    if isinstance(r, str):
        notes.append(f"ours pinned broadcast: {r}")
    else:
        add("ours: broadcast 1->4, pinned, delivered Mpps", 60, r[0])
    for length in (60, 1514):
        mpps, per_cpu = ours_rate(a.secs, 1, 1, length, False)
        add("ours: unicast, 3 processes unpinned, Mpps", length, mpps)
        add("ours: same, fwd Mpps per CPU-second", length, per_cpu)
    add("ours: broadcast 1->4, 5 processes unpinned, Mpps", 60, ours_rate(a.secs, 1, 4, 60, True)[0])
    add("ours: fan-in 4->1, unpinned, delivered Mpps", 60, ours_rate(a.secs, 4, 1, 60, False)[0])
    p50, p99 = ours_rtt(200 if a.smoke else 2000)
    add("ours: ping/pong RTT us, unpinned, both sleep (p50 | p99)", 60, p50)
    add("ours: ping/pong RTT us, unpinned, both sleep (p50 | p99)", 1514, p99)
    for mode, label in (("colocated", "ours: RTT, busy ping, pong on fwd core (p50 | p99)"),
                        ("busy", "ours: RTT, busy ping+pong, 3 cores (p50 | p99)")):
        r = ours_rtt_pinned(200 if a.smoke else 5000, mode)
        if isinstance(r, str):
            notes.append(f"{label}: {r}")
        else:
            add(label, 60, r[0])
            add(label, 1514, r[1])


def shim_rows(a, add, notes):
    """netmap's own pkt-gen (built by hand from netmap's sources, --netmap-pktgen) under
    libvale_netmap.so against ours doing the same work, alternating in one run: tx -> rx
    on one switch, 3 processes unpinned, delivered Mpps from valed's counters."""
    if not a.netmap_pktgen:
        notes.append("netmap pkt-gen under the shim: SKIP: give --netmap-pktgen PATH (netmap's apps/pkt-gen, built outside the repository)")
        return
    env = {"LD_PRELOAD": os.path.join(BIN, "libvale_netmap.so")}
    poll = (a.netmap_pktgen, env)
    tools = [("poll", {"rx": poll, "tx": poll})]
    if a.netmap_pktgen_busy:
        # A busy-waiting receiver too would leave the forwarding thread no CPU on two.
        tools.append(("busy-wait sender", {"rx": poll, "tx": (a.netmap_pktgen_busy, env)}))
    for length in (60, 1514):
        add("shim: our pkt-gen tx -> rx (baseline), Mpps", length, ours_rate(a.secs, 1, 1, length, False)[0])
        for how, tool in tools:
            r = ours_rate(a.secs, 1, 1, length, False, tool=tool)[0]
            add(f"shim: netmap's pkt-gen ({how}) under LD_PRELOAD, Mpps", length, r)


def scaling(a):
    """--scaling 1,2,4,8: disjoint switch/client pairs over N forwarding threads; with
    --one-switch, one switch of 8 port pairs forwarded by N threads at once."""
    counts = [int(x) for x in a.scaling.split(",")]
    res = {n: [] for n in counts}
    for run in range(a.runs):
        log(f"scaling run {run + 1}/{a.runs}")
        for n in counts:
            r = ours_one_switch(a.secs, a.length, n) if a.one_switch else ours_pinned(a.secs, a.length, n)
            res[n].append(r)
            log(f"  threads {n}: {r}")
    what = "one switch, 8 port pairs" if a.one_switch else "one switch per thread"
    print(f"\nscaling ({what}), {a.length}-byte frames, CPUs in use order {cpu_order()}")
    if a.one_switch:
        how = sorted({r[2] for rs in res.values() for r in rs if not isinstance(r, str)})
        print(f"(forwarding threads {' / '.join(how)}; unpinned on a machine with fewer CPUs than threads + 1:"
              " then the figures test the harness, not the scaling)")
    print(f"{'threads':>8} {'aggregate Mpps':>28} {'per thread':>10} {'vs linear':>10} {'fwd Mpps/CPU-s':>16}")
    base = None
    for n in counts:
        ok = [r for r in res[n] if not isinstance(r, str)]
        if not ok:
            print(f"{n:>8} {res[n][0]}")
            continue
        agg = fmt([r[0] for r in ok])
        m = statistics.median(r[0] for r in ok)
        per = statistics.median(r[1] for r in ok if r[1])
        if n == 1 or base is None:
            base = m / n
        print(f"{n:>8} {agg:>28} {m / n:>10.2f} {m / (base * n):>9.2f}x {per:>16.2f}")
    return 0


def loadavg(when):
    """The machine's load at `when`: the figures of a shared machine mean little without
    it (other work competes with the pinned pollers)."""
    with open("/proc/loadavg") as f:
        one, five, fifteen = f.read().split()[:3]
    return f"loadavg at {when}: {one} {five} {fifteen} (1/5/15 min; {os.cpu_count()} CPUs)"


def fmt(xs, unit=""):
    xs = [x for x in xs if isinstance(x, (int, float))]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{m:.2f}{unit} [{min(xs):.2f}-{max(xs):.2f}]" if len(xs) > 1 else f"{m:.2f}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memif-runs", type=int, default=5,
                    help="runs of the DPDK memif pair in all (at least; spread over --runs)")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--smoke", action="store_true", help="1 run of 1 s per row; asserts no speed")
    ap.add_argument("--only", default="ours,memif,vhost,bridge,host,attach,ceiling,paced")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--scaling", metavar="LIST", help="only the multi-thread scaling table, e.g. 1,2,4,8")
    ap.add_argument("--length", type=int, default=60, help="frame length for --scaling")
    ap.add_argument("--one-switch", action="store_true",
                    help="with --scaling: one switch of 8 port pairs on N threads (--switch-threads)")
    ap.add_argument("--netmap-pktgen", metavar="PATH", help="netmap's pkt-gen binary for the `shim` row")
    ap.add_argument("--netmap-pktgen-busy", metavar="PATH", help="the same built with -DBUSYWAIT (syncs by ioctl, no poll)")
    ap.add_argument("--vhost-queues", default="1", metavar="LIST",
                    help="queue pairs of the vhost rows' port and testpmd, e.g. 1,2 (each a row set, "
                         "alternating within a run)")
    ap.add_argument("--valed-args", default="", help="extra flags for every valed started, e.g. '--buf-size 2112'")
    a = ap.parse_args()
    VALED_ARGS.extend(a.valed_args.split())
    if a.smoke:
        a.runs, a.secs, a.memif_runs = 1, 1.0, 1
    only = set(a.only.split(","))
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "vale-tools", "-p", "vale-bench", "-p", "vale-netmap"],
                       cwd=ROOT, check=True)
    if a.scaling:
        return scaling(a)
    rows = ROWS  # name -> {size: [values]}
    notes = []
    failed = []

    def add(name, key, v):
        rows.setdefault(name, {}).setdefault(key, []).append(v)

    for run in range(a.runs):
        log(f"run {run + 1}/{a.runs}")
        print(loadavg(f"start of run {run + 1}/{a.runs}"), flush=True)
        if "ours" in only:
            try:
                ours_rows(a, add, notes)
            except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
                notes.append(f"ours: FAILED: {e}")
                failed.append("ours")
        if "memif" in only:
            # At least --memif-runs runs of the pair in all, spread over the runs.
            memif_rows(a, add, notes, -(-a.memif_runs // a.runs))
            for into, label in ((True, "memif: testpmd -> ours -> pkt-gen"),
                                (False, "memif: pkt-gen -> ours -> testpmd")):
                for length, key in ((64, 60), (1500, 1514)):
                    r = testpmd_on_ours(a.secs, length, into, "memif")
                    if isinstance(r, str):
                        notes.append(f"{label} {length} B: {r}")
                    else:
                        add(f"{label}, Mpps", key, r[0])
                        add(f"{label}, Mpps per fwd CPU-s", key, r[1])
        if "bridge" in only:
            if os.geteuid() != 0:
                notes.append("Linux bridge: SKIP: needs root for network namespaces")
            else:
                try:
                    bridge_up()
                    for length in (60, 1514):
                        add("Linux bridge (AF_PACKET -> UDP), Mpps", length, bridge_rate(a.secs, length))
                    p50, p99 = bridge_rtt(100 if a.smoke else 500)
                    add("Linux bridge: ping RTT us (p50 | p99)", 60, p50)
                    add("Linux bridge: ping RTT us (p50 | p99)", 1514, p99)
                    if "host" in only and shutil.which("iperf3"):
                        gbps, cpu, _ = iperf3("vbench_a", "vbench_b", "198.18.0.2", a.secs)
                        add("Linux bridge: iperf3 TCP over veth, Gbit/s", 60, gbps)
                        add("Linux bridge: iperf3, machine CPU-seconds per GB", 60, cpu)
                except subprocess.CalledProcessError as e:
                    notes.append(f"Linux bridge: FAILED: {' '.join(e.cmd)}: {e.stderr.strip()}")
                finally:
                    bridge_down()
        if "host" in only:
            r = ours_tap(a.secs, 100 if a.smoke else 500)
            if isinstance(r, str):
                notes.append(f"ours, TAP ports: {r}")
            else:
                add("ours: iperf3 TCP between TAP ports, Gbit/s", 60, r[0][0])
                add("ours: iperf3, machine CPU-seconds per GB", 60, r[0][1])
                add("ours: iperf3, forwarding thread CPU-seconds per GB", 60, r[0][2])
                add("ours: ping RTT between TAP ports us (p50 | p99)", 60, r[1])
                add("ours: ping RTT between TAP ports us (p50 | p99)", 1514, r[2])
        if "attach" in only:
            for xdp, how in ((False, "AF_PACKET"), (True, "AF_XDP")):
                for inbound, label in ((True, f"ours: veth attached ({how}), into the switch, Mpps"),
                                       (False, f"ours: veth attached ({how}), out to a UDP socket, Mpps")):
                    r = ours_attach(a.secs, xdp, inbound)
                    if isinstance(r, str):
                        notes.append(f"{label}: {r}")
                    else:
                        add(label, 60, r)
        if "vm" in only:
            for how, label in (("vhost", "VMs (TCG): iperf3 over our vhost-user ports, Gbit/s"),
                               ("stream", "VMs (TCG): iperf3 over our -netdev stream ports, Gbit/s"),
                               ("tap", "VMs (TCG): iperf3 over taps attached to ours, Gbit/s"),
                               ("bridge", "VMs (TCG): iperf3 over taps in a Linux bridge, Gbit/s")):
                r = vm_pair(a.secs, how)
                if isinstance(r, str):
                    notes.append(f"{label}: {r}")
                else:
                    add(label, 60, r)
        if "vhost" in only:
            for to_vm, what in ((True, "pkt-gen -> ours -> testpmd virtio_user"),
                                (False, "testpmd virtio_user -> ours -> pkt-gen")):
                for length in (60, 1514):
                    for q in [int(x) for x in a.vhost_queues.split(",")]:
                        pairs = "" if q == 1 else f" ({q} queue pairs)"
                        label = f"vhost-user{pairs}: {what}, Mpps"
                        r = testpmd_on_ours(a.secs, length, not to_vm, "vhost", q)
                        if isinstance(r, str):
                            notes.append(f"{label} {length} B: {r}")
                        else:
                            add(label, length, r[0])
                            add(f"{label[:-6]}, Mpps per fwd CPU-s", length, r[1])
        if "shim" in only:
            shim_rows(a, add, notes)
        if "paced" in only:
            paced_rows(a, add, notes)
        if "ceiling" in only:
            for length in (60, 1514):
                mpps, per_cpu = ceiling(a.secs, length)
                add(CEILING, length, mpps)
                add(CEILING_CPU, length, per_cpu)
        print(loadavg(f"end of run {run + 1}/{a.runs}"), flush=True)

    print(f"\n{'row':<56} {'60 B':>26} {'1514 B':>26}")
    for name, by in rows.items():
        print(f"{name:<56} {fmt(by.get(60, [])):>26} {fmt(by.get(1514, [])):>26}")
    print()

    def m(name, key):
        return med(rows.get(name, {}).get(key, []))

    ratios = []
    for key in (60, 1514):
        o = m("ours: unicast 1->1, pinned, delivered Mpps", key)
        for label, other in (("Linux bridge", "Linux bridge (AF_PACKET -> UDP), Mpps"),):
            x = m(other, key)
            if o and x:
                ratios.append(f"ours / {label}, {key} B: {o / x:.2f}x")
        # The ceiling bounds the zero-work row (its reader, like `pair`, reads no frame).
        for who, row, what, ceil in (("ours (zero-work pair)", "ours: unicast 1->1, pinned, delivered Mpps",
                                      "copy ceiling", CEILING),
                                     ("ours (zero-work pair), fwd per CPU-second",
                                      "ours: pinned fwd thread, Mpps per CPU-second",
                                      "copy ceiling's copier per CPU-second", CEILING_CPU)):
            ours, ceil_x = m(row, key), m(ceil, key)
            if ours and ceil_x:
                ratios.append(f"{who} / {what}, {key} B: {ours / ceil_x:.2f}x")
                if ours > ceil_x:
                    ratios.append(f"WARNING: {who} ({ours:.2f}) above the {what} ({ceil_x:.2f}) at {key} B: "
                                  "the ceiling is wrong")
        ratios += memif_ratios(m, key)
        g = o
        if g:
            ratios.append(f"ours unicast {key} B: {g * key * 8 / 1000:.1f} Gbit/s")
        base = m("shim: our pkt-gen tx -> rx (baseline), Mpps", key)
        for how in ("poll", "busy-wait sender"):
            x = m(f"shim: netmap's pkt-gen ({how}) under LD_PRELOAD, Mpps", key)
            if base and x:
                ratios.append(f"netmap's pkt-gen ({how}) under the shim / our pkt-gen, {key} B: {x / base:.2f}x")
    for bl, ul, what in (("ours: broadcast 1->4, pinned, delivered Mpps", "ours: unicast 1->1, pinned, delivered Mpps",
                          "pinned"),
                         ("ours: broadcast 1->4, 5 processes unpinned, Mpps", "ours: unicast, 3 processes unpinned, Mpps",
                          "unpinned")):
        b, u = m(bl, 60), m(ul, 60)
        if b and u:
            ratios.append(f"broadcast 1->4 / unicast 1->1, {what} (60 B): {b / u:.2f}x")
    c = m(CEILING, 60)
    b = m("ours: broadcast 1->4, pinned, delivered Mpps", 60)
    if b and c:
        ratios.append(f"broadcast 1->4 pinned, delivered copies / copy ceiling (60 B): {b / c:.2f}x")
    r_br = m("Linux bridge: ping RTT us (p50 | p99)", 60)
    for label in ("ours: RTT, busy ping, pong on fwd core (p50 | p99)",
                  "ours: ping/pong RTT us, unpinned, both sleep (p50 | p99)"):
        r_ours = m(label, 60)
        if r_ours and r_br:
            ratios.append(f"RTT p50 / Linux bridge ping, {label.split(',', 1)[1].split('(')[0].strip()}: {r_ours / r_br:.2f}x")
    t, b = m("ours: iperf3 TCP between TAP ports, Gbit/s", 60), m("Linux bridge: iperf3 TCP over veth, Gbit/s", 60)
    if t and b:
        ratios.append(f"iperf3 TCP, ours (TAP ports) / Linux bridge (veth): {t / b:.2f}x")
    t, b = m("ours: iperf3, machine CPU-seconds per GB", 60), m("Linux bridge: iperf3, machine CPU-seconds per GB", 60)
    if t and b:
        ratios.append(f"iperf3 TCP, machine CPU per GB, ours (TAP ports) / Linux bridge (veth): {t / b:.2f}x")
    t = m("ours: ping RTT between TAP ports us (p50 | p99)", 60)
    if t and r_br:
        ratios.append(f"ping RTT p50, ours (TAP ports) / Linux bridge (veth): {t / r_br:.2f}x")
    for d in ("into the switch", "out to a UDP socket"):
        x, p = m(f"ours: veth attached (AF_XDP), {d}, Mpps", 60), m(f"ours: veth attached (AF_PACKET), {d}, Mpps", 60)
        if x and p:
            ratios.append(f"attached veth, {d}, AF_XDP / AF_PACKET (60 B): {x / p:.2f}x")
    for r in ratios:
        print(r)
    for line in paced_table():
        print(line)
    for n in notes:
        print(n)
    code, verdict_lines = verdict(rows, notes + [f"{f}: FAILED" for f in failed],
                                  os.environ.get("VALE_TEST_STRICT") == "1")
    for line in verdict_lines:
        print(line)
    return code


def verdict(rows, notes, strict):
    """The exit code and what to say about it, from the rows' figures ({name: {size:
    [values]}}) and the notes (one per row that gave no figure: SKIP or FAILED). A row
    fails if it FAILED, gave no figure or only 0 (a rate of 0 means it did not work,
    whatever it printed); under `strict` a SKIP fails too, unless the machine itself is
    too small for the row (`needs N CPUs`)."""
    lines = []
    missing = [n for n, by in rows.items() if not any(isinstance(v, (int, float)) for vs in by.values() for v in vs)]
    zero = [f"{n} ({k} B)" for n, by in rows.items() for k, vs in by.items()
            if vs and all(isinstance(v, (int, float)) and v == 0 for v in vs)]
    failed = [n for n in notes if "FAILED" in n]
    skipped = [n for n in notes if "SKIP" in n and "FAILED" not in n and not re.search(r"needs \d+ CPUs", n)]
    if strict and skipped:
        lines.append(f"skipped although every peer is installed: {skipped}")
    if missing or failed or zero or (strict and skipped):
        lines.append(f"FAILED: rows without a figure: {missing}; rows at 0: {zero}; failed: {failed}")
        return 1, lines
    return 0, lines

if __name__ == "__main__":
    sys.exit(main())
