package cpython

// #include <stdlib.h>
// #include "pyw.h"
import "C"

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/cgo"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pyworkers/pyworkers/internal/wire"
)

//go:embed bootstrap.py
var bootstrapSource string

// InterpreterConfig configures one interpreter. The zero value is valid.
type InterpreterConfig struct {
	// Main is set as globals of the interpreter's __main__ module before any other code runs
	// (what the stdlib calls prepare_main), e.g. {"worker_id": 3, "settings": {...}}. Values
	// convert as the package documentation says (Values).
	Main map[string]any
	// Path is put at the front of sys.path, after the runtime's Config.Path (an entry already
	// on sys.path stays where it is).
	Path []string
	// Argv becomes sys.argv when not nil.
	Argv []string
	// Config is what pyworkers.config() returns inside the interpreter (a fresh copy per call).
	Config any
	// WorkerID and Workers are what pyworkers.worker_id() and pyworkers.workers() return
	// (a pool sets them; alone, an interpreter is worker 0 of 1 unless Workers is set).
	WorkerID, Workers int
	// Stdout and Stderr receive this interpreter's sys.stdout / sys.stderr, in whole lines.
	// nil means the runtime's Config.Stdout / Config.Stderr. A writer shared by several
	// interpreters gets their lines one batch at a time, never mixed mid-line (but for partial
	// lines written by a flush or a call's end, and lines longer than 64 KiB: see Output in
	// the package doc).
	Stdout, Stderr io.Writer
	// ExternalInterrupts is for an owner that watches the contexts it passes to Thread's
	// methods anyway, as a pool waiting for each call's result does: the methods then do not
	// watch ctx themselves (a context.AfterFunc, three allocations per call), and the owner
	// calls InterruptContext when a context ends. Without it, they interrupt on their own.
	ExternalInterrupts bool
}

// Interpreter is one own-GIL CPython subinterpreter living on its own goroutine, locked to one
// OS thread for the interpreter's whole life. Every operation is marshalled to that thread.
//
// All methods are safe to call from any goroutine, concurrently; operations run one at a time
// in the order the interpreter takes them. The one exception: code running on the
// interpreter's thread must not call Do, Exec, Eval, Call, RunFile, Close, CloseContext or
// InterruptContext of the same interpreter, nor Finalize — use the *Thread it was given — or it
// waits for itself forever (or, InterruptContext, its interrupt is lost). That code is the
// function given to Do, and the writers its Python code prints to (Stdout, Stderr,
// Thread.SetOutput), which are called on the interpreter's thread, or on a thread its code
// started that the interpreter's end waits for.
//
// Close it when done; Finalize closes any left open.
type Interpreter struct {
	id      int64
	ops     chan *op
	closing chan struct{} // closed by Close: no more ops
	done    chan struct{} // closed when the interpreter has ended
	close   sync.Once

	imu      sync.Mutex      // serialises interrupts against the interpreter's end
	ended    bool            // guarded by imu
	retrying map[uint64]bool // guarded by imu: the tasks (0: whatever runs) whose deferred interrupt is tried again
	watching map[uint64]bool // guarded by imu: the tasks watched for an owed interrupt (watchOwed)
	c        *C.pyw_interp

	// With ExternalInterrupts: what InterruptContext interrupts (see watch). wmu, not imu, so
	// that the interpreter's thread never waits for an interrupter that waits for the GIL.
	external    bool
	wmu         sync.Mutex
	watched     <-chan struct{} // guarded by wmu: the Done channel of the running operation's ctx
	watchedTask uint64          // guarded by wmu
	unwatchFn   func() bool     // i.unwatch, made once

	// Used only on the interpreter's thread.
	slots   map[string]C.size_t
	mainAt  map[string]int // a __main__ target's (only): the value of runs at its resolution
	argBuf  []byte
	argRefs wire.Refs
	handle  cgo.Handle
	stdout  stream
	stderr  stream
	runs    int
	imports int         // resolutions that ran Python (pyw_interp_resolve)
	inCall  atomic.Bool // a Thread method is running (Thread.enter): another at once is misuse
}

type op struct {
	fn       func(*Thread) error
	err      error
	panicked *PanicError
	done     chan struct{}
}

var (
	interpIDs atomic.Int64
	taskIDs   atomic.Uint64
)

