// Package pool runs Python calls from Go on a warm pool of own-GIL CPython interpreters.
//
//	p, err := pool.New(pool.Options{Workers: 4, Preload: []string{"json"}})
//	if err != nil { ... }
//	defer p.Close()
//	v, err := p.Call(ctx, "mypkg.scoring:score", doc)        // or "path/to/file.py:score"
//
// The pool starts CPython when it is not running yet. To use a virtual environment's packages,
// start it first with that environment's python:
//
//	cpython.Initialize(cpython.Config{Executable: ".venv/bin/python"})
//
// # How work flows
//
// Each worker is a cpython.Interpreter on its own locked OS thread. A call becomes a task whose
// number goes into the group's C-level queue (package channels); idle workers wait for tasks in C
// with their GILs released, spinning briefly before they sleep, so a task is picked up within
// about a microsecond when workers are busy and a few when they sleep. The caller waits for the
// result in C as well, on a one-slot channel the task takes when that wait begins (a result that
// is there already needs none: waiting for many Submits in turn costs no channel each), woken
// directly by the worker: a goroutine readied from a worker's locked thread can wait
// milliseconds for Go's scheduler (until sysmon takes back the P the worker keeps through its
// next cgo call). Each caller
// waiting in C holds an OS thread, so past 256 at once, process-wide, callers spin in C and
// then park in Go instead: Go ends a process at 10,000 threads.
//
// Targets may be async functions: each call runs to completion on the worker's own event loop
// (see package cpython, Async targets). A worker's first async call imports asyncio (tens of
// milliseconds): with deadlines shorter than that, preload it (Options.Preload), or a deadline
// that cuts the import short costs the worker (see Self-healing). The same holds for any
// module whose first import is slow.
//
// # Cancellation
//
// Every blocking call takes a context (New's is NewContext: a start whose Setup or Preload
// hangs ends with it). A task whose context ends while it is queued leaves the queue at once
// and never runs; one that is running is interrupted (KeyboardInterrupt, within
// CPython's 5 ms switch interval for pure-Python code, at once for time.sleep; an async
// target's task is cancelled where it awaits, see package cpython, Async targets; another
// blocking C call sees it when it returns), and the worker goes on with the next task. The
// caller's error wraps ctx.Err(). Call has it at once, as Wait does when its own ctx ends; it
// does not wait for the interrupted task to stop (a Future whose Submit ctx ended gets its
// error when the task has stopped). Measured (BenchmarkCancel, README): a worker is free again
// 6 ms after the cancel of pure-Python code, 1 ms after that of a time.sleep or an await. A
// call that ends only after its context did (it sat in a blocking C call, or caught the
// interrupt and returned) may bring a result or an error of its own: Future.Late and
// BatchFuture.Late say so, judged on the worker, for callers that hold to a deadline.
//
// # Self-healing
//
// A worker whose task raises SystemExit (or a subclass: a program's own exit) or MemoryError
// (itself: a subclass, such as numpy's for one array too big, is an ordinary error) is ended and
// replaced by a fresh interpreter, and the task gets an error wrapping ErrWorkerLost and the
// *cpython.PythonError; also when its interrupt stops it that way (except KeyboardInterrupt:
// sys.exit(130)), and then the task's error is its cancellation's. A worker that reaches
// MaxTasksPerWorker is replaced too, after its last task, which keeps its own outcome. So is a
// worker whose task was interrupted in the middle of an import, which can leave modules half
// made (cpython.InterruptedError.InImport; the task's error is its cancellation's). A task that keeps running more than InterruptGrace after its
// interrupt (it swallowed KeyboardInterrupt, or is blocked in a C call) costs its worker: a
// replacement takes the slot at once, and the old interpreter is interrupted every 100 ms until
// it stops, then ended. Python code that never stops can never be ended: a running OS thread
// cannot be killed safely, so Close then waits for it. While as many of a group's workers are
// given up on as the group has, a further one's slot stays empty until one of them ends (calls
// blocked for good, against a backend that hangs, cost at most twice the group's interpreters,
// not one more each). Otherwise the pool always keeps its size, as long as replacements can start:
// one whose Setup or Preload fails now (a file gone since) is tried again, 50 ms later and then
// up to 5 s apart, and GroupStats.RestartFailures and RestartError say so; meanwhile its slot
// serves nothing. With no worker left, calls wait in the queue while some slot's failures are
// fewer than three in a row; once every slot of the group has failed three starts in a row,
// the calls waiting fail, and so do new ones, at once, with ErrNoWorkers (and the last
// failure's text) until a worker starts again: a call does not wait for good on a Setup that
// keeps failing (one that hangs is no failure: give calls a deadline).
// With MaxTasksPerWorker (from 10 up), each worker's limit is drawn between 90 % of it and it,
// so that workers sharing a queue are replaced one by one rather than all at once.
//
// Ending an interpreter waits, as Python's own exit does, for the threads its code started
// (threading.Thread: daemon threads are refused), runs its atexit functions, then the
// finalizers of what its modules held (see cpython's Close). A replaced worker's interpreter
// ends in the background while its replacement already serves: threads, atexit functions and
// finalizers still running InterruptGrace after it was replaced are interrupted
// (KeyboardInterrupt in each, then once a second; see cpython's CloseContext), and at once
// when CloseContext's context ends; so are those a failed Setup left, and when a worker fails
// to start, those the workers that did start left, New's error known (at once when New's
// context has ended: a failed start also interrupts the other workers' starts). A thread blocked in a C call that never returns keeps its interpreter for
// good: GroupStats.Ending counts replaced workers' interpreters still ending (GivenUp those
// given up on at InterruptGrace, whose task did not stop); a failed Setup's
// keeps New (or the slot's restart) waiting.
//
// # Groups
//
// Options.Groups adds named groups, each with its own workers, set-up and queue — for example
// one group that loads model A and another that loads model B. Pool.Group(name) addresses one.
//
// # Closing
//
// Close refuses new work, lets running tasks finish, ends queued tasks with ErrClosed, ends every
// interpreter (waiting for the threads the workers' code started, and its finalizers) and
// returns; a replacement worker still starting has its Preload or Setup interrupted (it would
// serve nothing). CloseContext also interrupts what still runs when its context ends, those
// threads and finalizers included.
// No accepted task is lost: each gets its result or an error.
//
// # Observing
//
// Stats counts tasks done, failed and cancelled, the queue depth, busy time per worker and
// recycles; with Options.Name they are also the expvar variable "pyworkers.pool.<Name>".
//
// All methods of Pool, Group and Future are safe for concurrent use from any goroutine.
package pool
