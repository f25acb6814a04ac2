"""pyworkers bootstrap: runs once in every interpreter pyworkers creates.

The C side (interp.c) calls the functions below by name; nothing here is public API.
"""

import sys

import pyworkers as _pyworkers


class _Output:
    """What sys.stdout, sys.stderr and their .buffer share: a file open for writing only, with
    no descriptor of its own (self._fd is the stream's number on the Go side)."""

    closed = False

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        _pyworkers._flush(self._fd)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def fileno(self):
        import io

        raise io.UnsupportedOperation(f"{self.name} of a pyworkers interpreter has no file descriptor")

    def close(self):
        pass


class _Stream(_Output):
    """sys.stdout / sys.stderr of a pyworkers interpreter: text goes to a Go io.Writer, encoded
    as UTF-8 unless reconfigure says otherwise."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None
    line_buffering = True
    write_through = False

    def __init__(self, fd, name, errors="strict"):
        self._fd = fd
        self.name = name
        self.errors = errors
        self.buffer = _Binary(self)

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        if self.encoding == "utf-8":
            try:
                _pyworkers._write(self._fd, s)  # str: encoded in C, without a bytes copy here
                return len(s)
            except UnicodeEncodeError:  # lone surrogates: stderr escapes them, as CPython's does
                if self.errors == "strict":
                    raise
        _pyworkers._write(self._fd, s.encode(self.encoding, self.errors))
        return len(s)

    def reconfigure(self, *, encoding=None, errors=None, newline=..., line_buffering=None, write_through=None):
        """As io.TextIOWrapper.reconfigure, for what is written from now on: an encoding (errors
        then "strict" unless given) and an error handler. Lines reach the writer whole as they
        are written, and flush() writes out a partial one, whatever the buffering flags say; no
        newline translation. The encoding must write a line end as the one byte 0x0A (see below)."""
        import codecs

        if newline not in (..., None, "", "\n"):
            raise ValueError(f"{self.name} of a pyworkers interpreter writes '\\n' as it is, not {newline!r}")
        if encoding is not None:
            encoding = codecs.lookup(encoding).name  # LookupError for an unknown one
            if "\n".encode(encoding) != b"\n":
                # each write is encoded by itself and the writer gets whole lines, cut at b"\n":
                # a byte-order mark would start every write, a wider "\n" be cut in two
                raise ValueError(
                    f"{self.name} of a pyworkers interpreter writes lines ending in b'\\n': "
                    f"{encoding!r} does not encode '\\n' so (a byte-order mark, or code units wider than a byte)"
                )
            if errors is None:
                errors = "strict"
        if errors is not None:
            codecs.lookup_error(errors)
            self.errors = errors
        if encoding is not None:
            self.encoding = encoding
        if line_buffering is not None:
            self.line_buffering = bool(line_buffering)
        if write_through is not None:
            self.write_through = bool(write_through)

    def __repr__(self):
        return f"<pyworkers stream {self.name}>"


class _Binary(_Output):
    """sys.stdout.buffer: bytes go to the Go io.Writer as they are, in order with the text."""

    def __init__(self, text):
        self._fd = text._fd
        self.name = text.name

    def write(self, b):
        if type(b) is not bytes:
            b = memoryview(b).tobytes()  # TypeError for what is no bytes-like object
        if b:
            _pyworkers._write(self._fd, b)
        return len(b)

    def __repr__(self):
        return f"<pyworkers binary stream {self.name}>"


def setup(cfg):
    """Prepare the interpreter: sys.path, sys.argv, __main__ globals (like the stdlib's
    prepare_main), the pyworkers module's API, and the standard streams."""
    import io

    for p in reversed(cfg.get("path") or ()):
        if p not in sys.path:
            sys.path.insert(0, p)
    if cfg.get("argv") is not None:
        sys.argv = list(cfg["argv"])
    sys.modules["__main__"].__dict__.update(cfg.get("main") or {})
    _install_api(cfg.get("config"), cfg.get("worker_id", 0), cfg.get("workers", 1))
    sys.stdout = sys.__stdout__ = _Stream(1, "<stdout>")
    sys.stderr = sys.__stderr__ = _Stream(2, "<stderr>", "backslashreplace")
    # Workers share the process's standard input with Go (the CLI reads it): give them none.
    sys.stdin = sys.__stdin__ = io.StringIO()
    # A sleep that an interrupt cuts short (time is built in: importing it costs nothing).
    import time

    time.sleep = _pyworkers.sleep
    # An interrupt swallowed where CPython ignores exceptions is raised again (module.c).
    sys.unraisablehook = _pyworkers._unraisablehook


