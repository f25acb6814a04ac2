"""CPython's own pools on pyworkers' benchmark workloads (benchfuncs.py beside it).

    python3.14 peers.py [--workers N] [--quick]

Prints one JSON object, {pool name: {metric: value}}, with the metrics of internal/bench's
Figures; pool/bench_test.go (BenchmarkPeers) and `pyworkers bench` report it beside pyworkers'
own figures, measured the same way.
"""

import argparse
import concurrent.futures as cf
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchfuncs  # noqa: E402

CPU_1MS = 15_000
CPU_100MS = 1_500_000
FULL = dict(round_trips=5000, tiny=100_000, cpu1ms=2000, payloads=200)
QUICK = dict(round_trips=1000, tiny=5000, cpu1ms=200, payloads=20)


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pool_rss_kib(ex):
    return rss_kib([os.getpid(), *list(getattr(ex, "_processes", None) or ())])


def throughput(ex, n, fn, *args):
    t = time.perf_counter()
    for f in [ex.submit(fn, *args) for _ in range(n)]:
        f.result()
    return n / (time.perf_counter() - t)


def measure(make, workers, counts):
    out = {"workers": workers, "speedup_workers": workers}
    t0 = time.perf_counter()
    ex = make(workers)
    ex.submit(benchfuncs.noop).result()
    out["ms_to_first_result"] = (time.perf_counter() - t0) * 1e3

    lat = []
    for _ in range(counts["round_trips"]):
        t = time.perf_counter_ns()
        ex.submit(benchfuncs.noop).result()
        lat.append(time.perf_counter_ns() - t)
    lat.sort()
    out["roundtrip_p50_us"] = lat[len(lat) // 2] / 1e3
    out["roundtrip_p99_us"] = lat[len(lat) * 99 // 100] / 1e3
    out["tasks_per_s"] = throughput(ex, counts["tiny"], benchfuncs.noop)
    out["cpu_1ms_tasks_per_s"] = throughput(ex, counts["cpu1ms"], benchfuncs.cpu, CPU_1MS)
    data = bytes(1 << 20)
    t = time.perf_counter()
    for _ in range(counts["payloads"]):
        ex.submit(benchfuncs.echo, data).result()
    out["payload_1mb_ms"] = (time.perf_counter() - t) / counts["payloads"] * 1e3
    ex.shutdown()

    times = {}
    for n in (1, workers):
        ex = make(n)
        list(ex.map(benchfuncs.noop_arg, range(n)))  # workers started before the clock
        t = time.perf_counter()
        list(ex.map(benchfuncs.cpu, [CPU_100MS] * (2 * workers)))
        times[n] = time.perf_counter() - t
        ex.shutdown()
    out["speedup"] = times[1] / times[workers]

    rss = {}
    for n in (1, 9):
        ex = make(n)
        list(ex.map(benchfuncs.noop_arg, range(4 * n)))
        rss[n] = pool_rss_kib(ex)
        ex.shutdown()
    out["mib_per_idle_worker"] = (rss[9] - rss[1]) / 8 / 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    counts = QUICK if a.quick else FULL
    pools = {
        "ThreadPoolExecutor": cf.ThreadPoolExecutor,
        "ProcessPoolExecutor": cf.ProcessPoolExecutor,
        "InterpreterPoolExecutor": cf.InterpreterPoolExecutor,
    }
    print(json.dumps({name: measure(make, a.workers, counts) for name, make in pools.items()}))


if __name__ == "__main__":
    main()
