"""How this machine runs two busy cores: is a CPU-bound call slower while two run at once?

    python3.14 machine.py [--rounds R] [--calls C] [--call N]

Each round times C calls of benchfuncs.cpu(N) (the speed-up benchmark's call) per worker, one
worker alone and two at once (in that order, then the reverse in the next round), twice over: in own-GIL subinterpreters of this process
(concurrent.interpreters, one thread each: how pyworkers runs them, without Go) and in separate
python processes. Timing is inside Python, per call. It prints a line per round and a summary:
the call time two at once over one alone, for each way, and how much a call alone varied.
A ratio of 1.00 is a machine that runs two busy cores as fast as one; both ways close to each
other means running the interpreters in one process costs nothing by itself.
"""

import argparse
import statistics
import subprocess
import sys
import threading
import time
from concurrent import interpreters

HERE = sys.path[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=32)
    ap.add_argument("--call", type=int, default=90_000, help="benchfuncs.cpu's n (90_000: about 6 ms)")
    a = ap.parse_args()

    queue = interpreters.create_queue()
    interps = []
    for _ in range(2):
        it = interpreters.create()
        it.prepare_main(q=queue)
        it.exec(f"import sys; sys.path.insert(0, {HERE!r}); import benchfuncs; benchfuncs.cpu({a.call})")
        interps.append(it)
    loop = f"q.put(benchfuncs.loop({a.calls}, {a.call}) / {a.calls})"

    def in_process(k):
        threads = [threading.Thread(target=interps[j].exec, args=(loop,)) for j in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statistics.mean(queue.get() for _ in range(k))

    child = (f"import sys, time; sys.path.insert(0, {HERE!r}); import benchfuncs; benchfuncs.cpu({a.call})\n"
             "start = float(sys.argv[1])\n"
             "while time.time() < start:\n    pass\n"
             f"print(benchfuncs.loop({a.calls}, {a.call}) / {a.calls})")

    def processes(k):
        start = time.time() + 0.2  # all started and warm before any times
        procs = [subprocess.Popen([sys.executable, "-c", child, str(start)], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]
        return statistics.mean(float(p.communicate()[0]) for p in procs)

    ours, theirs, alone = [], [], []
    try:
        for r in range(a.rounds):
            if r % 2 == 0:  # ABBA: drift within a round does not favour either
                one, two = in_process(1), in_process(2)
                p_one, p_two = processes(1), processes(2)
            else:
                p_two, p_one = processes(2), processes(1)
                two, one = in_process(2), in_process(1)
            ours.append(two / one)
            theirs.append(p_two / p_one)
            alone += [one, p_one]
            print(f"{time.strftime('%H:%M:%S')}  call time 2 vs 1: in one process {two / one:.3f}, "
                  f"in processes {p_two / p_one:.3f}  (a call alone: {one * 1e3:.2f} / {p_one * 1e3:.2f} ms)",
                  flush=True)
    finally:
        for it in interps:
            it.close()
    print(f"median call time 2 vs 1 over {a.rounds} rounds: subinterpreters of one process "
          f"{statistics.median(ours):.3f} (range {min(ours):.2f}-{max(ours):.2f}), separate processes "
          f"{statistics.median(theirs):.3f} (range {min(theirs):.2f}-{max(theirs):.2f}); a call alone took "
          f"{min(alone) * 1e3:.2f}-{max(alone) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
