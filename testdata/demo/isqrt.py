"""The demo workload: CPU-bound pure Python.

`make demo` runs it two ways:
  pyworkers run -w 4 testdata/demo/isqrt.py
      the script below runs once in each of 4 own-GIL interpreters, each with its own n;
  pyworkers map -w 4 testdata/demo/isqrt.py:isqrt_sum  (and -w 1, to compare)
      isqrt_sum is called once per input line, on 4 interpreters (or 1).
"""

import math
import time

SIZES = [10_000_000, 15_000_000, 20_000_000, 25_000_000]


def isqrt_sum(n):
    """sum(isqrt(i) for i < n): about 1.6 s for n = 10,000,000 on a 2-core VM."""
    return sum(math.isqrt(i) for i in range(n))


if __name__ == "__main__":
    import pyworkers

    wid = pyworkers.worker_id()
    n = SIZES[wid % len(SIZES)]
    start = time.perf_counter()
    total = isqrt_sum(n)
    print(f"n={n:>11,}  sum={total:>19,}  {time.perf_counter() - start:6.2f}s in interpreter {wid}")
