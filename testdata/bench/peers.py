"""CPython's own pools on pyworkers' benchmark workloads (testdata/python/benchfuncs.py).

Run with the provisioned CPython 3.14:  python3.14 testdata/bench/peers.py [--quick]
Prints one JSON object: {pool name: {metric: value}}; pool/bench_test.go (BenchmarkPeers) and
`pyworkers bench` report it beside pyworkers' own figures.
"""

import concurrent.futures as cf
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import benchfuncs  # noqa: E402

QUICK = "--quick" in sys.argv
ROUND_TRIPS = 300 if QUICK else 2000
THROUGHPUT_TASKS = 2000 if QUICK else 20000
CPU_N = 1_500_000


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
    pids = [os.getpid()]
    procs = getattr(ex, "_processes", None)
    if procs:
        pids += list(procs)
    return rss_kib(pids)


def measure(name, make):
    out = {}
    # start to first result
    t0 = time.perf_counter()
    ex = make(2)
    ex.submit(benchfuncs.noop).result()
    out["ms_to_first_result"] = (time.perf_counter() - t0) * 1e3
    # tiny-task round trip
    lat = []
    for _ in range(ROUND_TRIPS):
        t = time.perf_counter_ns()
        ex.submit(benchfuncs.noop).result()
        lat.append(time.perf_counter_ns() - t)
    lat.sort()
    out["roundtrip_p50_us"] = lat[len(lat) // 2] / 1e3
    out["roundtrip_p99_us"] = lat[len(lat) * 99 // 100] / 1e3
    # tiny-task throughput, 2 workers
    t = time.perf_counter()
    for f in [ex.submit(benchfuncs.noop) for _ in range(THROUGHPUT_TASKS)]:
        f.result()
    out["tasks_per_s"] = THROUGHPUT_TASKS / (time.perf_counter() - t)
    ex.shutdown()
    # CPU-bound speed-up, 8 tasks on 1 worker vs 2
    times = {}
    for workers in (1, 2):
        ex = make(workers)
        ex.submit(benchfuncs.noop).result()
        t = time.perf_counter()
        list(ex.map(benchfuncs.cpu, [CPU_N] * 8))
        times[workers] = time.perf_counter() - t
        ex.shutdown()
    out["speedup_2v1"] = times[1] / times[2]
    # resident memory per extra idle worker (9 against 1), the whole pool's processes
    rss = {}
    for workers in (1, 9):
        ex = make(workers)
        list(ex.map(benchfuncs.noop_arg, range(4 * workers)))
        rss[workers] = pool_rss_kib(ex)
        ex.shutdown()
    out["mib_per_idle_worker"] = (rss[9] - rss[1]) / 8 / 1024
    return out


def main():
    pools = {
        "ThreadPoolExecutor": lambda n: cf.ThreadPoolExecutor(n),
        "ProcessPoolExecutor": lambda n: cf.ProcessPoolExecutor(n),
        "InterpreterPoolExecutor": lambda n: cf.InterpreterPoolExecutor(n),
    }
    print(json.dumps({name: measure(name, make) for name, make in pools.items()}))


if __name__ == "__main__":
    main()