// NewInterpreter creates an own-GIL interpreter (Py_NewInterpreterFromConfig with
// PyInterpreterConfig_OWN_GIL, its own obmalloc, threads allowed, daemon threads, fork and exec
// refused, extension modules checked for multi-interpreter support) and prepares it with cfg.
// It starts the runtime with a zero Config when Initialize has not been called. ctx bounds the
// wait for a turn to create (at most max(4, NumCPU) interpreters are created or ended at once);
// creation itself, about 10–20 ms, is not interrupted. Errors: ErrFinalized, the runtime's own
// start's error, ctx.Err(), *PythonError when cfg's set-up raised, *ConversionError for a value
// of cfg.Main, Config, Argv or Path that cannot cross (What says which).
func NewInterpreter(ctx context.Context, cfg InterpreterConfig) (*Interpreter, error) {
	// rt.cfg is fixed once the runtime runs; ensureRunning's lock orders this read after it.
	if err := ensureRunning(); err != nil {
		return nil, err
	}
	defer rt.creating.Done()
	workers := cfg.Workers
	if workers <= 0 {
		workers = 1
	}
	setup := []setupField{
		{"path", append(append([]string(nil), rt.cfg.Path...), cfg.Path...)},
		{"main", cfg.Main},
		{"config", cfg.Config},
		{"worker_id", cfg.WorkerID},
		{"workers", workers},
	}
	if cfg.Argv != nil {
		setup = append(setup, setupField{"argv", cfg.Argv})
	}
	setupBuf, err := encodeSetup(setup)
	if err != nil {
		return nil, err
	}
	if err := lockLifecycle(ctx); err != nil {
		return nil, err
	}
	i := &Interpreter{
		id:      interpIDs.Add(1),
		ops:     make(chan *op),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		slots:   make(map[string]C.size_t),
		mainAt:  make(map[string]int),

		external: cfg.ExternalInterrupts,
	}
	i.unwatchFn = i.unwatch
	owner := outputOwners.Add(1)
	i.stdout.setDefault(firstWriter(cfg.Stdout, rt.cfg.Stdout), owner)
	i.stderr.setDefault(firstWriter(cfg.Stderr, rt.cfg.Stderr), owner)
	created := make(chan error, 1)
	go i.thread(setupBuf, created)
	if err := <-created; err != nil {
		return nil, err
	}
	return i, nil
}

type setupField struct {
	name  string
	value any
}

// encodeSetup encodes the set-up as one dict, field by field, so that a value that cannot
// cross is reported against its field (ConversionError.What).
func encodeSetup(fields []setupField) ([]byte, error) {
	buf := binary.AppendUvarint([]byte{wire.TagDict}, uint64(len(fields)))
	for _, f := range fields {
		var err error
		buf, _ = wire.Append(buf, f.name) // a plain ASCII key
		// at depth 1: in the dict, as the C side counts it
		if buf, err = wire.AppendAt(buf, f.value, 1); err != nil {
			return nil, conversionError(f.name, "", err)
		}
	}
	return buf, nil
}

func firstWriter(ws ...io.Writer) io.Writer {
	for _, w := range ws {
		if w != nil {
			return w
		}
	}
	return nil
}

// thread is the interpreter's goroutine: locked to its OS thread from creation to end, and never
// unlocked, so the OS thread exits with it and no thread that ran this interpreter is reused.
func (i *Interpreter) thread(setup []byte, created chan<- error) {
	runtime.LockOSThread()
	i.handle = cgo.NewHandle(i)
	var res C.pyw_result
	var errbuf C.pyw_buf
	c := C.pyw_interp_new(C.uintptr_t(i.handle), (*C.char)(unsafe.Pointer(&setup[0])), C.size_t(len(setup)),
		&res, &errbuf)
	unlockLifecycle()
	if c == nil {
		err := resultError(context.Background(), &res, "interpreter set-up")
		C.pyw_buf_free(&errbuf)
		i.stdout.close()
		i.stderr.close()
		i.handle.Delete()
		created <- err
		return
	}
	i.c = c
	register(i)
	created <- nil

	// The interpreter ends here, on its own thread, when it closes, and also when the function
	// given to Do called runtime.Goexit (t.FailNow in a test): this goroutine ends then, and its
	// locked OS thread with it, and the interpreter must not be left with no thread.
	defer func() {
		i.close.Do(func() { close(i.closing) })
		i.end()
	}()
	for {
		select { // closing wins over waiting work
		case <-i.closing:
			return
		default:
		}
		select {
		case o := <-i.ops:
			i.run(o)
		case <-i.closing:
			return
		}
	}
}

// errGoexit is Do's error when its function called runtime.Goexit instead of returning.
var errGoexit = fmt.Errorf("cpython: the function given to Do called runtime.Goexit (t.FailNow?) instead of returning: the interpreter was closed: %w", ErrClosed)

func (i *Interpreter) run(o *op) {
	t := &Thread{}
	t.i.Store(i)
	returned := false
	defer func() {
		t.i.Store(nil) // atomic: a goroutine that kept t may read it now, and must see it gone
		i.stdout.setCurrent(nil)
		i.stderr.setCurrent(nil)
		if r := recover(); r != nil {
			o.panicked = &PanicError{Value: r, Stack: debug.Stack()}
		} else if !returned {
			o.err = errGoexit
		}
		close(o.done)
	}()
	o.err = o.fn(t)
	returned = true
}