def _install_api(config, worker_id, workers):
    def config_():
        """The configuration the Go side gave this interpreter (a fresh copy each call)."""
        return _pyworkers._copy(config)  # C: to any depth the config came in

    def worker_id_():
        """This worker's number, 0 ... workers() - 1."""
        return worker_id

    def workers_():
        """How many workers run alongside this one (including it)."""
        return workers

    for name, fn in (("config", config_), ("worker_id", worker_id_), ("workers", workers_)):
        fn.__name__ = fn.__qualname__ = name
        fn.__module__ = "pyworkers"
        setattr(_pyworkers, name, fn)
    _pyworkers._json_line = json_line  # for pyworkers map (the CLI), not public API


_batch_interrupted = False  # set by the interrupter (interp.c's inject) for the batch running


def call_many(fn, items):
    """Call fn once per (args, kwargs-or-None) item; a flat list of flag, result-or-error for
    each item in turn (no pair per item: each would cost an object here and two values in Go).

    Flags: True (a result), False (an Exception, as a format_exc tuple; the batch goes on), or
    "stop" for a BaseException that is not an Exception (SystemExit, KeyboardInterrupt) or a
    MemoryError itself, not a subclass (after which the pool replaces the interpreter, as after
    a call's): it ends the batch, and the items after it do not run (the list is then shorter).
    The task's own interrupt ends the batch with "interrupted" and the KeyboardInterrupt's
    format_exc tuple (None when a repeated interrupt cut that short) for the item it stopped
    (or the first one it kept from starting), so the
    items that finished keep their outcomes; none after an item that ran to its end, when the
    interrupt came only then. It is noticed also when an item caught the KeyboardInterrupt and
    returned (a context's end interrupts once: the batch would run to its end), through
    _batch_interrupted, which the interrupter sets (a global: a call of interrupted() after
    every item cost tiny calls 14 % of their rate), and when traceback formatting swallowed it
    (it catches everything while it calls str() on an exception): checked after each caught
    exception. The C side (pyw_encode_outcomes) turns a result that cannot cross into that
    item's own error. interp.c's pyw_interp_call_many (Thread.CallMany) calls it with a
    resolved target."""
    out = []
    interrupted = _pyworkers._interrupted
    try:
        for args, kwargs in items:
            try:
                v = fn(*args, **kwargs) if kwargs else fn(*args)
            except Exception as e:
                if type(e) is MemoryError:  # not a subclass (numpy's): as the pool treats a call's
                    out.append("stop")
                    out.append(format_exc(e))
                    return out
                out.append(False)
                out.append(format_exc(e))
                if interrupted():
                    raise KeyboardInterrupt from None
            except BaseException as e:
                if interrupted():
                    raise  # our own interrupt: handled below
                out.append("stop")
                out.append(format_exc(e))
                return out
            else:
                out.append(True)
                out.append(v)
                if _batch_interrupted and interrupted():  # the item caught it: the batch stops
                    raise KeyboardInterrupt from None
    except BaseException as e:  # what our interrupt raised, or code reacting to it raised
        # Close repeats interrupts: none may cut what follows short (one call tests and holds)
        if not _pyworkers._hold_if_interrupted():
            raise  # not ours (raised by the code itself): as a call's, it ends the task
        if len(out) % 2:
            out.pop()  # it came between an item's flag and its outcome: that item is the one
        if len(out) < 2 * len(items):
            try:
                info = format_exc(e)
            except BaseException:  # an interrupt repeated past the hold's limit
                info = None
            out.append("interrupted")
            out.append(info)
    return out


