// Package cpython runs Python code in own-GIL CPython 3.14 subinterpreters from Go.
//
// It is the thin layer of pyworkers over CPython's C API, and it owns the C API's thread rules
// so that callers cannot break them: any goroutine may use any Interpreter.
//
// # Runtime
//
// CPython is started once per process, by Initialize or implicitly by the first
// NewInterpreter, with an isolated configuration: environment variables such as PYTHONPATH are
// ignored, Python installs no signal handlers (signals stay Go's), it runs in UTF-8 mode (as
// python -X utf8, and as python itself in the C locale a Go process has: file names and
// open()'s default encoding are UTF-8, whatever LANG says), and the Python home is the
// one the linked libpython was built for unless Config.Home says otherwise; Config.Executable
// names a virtual environment's python to use that environment's packages. The main
// interpreter lives on a goroutine of its own, locked to its OS thread, and runs no user code.
// Finalize closes whatever interpreters are still open and then finalizes CPython on that same
// thread; afterwards NewInterpreter, Initialize and RuntimeInfo return ErrFinalized and the
// methods of interpreters made before return ErrClosed (CPython cannot be restarted in one
// process). Pools (package pool) still open are closed too, with the interpreters (Finalizing).
//
// # Interpreters and threads
//
// NewInterpreter creates a subinterpreter with PyInterpreterConfig_OWN_GIL on a new goroutine
// locked to one OS thread for the interpreter's whole life; the goroutine never unlocks, so that
// OS thread exits with the interpreter and is never reused. Every operation is marshalled to
// that thread, so Interpreter methods are safe from any goroutine; operations run one at a time.
// Interpreters run Python truly in parallel: each has its own GIL.
//
// Do hands a function the interpreter's *Thread, whose methods (Exec, Eval, Call, RunFile) run
// Python directly on the interpreter's thread with no marshalling; use it to run many calls in
// one turn. The convenience methods Interpreter.Exec, Eval, Call and RunFile each make one turn.
// A Thread is valid only inside the function it was given to.
//
// At most max(4, NumCPU) interpreters are created or ended at once (creation is CPU-bound, and
// CPython has had races in concurrent creation, which the tests probe hard); LiveInterpreters
// counts the interpreters alive, so that none is ever left behind unnoticed.
//
// Python code may start threads (threading.Thread; daemon threads are refused). As at Python's
// own exit, an interpreter ends only once they have finished and its atexit functions have
// run. Then it lets go of what the program's own code holds — the targets it called,
// __main__'s names (but its dunders) and the modules that are not the standard library's (by
// name and by file: a script's own queue.py is not), latest first — and collects, so that the
// finalizers (__del__, weakref callbacks) of those objects run while the standard library is
// still all there. As at CPython's own end, a module let go of is None in sys.modules: a
// finalizer's import of it fails rather than run it again. All of that takes no turn from other
// interpreters, and CloseContext's deadline interrupts it (see CloseContext): a finalizer still
// running then (one that saves a file, say) is cut short too. What CPython's end of the
// interpreter runs after that, in its turn — the finalizers of what the standard library still
// holds (sys.excepthook, a logging handler, a codec, a finder in sys.meta_path, a cache), as it
// is cleared — cannot be interrupted: one that never returns keeps that interpreter and its
// turn for good, as it would keep python from exiting.
//
// # Cancellation
//
// Every blocking call takes a context.Context. Cancelling the context of a running Exec, Eval,
// Call or RunFile injects KeyboardInterrupt into the running Python code (a BaseException, so
// `except Exception` does not swallow it). Pure-Python code stops within CPython's switch
// interval (about 5 ms), and time.sleep at once (every interpreter's time.sleep is
// pyworkers.sleep, which an interrupt ends); another blocking C call, such as a socket read,
// select or a lock's wait, sees the interrupt only when it returns. Nor is the import system's
// own code interrupted (importlib taking or giving back a module's import lock, or waiting for
// another thread's import of that module), nor, for a second, code it calls (a finder, a
// finalizer): a KeyboardInterrupt there could leave the lock taken, and every later import of
// the module, in any thread, waiting for good. The interrupt is tried again (at 1 to 50 ms)
// until it finds other code running: the imported module's own, which it stops (importlib then
// undoes the import), or the code that imported it; code that waits for good for another
// thread's import that never ends is not interrupted. Likewise, for up to a second, the
// making of the event loop in an interpreter's first async call (cut short, it would be left
// half made). The call then returns an
// *InterruptedError that wraps ctx.Err() and the KeyboardInterrupt's *PythonError (its
// traceback shows where the code was stopped), and the interpreter is ready for the next call.
// An interrupt never leaks into a later call. The code that runs once the call's own has ended
// — the formatting of the exception it raised, a finalizer of the value it returned — is
// interrupted with it.
//
// # Async targets
//
// A target that is an async function (async def, a method too) is run to completion, as
// asyncio.run would, and its result returned: on an event loop the interpreter makes on first
// use and keeps, so that what a module binds to it (a client session) works in later calls.
// An interrupt that finds the loop waiting for events, or running another task (a background
// one an earlier call left running, or a child of the call's own: gather, TaskGroup), wakes it
// and asks it to cancel the call's task at its next turn, as asyncio.Runner does for a first
// Ctrl-C: background tasks run on, and the task's finally blocks and async with exits run
// where it waited. One that finds the task's own code running raises KeyboardInterrupt there,
// and so does a second interrupt, or the first if the loop has not taken the request within
// 50 ms (code that never awaits holds it: KeyboardInterrupt lands in that code). Either way
// the call ends with a KeyboardInterrupt whose traceback shows where the task was stopped,
// also when the task caught its cancellation; a task that does not end within a second of it
// is left pending (at once, at a second interrupt) — a second of the loop's time: cleanup that
// blocks the loop without awaiting (time.sleep, a long computation in a finally block) runs to
// its end first, as sync code's cleanup does. Calls run one at a time even so: a
// batch's items do not run concurrently on one interpreter. A target is async when its code
// is a coroutine's: async def, a method, a functools.partial of one, an object whose class has
// an async __call__; a plain function that returns a coroutine returns something that cannot
// cross. An event loop the code runs itself (asyncio.run inside a plain function) is not woken:
// an interrupt reaches it when its wait ends. When the interpreter ends, the tasks left on its
// loop are cancelled, as asyncio.run does.
//
// time.sleep in every interpreter is pyworkers.sleep, which an interrupt cuts short (a name
// bound to the original before pyworkers set up the interpreter, by a .pth file, keeps it). An
// interrupt that lands where CPython ignores exceptions (a weakref callback, a __del__) is
// raised again rather than lost, through sys.unraisablehook: the finalizers still to run in
// that moment are cut short as well (unless importlib ran the finalizer: then the interrupt is
// raised within 50 ms of the code's leaving importlib), and a sys.unraisablehook of the user's
// own loses such an interrupt again.
//
// Code that runs an interpreter of its own on the call's thread (concurrent.interpreters) is
// interrupted there only where it waits in pyworkers (a channel's send or recv,
// pyworkers.sleep) or converts a channel's value, with KeyboardInterrupt; its other code runs
// on, and the interrupt is raised in the call once that interpreter hands control back (also
// when the nested code caught the KeyboardInterrupt it got there: its catch is its own, the
// task is interrupted all the same).
//
// # Values
//
// Arguments and results cross by value in pyworkers' interpreter-neutral encoding, never as
// shared objects (a *Buffer excepted), nested to 10,000 levels (the call's own tuple of
// arguments and dict of keyword arguments counting as one; in a batch — CallMany, and pool's
// SubmitBatch and Map — an argument has two levels fewer and a result one fewer, for the
// batch's own list and pairs), in both directions:
//
//	Go                                   Python          Go (coming back)
//	nil                                  None            nil
//	bool                                 bool            bool
//	int, int8…int64, uint…uint64         int             int64, or *big.Int when out of range
//	*big.Int                             int             int64, or *big.Int when out of range
//	float64, float32                     float           float64
//	string (valid UTF-8)                 str             string
//	[]byte, [N]byte                      bytes           []byte
//	Tuple                                tuple           Tuple
//	[]any, other slices and arrays       list            []any
//	map[string]any, map[string]T         dict            map[string]any
//	*Buffer (shared, not copied)         memoryview      *Buffer (from a pyworkers.Buffer)
//
// A nil slice or map is an empty list, bytes or dict (as encoding/json would not: there it is
// null), and a nil *big.Int or *Buffer is an error. Named types convert by their underlying
// kind. Anything else is a *ConversionError naming the type and where it was, for example
// `cannot convert argument at args[1]["when"]: Go type time.Time has no Python counterpart`
// (a result's path starts at the result: `[0]["k"]`; keys are quoted as Go quotes strings, and
// cut after 64 bytes). A Python str holding lone surrogates is an error, never mojibake. Kwargs
// passes keyword arguments to Call.
//
// Python values cross by what they are, not by their class: an instance of a subclass of a type
// in the table crosses as that type (a namedtuple or struct sequence as a Tuple of its visible
// fields, an IntEnum or StrEnum member as int64 or string, an OrderedDict, defaultdict or
// Counter as a map), read from its contents, never through methods it overrides. A dict's key
// order does not survive a Go map: a Python dict that goes to Go and back has Go's order.
//
// # Errors
//
// A Python exception is a *PythonError carrying the exception's qualified type, its message and
// the full traceback text as Python prints it (with __cause__/__context__ chains and
// SyntaxError carets). Error() is one line; fmt's %+v prints the traceback. SystemExit is an
// error like any other, whose ExitStatus is the status python would end with: sys.exit never
// exits the Go process (what ends a python process from C
// does: os._exit, os.abort, a crash in an extension module). An extension module that cannot
// load in an own-GIL interpreter gives a *PythonError that errors.Is reports as
// ErrIncompatibleExtension, and IncompatibleModule names the module. Go-side conditions are
// sentinels (ErrClosed, ErrFinalized, ...) wrapped with %w.
//
// # Output
//
// Each interpreter's sys.stdout and sys.stderr go to io.Writers (InterpreterConfig.Stdout and
// Stderr, Thread.SetOutput for one turn, os.Stdout/os.Stderr by default), in whole lines, so
// that the output of different interpreters never mixes mid-line even on a shared writer. The
// exceptions are writes of part of a line: a line longer than 64 KiB may go out in pieces of
// 64 KiB or more, a flush (print(..., flush=True), sys.stdout.flush()) writes out what the line
// has so far, and so does the end of every call (of a CallMany batch: its end, not each
// item's) when the call's own thread wrote last; a partial line a thread the code started is
// writing is held until its line end (or the turn's end), as print writes its pieces one by
// one. Such a piece left unfinished on a shared writer is ended (a "\n") before another
// interpreter's output goes there, so that the other's line does not start in the middle of
// it (on a writer that cannot be compared, and is shared per type, it is not). A writer that returns an error or panics makes the print raise OSError with the error's
// text, and its errno when the error carries one (BrokenPipeError for EPIPE), as writing to a
// file would (at a call's end, the text is dropped). A writer must not call runtime.Goexit
// (t.FailNow in a test): it is called from CPython's frames, or from a thread Python started,
// which Goexit cannot leave. Nor may it call back into its own interpreter (Do, Call, Close...),
// a pool that owns it (Close), or Finalize: they wait for the writer's own thread, for good. Text goes out as UTF-8 (sys.stdout.reconfigure(encoding=...,
// errors=...) changes that, as for a file, to any encoding that writes "\n" as the byte 0x0A
// alone: not UTF-16, UTF-32 or UTF-8 with a byte-order mark); bytes written to
// sys.stdout.buffer go out as they are, in order with the text. sys.stdin is empty.
//
// # Inside the interpreter
//
// Every interpreter has the built-in module pyworkers: pyworkers.config() returns
// InterpreterConfig.Config, pyworkers.worker_id() and pyworkers.workers() the worker numbering.
// InterpreterConfig.Main sets globals of __main__ before any code runs.
package cpython