func (i *Interpreter) end() {
	// First what ending waits for (threads, atexit functions, the finalizers of the program's
	// own objects): a task, so that CloseContext's interrupts reach it, and outside the
	// lifecycle turn, so that one that never ends keeps no other interpreter from being created
	// or ended. (A finalizer that never returns in pyw_interp_end, where no interrupt reaches,
	// does: see the package doc.)
	// What that raised was reported on the interpreter's stderr, as CPython reports it; its
	// result says nothing more.
	C.pyw_interp_wind_down(i.c, C.uint64_t(taskIDs.Add(1)))
	i.imu.Lock() // waits for an interrupt in progress; none can start after this
	i.ended = true
	i.imu.Unlock()
	lockLifecycle(context.Background())
	C.pyw_interp_end(i.c)
	unlockLifecycle()
	i.c = nil
	i.stdout.close()
	i.stderr.close()
	i.handle.Delete()
	unregister(i)
	close(i.done)
}

// ID is a process-unique number for this interpreter (not CPython's interpreter ID).
func (i *Interpreter) ID() int64 { return i.id }

// Do runs fn on the interpreter's thread and returns its error. While fn runs, nothing else
// runs on this interpreter; fn uses t to run Python (t is valid only until fn returns). A panic
// in fn is recovered on the interpreter's thread and panicked again here as a *PanicError.
// ctx bounds the wait for the interpreter to take fn; once fn runs, cancellation is up to fn
// (pass ctx to t's methods). Errors: ErrClosed, ctx.Err(), or fn's error. A fn that calls
// runtime.Goexit (t.FailNow in a test) ends the interpreter's thread, and so the interpreter:
// Do then returns an error wrapping ErrClosed.
func (i *Interpreter) Do(ctx context.Context, fn func(t *Thread) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, done: make(chan struct{})}
	select {
	case i.ops <- o:
	case <-i.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-o.done
	if o.panicked != nil {
		panic(o.panicked)
	}
	return o.err
}

// Exec runs Python statements in the interpreter's __main__ module (globals persist between
// calls). A SyntaxError, or any exception, comes back as a *PythonError; cancelling ctx stops
// running Python code with an *InterruptedError (see Thread.Exec).
func (i *Interpreter) Exec(ctx context.Context, src string) error {
	return i.Do(ctx, func(t *Thread) error { return t.Exec(ctx, src) })
}

// RunFile runs the Python file at path as the __main__ script; see Thread.RunFile.
func (i *Interpreter) RunFile(ctx context.Context, path string) error {
	return i.Do(ctx, func(t *Thread) error { return t.RunFile(ctx, path) })
}

// Eval evaluates one Python expression in __main__ and returns its value converted to Go.
func (i *Interpreter) Eval(ctx context.Context, expr string) (any, error) {
	var v any
	err := i.Do(ctx, func(t *Thread) (err error) {
		v, err = t.Eval(ctx, expr)
		return err
	})
	return v, err
}

// Call calls target ("pkg.module:func", "path/to/file.py:func", attribute paths such as
// "mod:Class.method") with args and returns its result converted to Go. A final Kwargs
// argument passes keyword arguments. See Thread.Call.
func (i *Interpreter) Call(ctx context.Context, target string, args ...any) (any, error) {
	var v any
	err := i.Do(ctx, func(t *Thread) (err error) {
		v, err = t.Call(ctx, target, args...)
		return err
	})
	return v, err
}

// Close ends the interpreter after the operation running now, if any, has finished; waiting
// operations get ErrClosed. It is idempotent and cheap to call again. Close must not be called
// from the interpreter's own thread (inside Do). As at Python's own exit, the interpreter ends
// only once the threads its code started (threading.Thread, not daemons: the interpreter
// refuses those) have finished and its atexit functions have run: a thread that never
// finishes keeps Close waiting (use CloseContext). Then the finalizers of what __main__ and the
// modules that are not the standard library's held run. Meanwhile other interpreters are
// created and ended as usual. (CPython's end of the interpreter, which runs the finalizers of
// what the standard library still holds, comes after that and cannot be interrupted: see the
// package doc.)
func (i *Interpreter) Close() error { return i.CloseContext(context.Background()) }

