"""A/B of valed's pinning: the "3 processes unpinned" row (bench/run.py ours_rate, 60 B) with
`--cpus auto` against `--no-pin`, alternating round by round.  Usage: python3 bench/pin_ab.py ROUNDS"""
import sys, os, time, statistics
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.chdir(os.path.dirname(HERE))
import run
res = {"auto": [], "no-pin": []}
cpu = {"auto": [], "no-pin": []}
def la(): return open("/proc/loadavg").read().split()[:3]
print("loadavg start", la(), flush=True)
for i in range(int(sys.argv[1])):
    for k in ("auto", "no-pin"):
        run.VALED_ARGS[:] = ["--cpus", "auto"] if k == "auto" else ["--no-pin"]
        m, c = run.ours_rate(3.0, 1, 1, 60, False)
        res[k].append(m); cpu[k].append(c or 0)
        print(f"round {i} {k}: {m:.2f} Mpps delivered, fwd {c:.2f} Mpps/CPU-s", flush=True)
print("loadavg end", la())
for k in res:
    print(f"{k}: median {statistics.median(res[k]):.2f} [{min(res[k]):.2f}-{max(res[k]):.2f}] Mpps; per CPU-s median {statistics.median(cpu[k]):.2f}")
ratios = [a / b for a, b in zip(res["auto"], res["no-pin"])]
print(f"auto/no-pin per round: median {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
