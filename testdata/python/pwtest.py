"""Functions the Go tests of pyworkers call inside real interpreters."""

import sys
import time

import pwtest_other


def ident(x):
    return x


def noop():
    return None


def add(a, b=0):
    return a + b


def describe(x):
    """The Python type of x, recursively: what Go's values became on this side."""
    t = type(x).__name__
    if isinstance(x, (list, tuple)):
        return [t, [describe(v) for v in x]]
    if isinstance(x, dict):
        return [t, {k: describe(v) for k, v in x.items()}]
    return t


def boom(msg):
    raise ValueError(msg)


class CustomError(Exception):
    pass


def custom():
    raise CustomError("custom failure")


def chained():
    try:
        {}["missing"]
    except KeyError as e:
        raise RuntimeError("outer failure") from e


def implicit():
    try:
        1 / 0
    except ZeroDivisionError:
        raise ValueError("failed while handling")


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


def bad_str():
    raise BadStr()


class ExitingStr(Exception):
    def __str__(self):
        raise SystemExit("from __str__")


def exiting_str(k=0):
    """Raise an exception whose str() raises SystemExit, a BaseException (k: an item number)."""
    raise ExitingStr()


def in_other_module():
    return pwtest_other.fail_deep(3)


def exit_with(code):
    sys.exit(code)


def exit_on_interrupt(kind):
    """Wait for the task's interrupt, then raise SystemExit (kind "exit") or MemoryError."""
    try:
        while True:
            time.sleep(0.01)
    except KeyboardInterrupt:
        if kind == "exit":
            sys.exit(130)
        raise MemoryError("pretend it ran out as it stopped") from None


class JobExit(SystemExit):
    """A SystemExit of a program's own (as click's Exit once was): it ends a program all the same."""


def exit_subclass(code):
    raise JobExit(code)


def spin():
    while True:
        pass


def spin_catching_exceptions():
    # `except Exception` must not swallow the interrupt (a BaseException)
    while True:
        try:
            pass
        except Exception:
            pass


def cpu_window(start_ns, stop_ns):
    """Busy-loop from start_ns until stop_ns (time.monotonic_ns, shared by all interpreters of
    the process). Returns (wall ns, this thread's CPU ns) spent looping."""
    while time.monotonic_ns() < start_ns:
        pass
    w0, c0 = time.monotonic_ns(), time.thread_time_ns()
    n = 0
    while time.monotonic_ns() < stop_ns:
        n += 1
    return (time.monotonic_ns() - w0, time.thread_time_ns() - c0)


def deep(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


def print_lines(tag, n):
    for i in range(n):
        print(f"{tag * 40} {i}")


def print_from_thread(text):
    import threading

    t = threading.Thread(target=lambda: print(text))
    t.start()
    t.join()


class Greeter:
    @staticmethod
    def hello(name):
        return f"hello, {name}"


NOT_CALLABLE = 42


_calls = 0


def count_calls():
    """How many times this interpreter ran count_calls (a fresh interpreter starts at 1)."""
    global _calls
    _calls += 1
    return _calls


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def slow_worker_id(seconds):
    """Sleep, then say which worker ran the call."""
    import pyworkers

    time.sleep(seconds)
    return pyworkers.worker_id()


def swallow_interrupts(n):
    """Ignore the first n interrupts, then stop: a task that does not die when told."""
    caught = 0
    while caught < n:
        try:
            while True:
                pass
        except KeyboardInterrupt:
            caught += 1
    return caught


def raise_memory_error():
    raise MemoryError("pretend the interpreter ran out")


class _NoNames(type):
    def __getattribute__(cls, name):
        if name == "__qualname__":
            raise RuntimeError("this metaclass gives no names")
        return super().__getattribute__(name)


class OddError(Exception, metaclass=_NoNames):
    """An exception whose type's __qualname__ raises."""


def odd(k):
    """count_calls(), or OddError for k == 1."""
    if k == 1:
        raise OddError("odd one out")
    return count_calls()


class ArrayMemoryError(MemoryError):
    """As numpy's _ArrayMemoryError: one allocation too big, the interpreter is fine."""


def raise_memory_error_subclass():
    raise ArrayMemoryError("cannot allocate 8 TiB for an array")


def mixed(k):
    """A soak task: what it does depends on k % 50 (see pool's TestSoak)."""
    kind = k % 50
    if kind < 20:
        return k * 2
    if kind < 30:
        raise ValueError(f"task {k} fails")
    if kind < 40:
        print(f"task {k} prints")
        return k
    if kind < 49:
        if k % 1000 == 43:
            sys.exit(k)
        return -k
    if k // 50 % 2:  # runs until its deadline interrupts it: a sleep, or a busy loop
        time.sleep(3600)
    while True:
        pass


def main_eval(expr):
    """Evaluate expr in __main__ (where a pool's Setup puts its names)."""
    return eval(expr, sys.modules["__main__"].__dict__)


class SlowStr(Exception):
    """An exception whose str() takes 50 ms of CPU: where an interrupt lands while it is formatted."""

    def __str__(self):
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
        return "slow to say"


def raise_slow_str():
    """Counts itself with count_calls' counter, then raises SlowStr."""
    global _calls
    _calls += 1
    raise SlowStr()


def buffer_last_byte(mv):
    """The last byte of a memoryview (of a shared Buffer)."""
    return mv[-1]


def type_and_len(x):
    """The type name and length of x, e.g. 'list0'."""
    return type(x).__name__ + str(len(x))


async def await_blocked():
    """Wait for a child task that never awaits: the loop cannot turn (BenchmarkCancel)."""
    import asyncio

    async def child():
        while True:
            pass

    await asyncio.gather(child())


async def async_sleep_then(seconds, value):
    """sleep_then as an async target (run on the worker's event loop)."""
    import asyncio

    await asyncio.sleep(seconds)
    return value

def import_hang():
    """Import, inside a call, a module whose import never finishes (until interrupted)."""
    import pwtest_hang  # noqa: F401


def batch_item(k, spoil=False):
    """Print "ran k" and return k; with spoil, raise ValueError and make the batch running this
    fail as a whole, as running out of memory in its bookkeeping would: call_many's format_exc
    raises MemoryError once (restored first). spoil only in a batch (SubmitBatch, CallMany)."""
    print(f"ran {k}", flush=True)
    if not spoil:
        return k
    caller = sys._getframe().f_back
    if caller is None or caller.f_code.co_name != "call_many":
        raise RuntimeError("batch_item spoils only a batch")
    g = caller.f_globals
    real = g["format_exc"]

    def spoiled(e):
        g["format_exc"] = real
        raise MemoryError("pretend the batch's bookkeeping ran out")

    g["format_exc"] = spoiled
    raise ValueError(k)