// CloseContext is Close with a deadline: when ctx ends before the running operation finishes,
// its Python code is interrupted (again every 100 ms, for code that swallows the first
// interrupt) and the interrupted call returns an *InterruptedError wrapping ErrClosed. So is
// what the interpreter's end waits for: its atexit functions (each one still running), the
// finalizers of what __main__ and the modules that are not the standard library's held, and
// every thread its code started (KeyboardInterrupt in each, then once a second; time.sleep and
// pyworkers channel waits are cut short). A thread blocked in another C call — a socket's
// recv, queue.get, a lock — sees it only when that call returns: one that never returns keeps
// the interpreter, and this call, waiting. It returns only when the interpreter has ended:
// nil if that came before ctx's end, else an error wrapping ctx.Err() (as http.Server's
// Shutdown does), whether or not anything was left to interrupt then.
func (i *Interpreter) CloseContext(ctx context.Context) error {
	i.close.Do(func() { close(i.closing) })
	select {
	case <-i.done: // ended already: nil, also when ctx has ended too (select would pick either)
		return nil
	default:
	}
	select {
	case <-i.done:
		return nil
	case <-ctx.Done():
	}
	for {
		i.interrupt(0)
		select {
		case <-i.done:
			return fmt.Errorf("cpython: interpreter closed after its close's context ended (what still ran was interrupted): %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Done is closed when the interpreter has ended.
func (i *Interpreter) Done() <-chan struct{} { return i.done }

// interrupt interrupts task (0: whatever runs) if it is running now, and reports whether it
// did (a task that has yet to begin is interrupted when it begins). That injects
// KeyboardInterrupt, except into an async call whose own code is not running (see the C
// side's cancel_instead): its event loop is asked to cancel its task, and if the loop has not
// taken the request after escalateAfter (code that never awaits blocks it: a child task's, a
// background task's), KeyboardInterrupt is injected after all. Called from any goroutine
// except the interpreter's own.
//
// Code running in the import system (importlib's own frames: taking or giving back a module's
// import lock, waiting for another thread's import of a module) is not interrupted, nor for a
// second the code importlib calls (a finder, a finalizer): an interrupt there could leave a lock
// taken, so that every later import of that module, in any thread, waited for good. The
// interrupt is tried again at growing intervals (1 ms to 50 ms) until it lands in other code
// (the imported module's own, or the code that imported it) or the task ends, on timers:
// interrupt returns at once, true.
func (i *Interpreter) interrupt(task uint64) bool { return i.interruptFollow(task, 0) > 0 }

// interruptFollow is interruptCLocked (mode: 0, 1 to escalate), followed up: a cancel request
// an async call's loop has not taken after escalateAfter is escalated, and a deferred interrupt
// is tried again (retryInterrupt), one series of tries per task at a time.
func (i *Interpreter) interruptFollow(task uint64, mode C.int) C.int {
	i.imu.Lock()
	r := i.interruptCLocked(task, mode)
	// A series' last try and its end are one step under imu, as this try and its start are: a
	// deferral is never left to a series that has ended.
	first := r == C.PYW_DEFERRED && mark(&i.retrying, task)
	// The watch, from the first interrupt of the task (a deferred one's series injects later).
	watch := (r == C.PYW_INJECTED || first) && task != 0 && mark(&i.watching, task)
	i.imu.Unlock()
	if first { // begun: not to be noted as interrupted before it began
		i.retryInterrupt(task, mode|C.PYW_INTERRUPT_AGAIN, time.Millisecond, time.Now())
	}
	i.escalateIfAsked(task, r)
	if watch {
		i.watchOwed(task)
	}
	return r
}

// mark adds task to the set *m (made on first use) and reports whether it was not there yet.
// imu held.
func mark(m *map[uint64]bool, task uint64) bool {
	if (*m)[task] {
		return false
	}
	if *m == nil {
		*m = make(map[uint64]bool)
	}
	(*m)[task] = true
	return true
}

// escalateIfAsked escalates after escalateAfter when r says an async call's loop was asked to
// cancel task.
func (i *Interpreter) escalateIfAsked(task uint64, r C.int) {
	if r == C.PYW_CANCEL_ASKED {
		time.AfterFunc(escalateAfter, func() { i.interruptFollow(task, 1) })
	}
}

// watchOwed looks every 50 ms, while task runs, whether it owes an interrupt: one swallowed by a
// finalizer that importlib called, which the interpreter's thread could not inject again there
// (pyw_interp_owed); it is then injected as a deferred one is. (CloseContext's, task 0, repeats
// anyway.)
func (i *Interpreter) watchOwed(task uint64) {
	time.AfterFunc(50*time.Millisecond, func() {
		i.imu.Lock()
		owed := C.int(0)
		if !i.ended {
			owed = C.pyw_interp_owed(i.c, C.uint64_t(task))
		}
		if owed == 0 {
			delete(i.watching, task)
		}
		i.imu.Unlock()
		if owed == 2 { // injected only if still owed once it has the GIL: not twice
			i.interruptFollow(task, C.PYW_INTERRUPT_AGAIN|C.PYW_INTERRUPT_OWED)
		}
		if owed != 0 {
			i.watchOwed(task)
		}
	})
}

// retryInterrupt tries a deferred interrupt again after wait, and so on at growing intervals
// (to 50 ms) until it lands, or the task or the interpreter has ended; from a second after the
// first try (since), as a late one (PYW_INTERRUPT_LATE).
func (i *Interpreter) retryInterrupt(task uint64, mode C.int, wait time.Duration, since time.Time) {
	time.AfterFunc(wait, func() {
		if time.Since(since) >= time.Second {
			mode |= C.PYW_INTERRUPT_LATE
		}
		i.imu.Lock()
		r := i.interruptCLocked(task, mode)
		if r != C.PYW_DEFERRED {
			delete(i.retrying, task)
		}
		i.imu.Unlock()
		if r == C.PYW_DEFERRED {
			i.retryInterrupt(task, mode, min(2*wait, 50*time.Millisecond), since)
			return
		}
		i.escalateIfAsked(task, r)
	})
}

// escalateAfter is how long an async call's event loop has to take a request to cancel the
// call's task before KeyboardInterrupt is injected instead: a turn of the loop between awaits
// takes far less, unless code that does not await holds it.
const escalateAfter = 50 * time.Millisecond

// interruptCLocked is pyw_interp_interrupt (escalate: 0 or 1, with PYW_INTERRUPT_AGAIN and
// PYW_INTERRUPT_LATE or'd in for a deferred one's tries), unless the interpreter has ended;
// imu held.
func (i *Interpreter) interruptCLocked(task uint64, escalate C.int) C.int {
	if i.ended {
		return 0
	}
	// The temporary thread state belongs to this OS thread until it is deleted.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return C.pyw_interp_interrupt(i.c, C.uint64_t(task), escalate)
}

// InterruptContext is for interpreters with ExternalInterrupts, once ctx has ended: it
// interrupts the operation running now if it was given ctx, or a context that ends with it (the
// same Done channel), as Thread's methods do themselves otherwise; an operation given ctx that
// has yet to start does not start. It reports whether it found one, running or about to start:
// it is interrupted (code running importlib's own code once it has left it: see Cancellation in
// the package doc) or does not start (one that was ending just then is reported too). Call it
// from any goroutine except the interpreter's own; it waits for the interpreter's GIL (at most
// a switch interval while Python code runs, longer while C code holds the GIL).
func (i *Interpreter) InterruptContext(ctx context.Context) bool {
	done := ctx.Done()
	if done == nil || ctx.Err() == nil {
		return false
	}
	i.wmu.Lock()
	task := i.watchedTask
	found := i.watched == done
	i.wmu.Unlock()
	if !found {
		return false
	}
	// The task may end meanwhile: interrupt reaches only that task (by its number), never the
	// next. One that has yet to begin is not running (false), but begin() interrupts it.
	i.interrupt(task)
	return true
}

// Thread is an interpreter's own thread, handed to the function given to Interpreter.Do. Its
// methods run Python directly, without marshalling (about the cost of the C API itself), and
// are valid only on that goroutine and only until that function returns: using a Thread later
// panics, and so does a method that runs Python used from another goroutine (SetOutput is not
// checked for that: calling it from another goroutine is a data race).
type Thread struct {
	i atomic.Pointer[Interpreter]
}

func (t *Thread) interp() *Interpreter {
	i := t.i.Load()
	if i == nil {
		panic("cpython: Thread used after the function Do gave it to returned")
	}
	return i
}

// enter starts a Thread method that runs Python; leave ends it. A second one at once can only
// come from another goroutine (or from code called back during the first): it panics before it
// touches anything of the interpreter's (its buffers, target cache, interrupt record), which
// would corrupt the running call; used from another goroutine one at a time, the C side refuses
// it (PYW_WRONG_THREAD).
func (t *Thread) enter() *Interpreter {
	i := t.interp()
	if !i.inCall.CompareAndSwap(false, true) {
		panic(wrongThread)
	}
	return i
}

// leave also writes out a partial line the call's output ends with (see Output in the package
// doc and stream.flushOwn): a turn may run many calls, as a pool's worker runs its tasks in one.
func (i *Interpreter) leave() {
	i.stdout.flushOwn()
	i.stderr.flushOwn()
	i.inCall.Store(false)
}

const wrongThread = "cpython: a Thread was used from another goroutine than the one Do gave it to, " +
	"or while it ran a call (it is valid only on that goroutine, one call at a time, until Do's function returns)"

// Interpreter returns the interpreter this thread runs.
func (t *Thread) Interpreter() *Interpreter { return t.interp() }

// SetOutput sends sys.stdout / sys.stderr to these writers until the function given to Do
// returns (nil keeps the interpreter's writer). Partial lines are written out at the switch.
func (t *Thread) SetOutput(stdout, stderr io.Writer) {
	i := t.interp()
	i.stdout.setCurrent(stdout)
	i.stderr.setCurrent(stderr)
}

// Exec runs Python statements in __main__. Cancelling ctx while they run injects
// KeyboardInterrupt (within about 5 ms, CPython's switch interval) and returns an
// *InterruptedError wrapping ctx.Err(). time.sleep stops at once; another blocking C call (a
// socket read, select) sees the interrupt only when it returns. pyworkers' own conversion of
// arguments and results, and of a channel's values the code sends or receives, which holds the
// GIL, stops too once it has run about a millisecond (a huge value, or one whose shared parts
// expand without end).
func (t *Thread) Exec(ctx context.Context, src string) error {
	_, err := t.run(ctx, 0, src)
	return err
}

// Eval evaluates one expression in __main__ and converts its value to Go; cancellation as Exec.
func (t *Thread) Eval(ctx context.Context, expr string) (any, error) {
	return t.run(ctx, 1, expr)
}

// RunFile runs the Python file at path as the __main__ script, as python FILE would: __file__
// set, globals in __main__, tracebacks pointing into the file, the file's folder (symbolic
// links resolved) first on sys.path if it is not there yet, so that the modules beside it
// import, and sys.argv [path] unless InterpreterConfig.Argv set it; cancellation as Exec.
func (t *Thread) RunFile(ctx context.Context, path string) error {
	_, err := t.run(ctx, 2, path)
	return err
}

func (t *Thread) run(ctx context.Context, mode int, src string) (any, error) {
	i := t.enter()
	defer i.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	i.runs++
	name := [...]string{"<exec-", "<eval-", "<file-"}[mode] + strconv.Itoa(i.runs) + ">"
	csrc := C.CString(src)
	defer C.free(unsafe.Pointer(csrc))
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	task := taskIDs.Add(1)
	stop, ok := i.watch(ctx, task)
	if !ok {
		return nil, ctx.Err()
	}
	r := C.pyw_interp_run(i.c, C.int(mode), csrc, C.size_t(len(src)), cname, C.uint64_t(task))
	stop()
	return result(ctx, &r, "result")
}

// Call calls target with args on this thread. The target is resolved (imported) on first use
// and cached per interpreter; a failed resolution is retried on the next call. A __main__
// target ("__main__:f") is resolved again after an Exec, Eval or RunFile, which may have
// redefined it. A file target is
// imported as a module named after the file (a private name when another module has that
// name), its folder put at the front of sys.path as for a script, so its siblings import; a
// file that a sibling imported already is that same module. A changed file is not reloaded:
// a fresh interpreter (a recycled worker) sees the change. Cancellation as Exec.
func (t *Thread) Call(ctx context.Context, target string, args ...any) (any, error) {
	i := t.enter()
	defer i.leave()
	return i.call(ctx, target, args, nil, false)
}

// CallResult is one call's outcome in CallMany.
type CallResult struct {
	Value any
	Err   error
}

// CallMany calls target once per item, in this one turn of the interpreter, and returns one
// CallResult per item, in order: each item is the arguments of one call (a final Kwargs gives
// keyword arguments). An item's Exception is its own Err (a *PythonError), and so is a result
// that cannot cross (a *ConversionError whose path starts with the item's index); the batch
// goes on. A BaseException that is not an Exception (SystemExit; a KeyboardInterrupt the code
// raised itself), and a MemoryError (not a subclass), end the batch as they would end a Call
// (after which package pool replaces the interpreter): that item has it as its Err, the items
// after it have ErrNotRun and did not run, and it is also the error returned, with the
// results. ctx's end interrupts the batch: the items that finished keep their outcomes, the
// one it stopped has the *InterruptedError as its Err, those after it ErrNotRun, and the
// *InterruptedError is the error returned with them (also when every item had finished; with
// no results when the interrupt escaped the loop over the items — it came as the batch began,
// or as it ended — or stopped the conversion of their outcomes, see Exec). What stops the
// batch before any item runs is the error, with no results: an argument that cannot cross (a
// *ConversionError whose path starts with the item's index), a target that cannot be resolved.
// A batch that fails as a whole once its calls have begun (out of memory keeping or encoding its
// outcomes, or code run while they were encoded changed them) returns an error wrapping
// ErrBatchFailed and the cause, with no results: some of its calls may have run.
func (t *Thread) CallMany(ctx context.Context, target string, items [][]any) ([]CallResult, error) {
	i := t.enter()
	defer i.leave()
	v, err := i.call(ctx, target, nil, items, true)
	var ie *InterruptedError
	if err != nil && (v == nil || !errors.As(err, &ie)) {
		return nil, err
	}
	list, ok := v.([]any) // flag, result-or-error for each item in turn (bootstrap.call_many)
	if !ok || len(list)%2 != 0 || len(list) > 2*len(items) {
		return nil, fmt.Errorf("cpython: internal: %d calls gave %T", len(items), v)
	}
	out := make([]CallResult, len(items))
	var stop error
	if ie != nil {
		stop = ie // the items the interrupt kept from running have ErrNotRun
	}
	for k := range out {
		if 2*k >= len(list) {
			if stop == nil {
				return nil, fmt.Errorf("cpython: internal: %d calls gave %d outcomes", len(items), len(list)/2)
			}
			out[k].Err = ErrNotRun
			continue
		}
		switch flag, x := list[2*k], list[2*k+1]; flag {
		case true:
			out[k].Value = x
		case "interrupted": // the item the interrupt stopped, or kept from starting
			if ie == nil {
				return nil, errors.New("cpython: internal: an interrupted outcome without an interrupt")
			}
			if pe, perr := pythonError(x); perr == nil {
				ie.Python = pe
			}
			out[k].Err = ie
		case false, "stop":
			if out[k].Err, err = pythonError(x); err != nil {
				return nil, err
			}
			if flag == "stop" {
				stop = out[k].Err
			}
		case nil: // a result that cannot cross: (path, reason), see pyw_encode_outcomes
			why, ok := x.(Tuple)
			if !ok || len(why) != 2 {
				return nil, fmt.Errorf("cpython: internal: conversion outcome %T", x)
			}
			path, _ := why[0].(string)
			reason, _ := why[1].(string)
			out[k].Err = &ConversionError{What: "result", Path: "[" + strconv.Itoa(k) + "]" + path, Reason: reason}
		default:
			return nil, fmt.Errorf("cpython: internal: call outcome flag %v", flag)
		}
	}
	if ie != nil {
		return out, ie
	}
	return out, stop
}

// call encodes args (or, for many, items), resolves target and runs the call(s) as one
// interruptible task; the result is CallMany's raw list when many.
func (i *Interpreter) call(ctx context.Context, target string, args []any, items [][]any, many bool) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var buf []byte
	var err error
	if many {
		buf, err = encodeCalls(i.argBuf[:0], &i.argRefs, items)
	} else {
		buf, err = encodeCall(i.argBuf[:0], &i.argRefs, args)
	}
	i.argBuf = buf
	defer i.argRefs.Clear()
	if cap(buf) > argBufKeep {
		defer func() { i.argBuf = nil }() // one huge call's buffer is not kept for the interpreter's life
	}
	if err != nil {
		return nil, err
	}
	imports := i.imports
	slot, err := i.resolve(ctx, target)
	if err != nil {
		return nil, err
	}
	task := taskIDs.Add(1)
	stop, ok := i.watch(ctx, task)
	if !ok {
		if i.imports != imports {
			// ctx ended while the target was resolved, which ran to its end (an interrupt waits
			// while importlib's code runs): not ctx's error as it is, which says nothing ran
			return nil, fmt.Errorf("cpython: %s was imported, then not called: %w", target, ctx.Err())
		}
		return nil, ctx.Err()
	}
	refs, nrefs := cRefs(&i.argRefs)
	data, n := (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))
	var r C.pyw_result
	if many {
		r = C.pyw_interp_call_many(i.c, slot, data, n, refs, nrefs, C.uint64_t(task))
	} else {
		r = C.pyw_interp_call(i.c, slot, data, n, refs, nrefs, C.uint64_t(task))
	}
	stop()
	if many && r.interrupted != 0 {
		// The outcomes of the items that finished come with the interrupt (call_many's list);
		// none when the interrupt escaped call_many.
		v, err := decodeResult(&r, "result")
		ie := interruptedError(ctx, err)
		if err != nil {
			v = nil
		}
		return v, ie
	}
	v, err := result(ctx, &r, "result")
	if r.started != 0 && r.interrupted == 0 && err != nil { // an interrupt's error stays its own
		err = fmt.Errorf("%w: %w", ErrBatchFailed, err)
	}
	return v, err
}

// argBufKeep is the most an interpreter keeps of the buffer it encodes calls' arguments in, from
// one call to the next (larger payloads cross without a copy as a Buffer anyway). Room for a
// 1 MiB argument and its growth: at 1 MiB such calls each grew a fresh buffer, 1.6× slower.
const argBufKeep = 4 << 20

// Resolve imports target's module and finds the callable, as the first Call of it would, without
// calling it: to check a target before work starts. The result is cached like Call's.
func (t *Thread) Resolve(ctx context.Context, target string) error {
	i := t.enter()
	defer i.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := i.resolve(ctx, target)
	return err
}

// resolve returns target's slot, resolving it on first use (a failure is not cached).
func (i *Interpreter) resolve(ctx context.Context, target string) (C.size_t, error) {
	slot, ok := i.slots[target]
	if at, main := i.mainAt[target]; ok && (!main || at == i.runs) {
		return slot, nil
	}
	if !ok { // else: an Exec, Eval or RunFile since may have redefined it: again, into its slot
		slot = C.size_t(len(i.slots))
	}
	task := taskIDs.Add(1)
	stop, ok := i.watch(ctx, task) // importing can take long, or hang
	if !ok {
		return 0, ctx.Err()
	}
	ctarget := C.CString(target)
	i.imports++
	r := C.pyw_interp_resolve(i.c, ctarget, C.size_t(len(target)), slot, C.uint64_t(task))
	stop()
	C.free(unsafe.Pointer(ctarget))
	if _, err := result(ctx, &r, "result"); err != nil {
		return 0, err
	}
	i.slots[target] = slot
	if strings.HasPrefix(target, "__main__:") {
		i.mainAt[target] = i.runs
	}
	return slot, nil
}

// watch arranges for task to be interrupted when ctx ends and returns the func that disarms it.
// With ExternalInterrupts it records the task for InterruptContext instead, and returns false
// when ctx has ended already (InterruptContext may have come before the record): nothing is
// armed then, and the caller returns ctx.Err() without running the task.
func (i *Interpreter) watch(ctx context.Context, task uint64) (func() bool, bool) {
	done := ctx.Done()
	if done == nil {
		return unwatched, true
	}
	if !i.external {
		return context.AfterFunc(ctx, func() { i.interrupt(task) }), true
	}
	i.wmu.Lock()
	i.watched, i.watchedTask = done, task
	i.wmu.Unlock()
	if ctx.Err() != nil {
		i.unwatch()
		return nil, false
	}
	return i.unwatchFn, true
}

// unwatch ends the record watch made with ExternalInterrupts.
func (i *Interpreter) unwatch() bool {
	i.wmu.Lock()
	i.watched, i.watchedTask = nil, 0
	i.wmu.Unlock()
	return true
}

// unwatched is what watch returns for a context that cannot end.
func unwatched() bool { return true }

// result converts what C returned into a Go value or error. The data it points to belongs to
// the interpreter and is copied here.
func result(ctx context.Context, r *C.pyw_result, what string) (any, error) {
	v, err := decodeResult(r, what)
	if r.interrupted == 0 {
		return v, err
	}
	return nil, interruptedError(ctx, err)
}

// interruptedError is the error of a task its interrupt ended: ctx's (or the interpreter's
// closing), with the Python exception it raised if err has one.
func interruptedError(ctx context.Context, err error) *InterruptedError {
	cause := ctx.Err()
	if cause == nil {
		cause = ErrClosed
	}
	ie := &InterruptedError{Cause: cause}
	if !errors.As(err, &ie.Python) {
		ie.Python = nil
	}
	return ie
}

func resultError(ctx context.Context, r *C.pyw_result, what string) error {
	_, err := result(ctx, r, what)
	return err
}

func decodeResult(r *C.pyw_result, what string) (any, error) {
	// The C side refuses a call on another thread than the interpreter's own (a thread-local
	// read): a Thread used from another goroutine while no call of its own runs (Thread.enter
	// catches one that does; a Go-side thread check per call would cost a tenth of a tiny call).
	if r.status == C.PYW_WRONG_THREAD {
		panic(wrongThread)
	}
	var data []byte
	if r.data != nil {
		data = unsafe.Slice((*byte)(unsafe.Pointer(r.data)), int(r.len))
	}
	switch r.status {
	case C.PYW_OK:
		if data == nil {
			return nil, nil
		}
		v, err := wire.DecodeRefs(data, goRefs(r.refs, r.nrefs))
		if r.nrefs != 0 {
			C.pyw_refs_clear(r.held) // the Buffers in v hold their own
		}
		if err != nil {
			return nil, fmt.Errorf("cpython: internal: undecodable %s: %w", what, err)
		}
		return v, nil
	case C.PYW_PYERR:
		v, err := wire.DecodeAll(data)
		if err != nil {
			return nil, err
		}
		pe, err := pythonError(v)
		if err != nil {
			return nil, err
		}
		return nil, pe
	case C.PYW_CONVERT:
		s, err := decodeStrings(data, 2)
		if err != nil {
			return nil, err
		}
		return nil, &ConversionError{What: what, Path: s[0], Reason: s[1]}
	}
	msg := "out of memory" // PYW_FAILED: plain text, or none when even that could not be made
	if len(data) > 0 {
		msg = strings.ToValidUTF8(string(data), "\uFFFD")
	}
	return nil, errors.New("cpython: " + msg)
}