_sources = []  # names of exec/eval sources kept in linecache, oldest first


def run(src, mode, name):
    """exec (mode 0) or eval (mode 1) src in __main__, or (mode 2) run the file named src as
    the __main__ script; the lines of exec/eval sources show in tracebacks."""
    g = sys.modules["__main__"].__dict__
    if mode == 2:
        # as python FILE: __file__ and tracebacks name it by its absolute path (a chdir later
        # does not lose it), its folder, symbolic links resolved, is on sys.path, and it is
        # sys.argv[0] as given
        import os

        path = os.path.abspath(src)
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec")
        _path_first(os.path.dirname(os.path.realpath(path)))
        if sys.argv in ([], [""]):
            sys.argv = [src]
        g["__file__"] = path
        exec(code, g)
        return None
    import linecache

    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    _sources.append(name)
    if len(_sources) > 64:
        linecache.cache.pop(_sources.pop(0), None)
    code = compile(src, name, "eval" if mode else "exec")
    if mode:
        return eval(code, g)
    exec(code, g)
    return None


_files = {}
_folders = []  # the folders _load_file put on sys.path (not run's script folders: __main__'s own)


def _path_first(folder):
    """Put folder first on sys.path, unless it is on it already; whether it was put there."""
    if folder in sys.path:
        return False
    sys.path.insert(0, folder)
    return True


