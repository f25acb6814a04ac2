"""The demo workload: CPU-bound pure Python, one size per worker.

Run by `make demo` as `pyworkers run -w 4 testdata/demo/isqrt.py`: each of the four own-GIL
interpreters sums isqrt(i) for i below its own n, at the same time as the others.
"""

import math
import time

import pyworkers

SIZES = [10_000_000, 15_000_000, 20_000_000, 25_000_000]

wid = pyworkers.worker_id()
n = SIZES[wid % len(SIZES)]
start = time.perf_counter()
total = sum(math.isqrt(i) for i in range(n))
print(f"n={n:>11,}  sum={total:>19,}  {time.perf_counter() - start:6.2f}s in interpreter {wid}")
