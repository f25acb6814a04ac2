"""CPython's own pools on pyworkers' benchmark workloads (benchfuncs.py beside it).

    python3.14 peers.py [--workers N] [--quick]
    python3.14 peers.py [--workers N] --only-separate ROUNDS [--call N]
    python3.14 peers.py --only-loop CALLS [--call N]
    python3.14 peers.py --only-rss POOL

Prints one JSON object, {pool name: {metric: value}}, with the metrics of internal/bench's
Figures; pool/bench_test.go (BenchmarkPeers) and `pyworkers bench` report it beside pyworkers'
own figures, measured the same way, with as many calls as internal/bench's Full and Quick
(the speed-up's rounds aside). CPython's pools start a worker only when a task finds none idle
(pool.New starts them all): every worker is started before a throughput, speed-up or memory
clock runs; the round trips, timed first, have the one the first task started. One more entry, "separate processes", holds only a
speed-up: the same calls in independent python processes, the most this machine gives.
--only-loop prints {"one interpreter": {"python_call_ms": ...}}: CALLS calls of
benchfuncs.cpu(N) timed in this process's own interpreter, Python's own speed.
"""

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchfuncs  # noqa: E402

CPU_1MS = 15_000
CPU_6MS = 90_000
FULL = dict(round_trips=5000, tiny=100_000, cpu1ms=2000, payloads=200, speedup_rounds=10, speedup_call=CPU_6MS)
QUICK = dict(round_trips=1000, tiny=20_000, cpu1ms=400, payloads=50, speedup_rounds=8, speedup_call=CPU_1MS)
CHUNK = 32  # the most calls pyworkers' Map hands a worker at once


def pss_kib(pids):
    """The memory the processes take between them: their proportional set sizes, in which a
    page several of them share counts once in all (a sum of RSS would count it in each)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total


def pool_pss_kib(ex):
    return pss_kib([os.getpid(), *list(getattr(ex, "_processes", None) or ())])


def start_all(ex, n):
    """Make ex start n workers, as pool.New starts them all: n calls at once that each hold a
    worker find none idle, and each submit starts one."""
    list(ex.map(benchfuncs.hold, [0.2] * n))


def throughput_each(ex, n, fn, *args):
    """n calls, one submit each, then every result in order."""
    t = time.perf_counter()
    for f in [ex.submit(fn, *args) for _ in range(n)]:
        f.result()
    return n / (time.perf_counter() - t)


def throughput_batched(ex, n):
    """n calls through executor.map in chunks of CHUNK, as pyworkers' Map batches them (only
    ProcessPoolExecutor batches: the thread-based pools take chunksize and submit each call)."""
    t = time.perf_counter()
    for _ in ex.map(benchfuncs.noop_arg, range(n), chunksize=CHUNK):
        pass
    return n / (time.perf_counter() - t)


def paired_speedup(wall, workers, rounds):
    """Median ratio wall(1) / wall(workers) over rounds pairs timed in ABBA order, as
    internal/bench's Speedup does: the CPU speed of a shared machine drifts over seconds."""
    ratios = []
    for r in range(rounds):
        t = {}
        for n in (1, workers) if r % 2 == 0 else (workers, 1):
            t[n] = wall(n)
        ratios.append(t[1] / t[workers])
    return statistics.median(ratios)


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import benchfuncs
benchfuncs.cpu(50_000)  # warm, as a pool's workers are: a cold first call is slower
start, calls = float(sys.argv[2]), int(sys.argv[3])
while time.time() < start:
    pass