def _import_stdlib(name):
    """The stdlib module name (traceback for format_exc, json for json_line), imported on first
    need (each costs a worker time and memory) with only the stdlib's folders on sys.path: a
    traceback.py or json.py beside a target, in the configured path or the current folder,
    must not take the stdlib's place in pyworkers' own work."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    import importlib

    std = _stdlib_folder()
    saved = sys.path[:]
    if std:
        sys.path[:] = [
            p
            for p in saved
            if _in_stdlib_folder(p, std) or (p.endswith(".zip") and p.startswith(sys.base_prefix))
        ]
    else:  # no idea where the stdlib is: leave out what pyworkers put there at least
        sys.path[:] = [p for p in saved if p not in _folders]
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


def _stdlib_folder():
    """The standard library's folder (os.py's); "" when that is not known."""
    import os

    return os.path.dirname(getattr(os, "__file__", "") or "")


def _in_stdlib_folder(path, std):
    """Whether path is the standard library's folder std or in it, but for its site-packages or
    dist-packages (lib-dynload is in)."""
    import os

    return path == std or (path.startswith(std + os.sep) and "-packages" not in path[len(std) :])


# Said by resolve of a target's import it undid (its traceback's last line).
_IMPORT_UNDONE = "(pyworkers: the interrupted import was undone)"


def _drop_new_modules(before):
    """Undo an import an interrupt cut short: the modules it left half made would trip the
    next import of them (a package imported again over the submodules that stayed fails, as
    asyncio/__init__ does with a NameError), so every module not in before goes."""
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def resolve(target):
    """'pkg.module:func' or 'path/to/file.py:func' (attribute paths like 'Class.method' too)."""
    modname, sep, attr = target.rpartition(":")
    if not sep or not modname or not attr:
        raise ValueError(
            f"target {target!r} must look like 'package.module:function' or 'path/to/file.py:function'"
        )
    before = set(sys.modules)
    try:
        if modname.endswith(".py") or "/" in modname:
            obj = _load_file(modname)
        else:
            import importlib

            obj = importlib.import_module(modname)
    except KeyboardInterrupt as e:
        # Cut short (a call's deadline came first): undone (InterruptedError.InImport still
        # reports it: what finished may have registered itself elsewhere).
        _drop_new_modules(before)
        e.add_note(_IMPORT_UNDONE)
        raise
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target!r} is a {type(obj).__name__}, which is not callable")
    return _sync(obj)


_json_targets = {}  # json_line's resolved targets
_json_codec = None  # json_line's (module, decoder, encoder), made on first use


def json_line(target, star, line):
    """One line of pyworkers map: the JSON text line decoded with Python's json (objects keep
    their key order, numbers their int or float type), target called with it (spread with
    star), and the result encoded back as compact JSON text. A line that is not JSON, or a
    result that JSON cannot hold, gives (1, message) or (2, message) instead; an exception of
    the target propagates. The pyworkers module exposes it as _json_line (see _install_api)."""
    global _json_codec
    fn = _json_targets.get(target)
    if fn is None:
        fn = _json_targets[target] = resolve(target)
    if _json_codec is None:  # one decoder and encoder: json.loads/dumps with options make one a call
        json = _import_stdlib("json")
        _json_codec = (
            json,
            json.JSONDecoder(parse_float=_json_float, parse_constant=_not_json_constant),
            json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")),
        )
    json, dec, enc = _json_codec
    try:
        v = dec.decode(line)
    except (ValueError, RecursionError) as e:
        v, why = _decode_again(json, dec, line, e)
        if why is not None:
            return (1, why)
    if not star:
        r = fn(v)
    elif type(v) is list:
        r = fn(*v)
    elif type(v) is dict:
        r = fn(**v)
    else:
        return (1, f"--star needs an array or an object, got {_json_kind(v)}")
    try:
        out = enc.encode(r)
    except (TypeError, ValueError, RecursionError) as e:
        out = _encode_again(enc, r, e)
        if type(out) is tuple:
            return out
    if not out.isascii():
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escaped, as JSON can
            out = json.dumps(r, allow_nan=False, separators=(",", ":"))
    return out


def _decode_again(json, dec, line, e):
    """json_line's decoding after dec.decode(line) raised e: (the value, None) when only
    Python's limit on an int's digits (4,300 by default) stopped it — JSON numbers have no such
    limit — else (None, why the line is not JSON)."""
    if _int_limit(e):
        try:
            return _without_int_limit(dec.decode, line), None
        except (ValueError, RecursionError) as again:
            e = again
    if isinstance(e, json.JSONDecodeError):  # some of its messages end in "at" already
        return None, f"not JSON: {e.msg.removesuffix(' at')} at column {e.colno}"
    if isinstance(e, RecursionError):
        return None, "not JSON: nested too deeply"
    return None, f"not JSON: {e}"  # a constant (NaN), a number out of a float's range


def _encode_again(enc, r, e):
    """json_line's encoding after enc.encode(r) raised e: the text, when only the digit limit
    stopped it (see _decode_again), else (2, what in r JSON cannot hold)."""
    if _int_limit(e):
        try:
            return _without_int_limit(enc.encode, r)
        except (TypeError, ValueError, RecursionError) as again:
            e = again
    return (2, _not_jsonable(r, e))


def _int_limit(e):
    return type(e) is ValueError and "integer string conversion" in str(e)


def _without_int_limit(f, x):
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return f(x)
    finally:
        sys.set_int_max_str_digits(limit)


def _json_float(text):
    f = float(text)
    if f in (_INF, -_INF):
        raise ValueError(f"number {text} is out of range for a float")
    return f


_INF = float("inf")


def _not_json_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def _json_kind(v):
    if v is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _not_jsonable(r, e):
    """What in r JSON cannot hold, and where, for json_line's error (e: json's own)."""
    try:
        found = _find_not_jsonable(r, "", set())
    except RecursionError:
        found = "the result is nested too deeply for JSON"
    return found or f"the result cannot be JSON: {e}"


def _find_not_jsonable(v, path, around):
    where = "the result at " + path if path else "the result"
    if v is None or isinstance(v, (int, str)):
        return None
    if isinstance(v, float):
        return f"{where} is {v}, which JSON cannot hold" if v != v or v in (_INF, -_INF) else None
    if not isinstance(v, (list, tuple, dict)):
        hint = " (decode it, or return base64 text)" if isinstance(v, (bytes, bytearray)) else ""
        return f"{where} is of type {_type_name(type(v))!r}, which JSON cannot hold{hint}"
    if id(v) in around:
        return f"{where} is a container around it (a cycle), which JSON cannot hold"
    around.add(id(v))
    if isinstance(v, dict):
        for k, x in v.items():
            if not (k is None or isinstance(k, (str, int, float))):
                return f"{where} has a key of type {_type_name(type(k))!r}, which JSON cannot hold"
            found = _find_not_jsonable(x, f"{path}[{k!r}]", around)
            if found:
                return found
    else:
        for i, x in enumerate(v):
            found = _find_not_jsonable(x, f"{path}[{i}]", around)
            if found:
                return found
    around.discard(id(v))
    return None


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE (importing inspect costs a worker ~10 ms)


def _is_async(obj):
    """Whether calling obj returns a coroutine by its code: an async function or method, a
    functools.partial of one, an object whose class has an async __call__."""
    for _ in range(100):  # partials of partials
        inner = getattr(obj, "func", None)
        if inner is None or type(obj).__name__ != "partial":
            break
        obj = inner
    code = getattr(getattr(obj, "__func__", obj), "__code__", None)
    if code is None and not isinstance(obj, type):
        call = getattr(type(obj), "__call__", None)
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


def _sync(obj):
    """obj, or, for an async target (_is_async), a plain function that runs it to completion
    on this interpreter's event loop: a call of an async target returns its result, as
    asyncio.run would, not a coroutine."""
    if not _is_async(obj):
        return obj

    def call(*args, **kwargs):
        return _run_async(obj(*args, **kwargs))

    call.__name__ = getattr(obj, "__name__", "call")
    call.__qualname__ = getattr(obj, "__qualname__", call.__name__)
    call.__wrapped__ = obj
    return call


_loop = None  # this interpreter's event loop for async targets, made on first use and kept
_wake = None  # the socket pair that wakes it for an interrupt (see _new_loop)
_asyncio_dir = None  # the asyncio package's folder, once it is imported here
_CLEANUP_SECONDS = 1.0  # how long an interrupted task, or one left at the end, may clean up
_main = None  # the task of the async call running now
_stopped_at = None  # where an interrupt stopped it: its stack (frame, lasti, lineno), outermost first
_give_up = None  # the timer that ends its cleanup (see _cancel_main)


def _run_async(coro):
    """Run coro on this interpreter's event loop until it completes. The loop is kept for later
    calls (unlike asyncio.run's), so that what a module binds to it, a client session say, goes
    on working.

    An interrupt (interp.c, pyw_interp_interrupt) that finds the task's own code running raises
    KeyboardInterrupt there. One that finds the loop waiting for events, or running another
    task, asks for the task to be cancelled instead and writes a byte to _wake: the loop wakes
    and, at its next turn, _drain cancels the task (_cancel_main), as asyncio.Runner does for a
    first Ctrl-C; the task has a second to clean up. Either way the call ends with
    KeyboardInterrupt, whose traceback shows where the task was stopped."""
    global _main, _stopped_at, _give_up
    try:
        if _pyworkers._interrupted():  # a batch's item after one that caught its interrupt
            raise KeyboardInterrupt
        loop = _loop or _new_loop()
        task = loop.create_task(coro)
    except BaseException:
        coro.close()  # it never ran: no "coroutine was never awaited" warning
        raise
    try:
        _main, _stopped_at = task, None
        _pyworkers._set_main(coro)
        result = loop.run_until_complete(task)
    except BaseException as e:
        if task.done():
            _take_exception(task)
        elif _stopped_at is None:
            # A second interrupt (or SystemExit from a callback) outside the task's own code,
            # or one before the task ran at all.
            stack = _stack(task)  # read now: running the loop moves the frames on
            if not task.cancelling():  # _cancel_main's may be under way: once is enough
                task.cancel()
            _finish(loop, {task})
            if isinstance(e, KeyboardInterrupt):
                _stopped_at = stack
        if _stopped_at is None or isinstance(e, SystemExit | MemoryError):
            raise  # not interrupted, or what ends the call (and its worker) as it is
        raise _interrupt(_stopped_at, e)
    else:
        # It caught its cancellation and returned, or the interrupt came as it returned (the
        # loop took the request once the task was done): the call was interrupted all the same.
        if _stopped_at is not None or _pyworkers._interrupted():
            raise _interrupt(_stopped_at, None)
        return result
    finally:
        # The timer first: once _set_main(None) has run, an interrupt of this call is injected
        # at once, and may land anywhere from here on.
        if _give_up is not None:
            _give_up.cancel()
        _main = _stopped_at = _give_up = None
        _pyworkers._set_main(None)


def _stack(task):
    return [(f, f.f_lasti, f.f_lineno) for f in task.get_stack()]


def _interrupt(stack, e):
    """The KeyboardInterrupt that ends an interrupted async call, raised while e (or nothing)
    is handled: e if it is one, or a new one, with a traceback through the frames the task was
    stopped in (as an interrupt of a plain call shows), rather than the event loop's. What the
    task raised while it cleaned up shows as its context; its cancellation does not."""
    import asyncio
    import types

    ki = e if isinstance(e, KeyboardInterrupt) else KeyboardInterrupt()
    if stack:  # none when the task had returned already
        tb = None
        for f, lasti, lineno in reversed(stack):
            tb = types.TracebackType(tb, f, lasti, lineno)
        ki.__traceback__ = tb
    ki.__suppress_context__ = isinstance(e, asyncio.CancelledError)
    return ki


def _cancel_main():
    """Cancel the async call's task for an interrupt (see _run_async), once, and give it
    _CLEANUP_SECONDS to end: then KeyboardInterrupt, raised from a callback of the loop, ends
    the call (asyncio lets it through without harm to the loop)."""
    global _stopped_at, _give_up
    task = _main
    if task is None or task.done() or _stopped_at is not None:
        return
    # Cancelled first: a second interrupt landing in between finds it cancelling (_run_async).
    # Its stack is still where it waited: the loop has not run it since.
    task.cancel()
    _stopped_at = _stack(task)
    _give_up = task.get_loop().call_later(_CLEANUP_SECONDS, _cleanup_over, task)


def _cleanup_over(task):
    if _main is task:  # not a later call's
        raise KeyboardInterrupt


def _finish(loop, tasks):
    """Run the loop until the (cancelled) tasks end, for at most _CLEANUP_SECONDS: an interrupt
    that landed in the loop's own code may have dropped a task's wake-up, and a task may not
    end at all. What they raise is taken, not logged."""
    import asyncio

    try:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_CLEANUP_SECONDS))
    except BaseException:
        pass
    for task in tasks:
        if task.done():
            _take_exception(task)


def _take_exception(task):
    """Take a done task's exception: no "Task exception was never retrieved" later."""
    if not task.cancelled():
        task.exception()


def _new_loop():
    """Make this interpreter's event loop (importing asyncio, ~50 ms, on first need only)."""
    global _loop, _wake, _asyncio_dir
    before = set(sys.modules)
    loop = wake = None
    try:
        import asyncio
        import atexit
        import os
        import socket

        # Built whole or not at all: a loop an interrupt left half made (no self-pipe yet) fails
        # in its __del__ ("Exception ignored ... no attribute '_ssock'"); the interrupt waits.
        try:
            _pyworkers._shield(True)
            loop = asyncio.new_event_loop()
        finally:
            _pyworkers._shield(False)
        # interp.c writes a byte to wake[1] after injecting an interrupt: a loop waiting in
        # select would otherwise see it only when its wait ends (an asyncio.sleep(3600) later).
        # A byte from C, not a call_soon_threadsafe: no Python code runs on the interrupter.
        wake = socket.socketpair()
        for sock in wake:
            sock.setblocking(False)
        loop.add_reader(wake[0].fileno(), _drain, wake[0])
        _pyworkers._set_wake_fd(wake[1].fileno())
        asyncio.set_event_loop(loop)
        atexit.register(_close_loop)  # atexit runs when the interpreter ends
        _asyncio_dir = os.path.dirname(asyncio.__file__) + os.sep
    except BaseException:
        # An interrupt can land in the middle of importing asyncio: undone.
        _pyworkers._set_wake_fd(-1)
        if loop is not None:
            loop.close()
        for sock in wake or ():
            sock.close()
        _drop_new_modules(before)
        raise
    _loop, _wake = loop, wake
    return loop


def _drain(sock):
    """The loop's reader of the wake socket: an interrupt wrote to it (see _run_async)."""
    try:
        while sock.recv(256):
            pass
    except OSError:  # BlockingIOError: drained
        pass
    if _pyworkers._take_cancel():
        _cancel_main()


def _close_loop():
    """At the interpreter's end (atexit): as asyncio.run ends, cancel the tasks still pending
    (background tasks a call left running) and let them finish, then close the loop. (No
    shutdown of the default executor: threading's exit hooks, which run before atexit's, have
    ended its threads, and it takes no new work after them.)"""
    global _loop, _wake
    loop, wake = _loop, _wake
    if loop is None:
        return
    _pyworkers._set_wake_fd(-1)  # before the socket closes: its number may be reused
    try:
        import asyncio

        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            _finish(loop, tasks)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
        for sock in wake or ():
            sock.close()
        _loop = _wake = None


def _load_file(path):
    import importlib.machinery
    import importlib.util
    import os

    full = os.path.abspath(path)
    module = _files.get(full)
    if module is not None:
        return module
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such Python file: {path!r}")
    folder = os.path.dirname(full)
    if _path_first(folder):  # as when the file runs as a script: its siblings import
        _folders.append(folder)
    stem = os.path.splitext(os.path.basename(full))[0]
    same = sys.modules.get(stem)
    known = getattr(same, "__file__", None)
    if known and os.path.exists(known) and os.path.samefile(known, full):
        _files[full] = same  # imported already, by a sibling's "import stem": one module, not two
        return same
    name = stem
    if not stem.isidentifier() or stem in sys.modules or stem in sys.stdlib_module_names:
        name = f"_pyworkers_file{len(_files)}_{stem if stem.isidentifier() else 'module'}"
    spec = importlib.util.spec_from_file_location(name, full)  # by its suffix: .py, .pyc, an extension
    if spec is None:
        # a file without a known suffix (a script named "tool"), which run takes as python
        # does: Python source
        spec = importlib.util.spec_from_file_location(name, full, loader=importlib.machinery.SourceFileLoader(name, full))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _files[full] = module
    return module


def release():
    """At the interpreter's end, once its threads and atexit functions are done (interp.c's
    wind-down): let go of what the program's own code holds, so that the finalizers this frees
    (__del__, weakref callbacks) run here, where CloseContext's interrupts reach them, and not in
    Py_EndInterpreter, where none does: the targets pyworkers keeps, __main__'s names (but its
    dunders), latest first, and the modules that are not the standard library's, latest first,
    then a collection. A module's entry in sys.modules becomes None, as CPython's own end does
    it: an import of it in a finalizer fails rather than run the module again. The standard
    library's modules stay, for those finalizers to use; CPython clears them after, with what
    they still hold (sys.excepthook, a codec, a finder of sys.meta_path)."""
    _files.clear()
    _json_targets.clear()
    main = sys.modules.get("__main__")
    names = getattr(main, "__dict__", None)
    if isinstance(names, dict):
        for name in reversed(list(names)):
            if not (isinstance(name, str) and name.startswith("__") and name.endswith("__")):
                names.pop(name, None)
    std = _stdlib_folder()
    for name, module in reversed(list(sys.modules.items())):
        if isinstance(name, str) and name not in ("__main__", "pyworkers") and not _in_stdlib(name, module, std):
            sys.modules[name] = None
    import gc

    gc.collect()


def _in_stdlib(name, module, std):
    """Whether sys.modules' name, module is the standard library's (folder std): its name says
    so, and its file, if it has one, is in that folder (a script's own queue.py is not)."""
    if name.partition(".")[0] not in sys.stdlib_module_names and name not in sys.builtin_module_names:
        return False
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return True  # built in, frozen
    return bool(std) and _in_stdlib_folder(path, std)


_BOOT = sys._getframe().f_code.co_filename  # the name runtime.c compiles this source under


def _strip_boot_frames(e, seen):
    """Drop this module's frames from the front of e's traceback (and its chained exceptions),
    and asyncio's that an async target's error comes through: users should see their code, not
    ours."""
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None and (
            tb.tb_frame.f_code.co_filename == _BOOT
            or (_asyncio_dir is not None and tb.tb_frame.f_code.co_filename.startswith(_asyncio_dir))
        ):
            tb = tb.tb_next
        if tb is not None or e.__traceback__ is not None:
            e.__traceback__ = tb
        _strip_boot_frames(e.__cause__, seen)
        e = e.__context__


def format_exc(e):
    """(qualified type name, str(e), full traceback text) of an exception, and for a SystemExit
    (or a subclass) a fourth item: the status a python process would end with (_exit_status)."""
    # The interrupt of a cancelled CallMany may land in here, and must end the batch rather
    # than be taken for a formatting failure: what the task's interrupt raised goes on.
    try:
        _strip_boot_frames(e, set())
    except Exception:
        pass
    name = _type_name(type(e))
    # Once the task's one interrupt is spent (this is what its code raised after it), a __str__
    # that hangs would hold the interpreter for good: another interrupt comes if it takes long.
    owed = not isinstance(e, KeyboardInterrupt) and _pyworkers._owe_interrupt(True)
    try:
        msg = str(e)
    except BaseException as x:  # a __str__ may raise anything, SystemExit included
        _reraise_own_interrupt(x)
        msg = "<exception str() failed>"
    finally:
        if owed:
            _pyworkers._owe_interrupt(False)
    try:
        traceback = _import_stdlib("traceback")
        if _pyworkers._interrupted():
            # The exception alone, its frames, the line above and its str notes:
            # traceback.format_exception calls str() on every exception of the chain (its
            # __context__, an exception group's), and one that hangs would hold the
            # interpreter with no interrupt left to stop it (traceback swallows one that lands
            # there).
            lines = [f"{name}: {msg}\n" if msg else f"{name}\n"]
            try:  # no __getattr__ of the class's: read the instance's dict
                notes = object.__getattribute__(e, "__dict__").get("__notes__")
            except Exception:
                notes = None
            lines += [f"{n}\n" for n in notes if type(n) is str] if type(notes) is list else []
            frames = traceback.format_tb(e.__traceback__)
            tb = "".join(["Traceback (most recent call last):\n", *frames, *lines] if frames else lines)
        else:
            tb = "".join(traceback.format_exception(e))
    except BaseException as x:
        _reraise_own_interrupt(x)
        tb = f"{name}: {msg}\n"
    if isinstance(e, SystemExit):
        return (_utf8_safe(name), _utf8_safe(msg), _utf8_safe(tb), _exit_status(e))
    return (_utf8_safe(name), _utf8_safe(msg), _utf8_safe(tb))


def _exit_status(e):
    """The status python ends with on Linux when SystemExit e ends it: 0 for a code of None, an
    int's low 8 bits (one past C's long gives -1, so 255), 1 for any other code (whose str
    python prints). Read through SystemExit's own slot and int's own methods: no code of a
    subclass's runs (a code property, an int subclass's operators), which could raise or hang."""
    code = SystemExit.__dict__["code"].__get__(e)
    if code is None:
        return 0
    if not isinstance(code, int):
        return 1
    code = int.__int__(code)  # an exact int: no subclass's __and__ below
    return code & 0xFF if -(1 << 63) <= code < (1 << 63) else 255


def _reraise_own_interrupt(x):
    """Raise x again when it is the task's own interrupt, which must end a cancelled batch."""
    if isinstance(x, KeyboardInterrupt) and _pyworkers._interrupted():
        raise x


def _type_name(t):
    """t's qualified name, as a traceback shows it. Read through type's own descriptors: a
    metaclass may make t.__qualname__ raise, or give a name that is no str, and format_exc
    must not fail (call_many would fail as a whole, after some of its items ran)."""
    try:
        qual = type.__dict__["__qualname__"].__get__(t)
        mod = type.__dict__["__module__"].__get__(t)
        if not isinstance(mod, str) or mod in ("builtins", "__main__"):
            return qual
        return f"{mod}.{qual}"
    except Exception:
        return "<exception type without a name>"


def _utf8_safe(s):
    """s, with lone surrogates (e.g. from undecodable file names) escaped: it must cross as UTF-8."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
