"""Workloads the pool benchmarks run, through pyworkers and through CPython's own pools.

Imports happen inside the functions: InterpreterPoolExecutor runs them in interpreters that
did not import this module's globals.
"""


def noop():
    return None


def cpu(n):
    """CPU-bound pure Python: about 6 ms for n = 90_000 on this project's machines."""
    import math

    return sum(math.isqrt(i) for i in range(n))


def loop(calls, n):
    """Seconds that calls calls of cpu(n) take, timed inside this interpreter: Python's own speed."""
    import time

    t = time.perf_counter()
    for _ in range(calls):
        cpu(n)
    return time.perf_counter() - t


def noop_arg(_):
    return None


def echo(data):
    return data


def hold(seconds):
    """Keep a worker busy for a while: n of these at once make a pool start n workers."""
    import time

    time.sleep(seconds)