t = time.time()
benchfuncs.loop(calls, int(sys.argv[4]))
print(t, time.time())
"""


def separate_processes(workers, rounds, call, per_worker):
    """The machine's reference: the same calls (benchfuncs.cpu(call)) in separate python
    processes, no pool and nothing shared. per_worker*workers calls in one process against
    per_worker calls in each of workers processes, all started together once they are up."""

    def wall(n):
        start = time.time() + 0.2
        args = [HERE, repr(start), str(per_worker * workers // n), str(call)]
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        spans = [tuple(map(float, p.communicate()[0].split())) for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("a reference process failed")
        return max(e for _, e in spans) - min(s for s, _ in spans)

    return {"workers": workers, "speedup_workers": workers, "speedup": paired_speedup(wall, workers, rounds)}


def measure(make, workers, counts):
    out = {"workers": workers, "speedup_workers": workers}
    t0 = time.perf_counter()
    ex = make(workers)
    ex.submit(benchfuncs.noop).result()
    out["ms_to_first_result"] = (time.perf_counter() - t0) * 1e3

    # Round trips with the one worker the first submit started: these pools' faster case (with
    # all started, each task may wake another, sleeping worker; 10-60 % slower here).
    lat = []
    for _ in range(counts["round_trips"]):
        t = time.perf_counter_ns()
        ex.submit(benchfuncs.noop).result()
        lat.append(time.perf_counter_ns() - t)
    lat.sort()
    out["roundtrip_p50_us"] = lat[len(lat) // 2] / 1e3
    out["roundtrip_p99_us"] = lat[len(lat) * 99 // 100] / 1e3
    start_all(ex, workers)  # no worker's start is timed as throughput
    out["tasks_per_s_each"] = throughput_each(ex, counts["tiny"], benchfuncs.noop)
    out["tasks_per_s"] = throughput_batched(ex, counts["tiny"])
    out["cpu_1ms_tasks_per_s"] = throughput_each(ex, counts["cpu1ms"], benchfuncs.cpu, CPU_1MS)
    data = bytes(1 << 20)
    t = time.perf_counter()
    for _ in range(counts["payloads"]):
        ex.submit(benchfuncs.echo, data).result()
    out["payload_1mb_ms"] = (time.perf_counter() - t) / counts["payloads"] * 1e3
    ex.shutdown()

    pools = {n: make(n) for n in (1, workers)}
    for n, ex in pools.items():
        start_all(ex, n)  # workers started and warm before the clock
        list(ex.map(benchfuncs.cpu, [1] * n))

    def cpu_wall(n):
        t = time.perf_counter()
        list(pools[n].map(benchfuncs.cpu, [counts["speedup_call"]] * (counts["per_worker"] * workers)))
        return time.perf_counter() - t

    out["speedup"] = paired_speedup(cpu_wall, workers, counts["speedup_rounds"])
    for ex in pools.values():
        ex.shutdown()

    out["mib_per_idle_worker"] = fresh_mib_per_idle_worker(make.__name__)
    return out


def mib_per_idle_worker(make):
    """The memory 9 idle workers take against 1, per worker."""
    kib = {}
    for n in (1, 9):
        ex = make(n)
        start_all(ex, n)
        list(ex.map(benchfuncs.noop_arg, range(4 * n)))
        kib[n] = pool_pss_kib(ex)
        ex.shutdown()
    return (kib[9] - kib[1]) / 8 / 1024


def fresh_mib_per_idle_worker(name):
    """mib_per_idle_worker in a fresh python, as internal/bench measures pyworkers' own: in a
    process that has run other work, new workers reuse memory it freed."""
    r = subprocess.run([sys.executable, __file__, "--only-rss", name], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[name]["mib_per_idle_worker"]


SEPARATE = "separate processes"
ONE = "one interpreter"
POOLS = {
    "ThreadPoolExecutor": cf.ThreadPoolExecutor,
    "ProcessPoolExecutor": cf.ProcessPoolExecutor,
    "InterpreterPoolExecutor": cf.InterpreterPoolExecutor,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-separate", type=int, metavar="ROUNDS", default=0,
                    help="measure only the separate processes' speed-up, in ROUNDS pairs")
    ap.add_argument("--only-loop", type=int, metavar="CALLS", default=0,
                    help="time CALLS calls of benchfuncs.cpu in this interpreter, nothing else")
    ap.add_argument("--call", type=int, default=CPU_6MS, help="benchfuncs.cpu's n for --only-separate and --only-loop")
    ap.add_argument("--calls-per-worker", type=int, default=32,
                    help="CPU-bound calls per worker in a speed-up timing (internal/bench passes its SpeedupCallsPerWorker)")
    ap.add_argument("--only-rss", metavar="POOL", choices=sorted(POOLS),
                    help="measure only POOL's memory per idle worker (a pool class's name)")
    a = ap.parse_args()
    if a.only_rss:
        print(json.dumps({a.only_rss: {"mib_per_idle_worker": mib_per_idle_worker(POOLS[a.only_rss])}}))
        return
    if a.only_loop:
        benchfuncs.loop(1, a.call)  # warm, as the pyworkers side is
        ms = benchfuncs.loop(a.only_loop, a.call) / a.only_loop * 1e3
        print(json.dumps({ONE: {"python_call_ms": ms}}))
        return
    if a.only_separate:
        print(json.dumps({SEPARATE: separate_processes(a.workers, a.only_separate, a.call, a.calls_per_worker)}))
        return
    counts = dict(QUICK if a.quick else FULL, per_worker=a.calls_per_worker)
    out = {name: measure(make, a.workers, counts) for name, make in POOLS.items()}
    out[SEPARATE] = separate_processes(a.workers, counts["speedup_rounds"], counts["speedup_call"], a.calls_per_worker)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
