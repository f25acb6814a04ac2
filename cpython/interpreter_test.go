package cpython_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

var bg = context.Background()

func TestRuntimeInfo(t *testing.T) {
	info, err := cpython.RuntimeInfo()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(info.Version, "3.14."), "version %q", info.Version)
	assert.Contains(t, info.Full, info.Version)
	assert.NotEmpty(t, info.Prefix)
	// the build linked must be the build reported, and the one Python itself sees
	i := newInterp(t, cpython.InterpreterConfig{})
	v, err := i.Eval(bg, "hasattr(__import__('sys'), 'gettotalrefcount')")
	require.NoError(t, err)
	assert.Equal(t, info.Debug, v)
	assert.ErrorIs(t, cpython.Initialize(cpython.Config{}), cpython.ErrInitialized)
}

// Two own-GIL interpreters run CPU-bound Python at the same time: during a shared wall-clock
// window each thread gets CPU time close to the window's length. Under one shared GIL the two
// CPU times together could not exceed the window.
func TestInterpretersRunInParallel(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs at least 2 CPUs to observe parallelism")
	}
	a := newInterp(t, cpython.InterpreterConfig{})
	b := newInterp(t, cpython.InterpreterConfig{})
	var best float64
	for attempt := 0; attempt < 5 && best < 1.2; attempt++ {
		now, err := a.Eval(bg, "__import__('time').monotonic_ns()")
		require.NoError(t, err)
		start := now.(int64) + int64(50*time.Millisecond)
		stop := start + int64(400*time.Millisecond)
		var wg sync.WaitGroup
		res := make([]any, 2)
		errs := make([]error, 2)
		for k, in := range []*cpython.Interpreter{a, b} {
			wg.Go(func() { res[k], errs[k] = in.Call(bg, "pwtest:cpu_window", start, stop) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		sum := 0.0
		for _, r := range res {
			tup := r.(cpython.Tuple)
			wall, cpu := tup[0].(int64), tup[1].(int64)
			require.Greater(t, wall, int64(300*time.Millisecond))
			sum += float64(cpu) / float64(wall)
		}
		t.Logf("attempt %d: CPU/wall summed over both interpreters = %.2f", attempt, sum)
		best = max(best, sum)
	}
	assert.Greater(t, best, 1.2, "two interpreters never had more than one core's worth of CPU at once")
}

func TestExecEvalAndMainGlobals(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{
		Main:     map[string]any{"worker_id": 3, "settings": map[string]any{"depth": 2}},
		Config:   map[string]any{"model": "A", "sizes": []int{1, 2}},
		WorkerID: 3, Workers: 8,
		Argv: []string{"prog.py", "--flag"},
	})
	require.NoError(t, i.Exec(bg, "x = worker_id * 10 + settings['depth']"))
	v, err := i.Eval(bg, "x")
	require.NoError(t, err)
	assert.Equal(t, int64(32), v)

	v, err = i.Eval(bg, "__import__('pyworkers').config()")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"model": "A", "sizes": []any{int64(1), int64(2)}}, v)
	// config() hands out copies, nested containers too: changing one does not change the next
	require.NoError(t, i.Exec(bg, "import pyworkers\nc = pyworkers.config()\nc['model'] = 'changed'\nc['sizes'].append(3)"))
	v, err = i.Eval(bg, "(pyworkers.worker_id(), pyworkers.workers(), pyworkers.config())")
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{int64(3), int64(8), map[string]any{"model": "A", "sizes": []any{int64(1), int64(2)}}}, v)
	// imported again after code took it out of sys.modules: a module that works as the first
	// (its API, its Buffer type, which a result may be), though another object
	require.NoError(t, i.Exec(bg, "import sys\nfirst = sys.modules.pop('pyworkers')\nimport pyworkers\nsys.modules['pyworkers'] = first"))
	v, err = i.Eval(bg, "(pyworkers is not first, pyworkers.worker_id(), pyworkers.workers(), pyworkers.config()['model'], pyworkers.Buffer is first.Buffer)")
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{true, int64(3), int64(8), "A", true}, v)
	v, err = i.Eval(bg, "pyworkers.Buffer(3)")
	require.NoError(t, err)
	if b, ok := v.(*cpython.Buffer); assert.True(t, ok, "%T", v) {
		assert.Equal(t, 3, b.Len())
		b.Release()
	}
	// a copy.py beside a target file does not stand in for the stdlib's inside config()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "copy.py"), []byte("raise ImportError('not the stdlib copy')\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "job.py"), []byte("import pyworkers\ndef conf():\n    return pyworkers.config()['model']\n"), 0o644))
	fresh := newInterp(t, cpython.InterpreterConfig{Config: map[string]any{"model": "B"}})
	v, err = fresh.Call(bg, filepath.Join(dir, "job.py")+":conf")
	require.NoError(t, err)
	assert.Equal(t, "B", v)

	v, err = i.Eval(bg, "__import__('sys').argv")
	require.NoError(t, err)
	assert.Equal(t, []any{"prog.py", "--flag"}, v)

	// a config nested as deep as values may be comes out whole
	var deep any = "core"
	for range 9000 {
		deep = []any{deep}
	}
	nested := newInterp(t, cpython.InterpreterConfig{Config: deep})
	v, err = nested.Eval(bg, "(lambda c: [(c := c[0]) for _ in range(9000)][-1])(__import__('pyworkers').config())")
	require.NoError(t, err)
	assert.Equal(t, "core", v)
}

func TestMainValueThatCannotCross(t *testing.T) {
	_, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Main: map[string]any{"ch": make(chan int)}})
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "main", ce.What)
	assert.Equal(t, `["ch"]`, ce.Path)
	assert.Contains(t, ce.Reason, "chan int")
	assert.ErrorIs(t, err, cpython.ErrUnsupportedValue)
}

func TestCallTargets(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	tool := filepath.Join(t.TempDir(), "tool") // a script without the .py suffix, as python runs it
	require.NoError(t, os.WriteFile(tool, []byte("def twice(x):\n    return 2 * x\n"), 0o644))
	cases := []struct {
		target string
		args   []any
		want   any
	}{
		{"pwtest:add", []any{2, 3}, int64(5)},
		{"pwtest:add", []any{2, cpython.Kwargs{"b": 40}}, int64(42)},
		{"pwtest:Greeter.hello", []any{"go"}, "hello, go"},
		{"os.path:join", []any{"a", "b"}, "a/b"},
		{"json:dumps", []any{map[string]any{"k": []any{1, true, nil}}}, `{"k": [1, true, null]}`},
		{pwtest.PythonDir + "/scriptfile.py:area", []any{3, 4}, int64(12)},
		{"../testdata/python/scriptfile.py:area", []any{5, 6}, int64(30)},
		{tool + ":twice", []any{21}, int64(42)},
	}
	for _, c := range cases {
		got, err := i.Call(bg, c.target, c.args...)
		if assert.NoError(t, err, c.target) {
			assert.Equal(t, c.want, got, c.target)
		}
	}
}

func TestCallTargetErrors(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	cases := []struct{ target, typ, msg string }{
		{"no_colon", "ValueError", "must look like"},
		{":f", "ValueError", "must look like"},
		{"pwtest:", "ValueError", "must look like"},
		{"no_such_module_xyz:f", "ModuleNotFoundError", "no_such_module_xyz"},
		{"pwtest:no_such_function", "AttributeError", "no_such_function"},
		{"pwtest:NOT_CALLABLE", "TypeError", "not callable"},
		{"/no/such/file.py:f", "FileNotFoundError", "/no/such/file.py"},
		{"pwtest_broken:f", "RuntimeError", "pwtest_broken cannot be imported"},
	}
	for _, c := range cases {
		_, err := i.Call(bg, c.target)
		var pe *cpython.PythonError
		if assert.ErrorAs(t, err, &pe, c.target) {
			assert.Equal(t, c.typ, pe.Type, c.target)
			assert.Contains(t, pe.Message, c.msg, c.target)
		}
	}
	// a failed resolution is not cached: the interpreter goes on working
	v, err := i.Call(bg, "pwtest:add", 1, 1)
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
}

func TestInterruptInfiniteLoop(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	for _, run := range []struct {
		name string
		fn   func(ctx context.Context) error
	}{
		{"Exec", func(ctx context.Context) error { return i.Exec(ctx, "while True:\n    pass") }},
		{"Call", func(ctx context.Context) error { _, err := i.Call(ctx, "pwtest:spin"); return err }},
		{"except Exception", func(ctx context.Context) error { _, err := i.Call(ctx, "pwtest:spin_catching_exceptions"); return err }},
	} {
		t.Run(run.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
			defer cancel()
			err := run.fn(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			var ie *cpython.InterruptedError
			require.ErrorAs(t, err, &ie)
			require.NotNil(t, ie.Python, "the interrupted code's traceback")
			assert.Equal(t, "KeyboardInterrupt", ie.Python.Type)
			// the interpreter is usable at once
			v, err := i.Eval(bg, "1 + 1")
			require.NoError(t, err)
			assert.Equal(t, int64(2), v)
		})
	}
	// cancellation (not a deadline) wraps context.Canceled
	ctx, cancel := context.WithCancel(bg)
	time.AfterFunc(50*time.Millisecond, cancel)
	require.ErrorIs(t, i.Exec(ctx, "while True: pass"), context.Canceled)
}

func TestInterruptDuringBlockingCallDoesNotLeak(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	// select.select only sees the interrupt when it returns; the call then ends interrupted
	ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	err := i.Exec(ctx, "import select\nselect.select([], [], [], 0.3)")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// and no pending interrupt may hit the following code
	for range 3 {
		require.NoError(t, i.Exec(bg, "total = 0\nfor k in range(200000):\n    total += k"))
	}
	v, err := i.Eval(bg, "total")
	require.NoError(t, err)
	assert.Equal(t, int64(19999900000), v)
}

// interruptedCall calls target with a context that times out after 100 ms, checks that the call
// was interrupted then, and returns the KeyboardInterrupt it ended with.
func interruptedCall(t *testing.T, i *cpython.Interpreter, target string, args ...any) *cpython.PythonError {
	t.Helper()
	return interrupted(t, func(ctx context.Context) error { _, err := i.Call(ctx, target, args...); return err })
}

// interruptedExec is interruptedCall for Exec of src.
func interruptedExec(t *testing.T, i *cpython.Interpreter, src string) *cpython.PythonError {
	t.Helper()
	return interrupted(t, func(ctx context.Context) error { return i.Exec(ctx, src) })
}

func interrupted(t *testing.T, run func(ctx context.Context) error) *cpython.PythonError {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	err := run(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	require.NotNil(t, ie.Python, "the interrupted code's traceback")
	assert.Equal(t, "KeyboardInterrupt", ie.Python.Type)
	return ie.Python
}

// An interrupt that stops an import half-way says so (InterruptedError.InImport): the
// interpreter's modules may be half made. Other interrupts do not, an Exec's own top-level code
// included.
func TestInterruptInImport(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	for _, c := range []struct {
		run      func(ctx context.Context) error
		inImport bool
	}{
		{func(ctx context.Context) error { _, err := i.Call(ctx, "pwtest:import_hang"); return err }, true},
		{func(ctx context.Context) error { _, err := i.Call(ctx, "pwtest_hang:f"); return err }, true}, // resolving
		{func(ctx context.Context) error { _, err := i.Call(ctx, "pwtest:spin"); return err }, false},
		{func(ctx context.Context) error { return i.Exec(ctx, "while True:\n    pass") }, false},
	} {
		ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
		err := c.run(ctx)
		cancel()
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, c.inImport, ie.InImport(), "%+v", ie.Python)
	}
}

// An interrupt that lands where CPython ignores exceptions (here a __del__; weakref callbacks
// during imports are the usual place) is raised again in the task, not lost.
func TestInterruptSwallowedByDelIsRaisedAgain(t *testing.T) {
	var errOut bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, i.Exec(bg, `
import time, pyworkers
class Holder:
    def __del__(self):
        while not pyworkers._interrupted():  # until the interrupt comes, which lands here
            pass
def f():
    Holder()  # its __del__ runs now
    end = time.monotonic() + 3
    while time.monotonic() < end:
        pass
    return "ran on"
`))
	interruptedCall(t, i, "__main__:f")
	assert.NotContains(t, errOut.String(), "Exception ignored")

	// other exceptions that CPython ignores are printed as before
	require.NoError(t, i.Exec(bg, "class Bad:\n    def __del__(self):\n        raise ValueError('in del')\nBad()"))
	assert.Contains(t, errOut.String(), "Exception ignored while calling deallocator")
	assert.Contains(t, errOut.String(), "ValueError: in del")
}

// time.sleep is pyworkers.sleep in every interpreter: the same sleep, but an interrupt ends it
// at once (CPython's own would sleep its whole time first), and only the task's own: a sleep in
// a thread the task started, or one in the task's cleanup after it caught the interrupt, runs
// its course.
func TestInterruptEndsSleep(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
import time, threading, pyworkers
assert time.sleep is pyworkers.sleep
def sleeper(secs):
    t = time.monotonic()
    try:
        time.sleep(secs)
    except KeyboardInterrupt:
        global slept
        slept = time.monotonic() - t
        time.sleep(0.05)  # cleanup after the interrupt was caught: not cut short
        slept_after = time.monotonic() - t - slept
        assert slept_after >= 0.05, slept_after
        raise
thread_out = []
def in_thread(secs):
    th = threading.Thread(target=lambda: (time.sleep(secs), thread_out.append("slept")))
    th.start()
    th.join()
`))
	assert.Contains(t, interruptedCall(t, i, "__main__:sleeper", 20).Traceback, "time.sleep(secs)")
	slept, err := i.Eval(bg, "slept")
	require.NoError(t, err)
	assert.Less(t, slept.(float64), 10.0, "the sleep ended when the call was interrupted")

	// a thread the task started sleeps its time: the task, in join, is interrupted when the
	// join returns
	interruptedCall(t, i, "__main__:in_thread", 0.3)
	v, err := i.Eval(bg, "thread_out")
	require.NoError(t, err)
	assert.Equal(t, []any{"slept"}, v)

	// the same arguments and errors as CPython's time.sleep
	require.NoError(t, i.Exec(bg, "time.sleep(0); time.sleep(0.001); time.sleep(1e-9)"))
	for _, c := range []struct{ src, typ, msg string }{
		{"time.sleep(-1)", "ValueError", "sleep length must be non-negative"},
		{"time.sleep(float('nan'))", "ValueError", "Invalid value NaN (not a number)"},
		{"time.sleep('1')", "TypeError", "'str' object cannot be interpreted as an integer or float"},
		{"import decimal; time.sleep(decimal.Decimal(1))", "TypeError", "'decimal.Decimal' object cannot be interpreted as an integer or float"},
		{"time.sleep(1e300)", "OverflowError", ""},
		{"time.sleep()", "TypeError", ""},
	} {
		pe := pwtest.PyErr(t, i.Exec(bg, c.src))
		assert.Equal(t, c.typ, pe.Type, c.src)
		if c.msg != "" {
			assert.Equal(t, c.msg, pe.Message, c.src)
		}
	}
}

// With ExternalInterrupts a call does not interrupt itself when its context ends: its owner
// does, with InterruptContext.
func TestExternalInterrupts(t *testing.T) {
	started := make(chan struct{}, 1)
	i := newInterp(t, cpython.InterpreterConfig{ExternalInterrupts: true, Stdout: writerFunc(func(p []byte) (int, error) {
		started <- struct{}{}
		return len(p), nil
	})})
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() {
		_, err := i.Call(ctx, "pwtest:main_eval", "print('started', flush=True) or exec('while True: pass')")
		errc <- err
	}()
	<-started
	assert.False(t, i.InterruptContext(ctx), "not before ctx has ended")
	cancel()
	select {
	case err := <-errc:
		t.Fatalf("the call stopped by itself: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	other, cancelOther := context.WithCancel(bg)
	cancelOther()
	assert.False(t, i.InterruptContext(other), "another context's end")
	assert.True(t, i.InterruptContext(ctx))
	err := <-errc
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, i.InterruptContext(ctx), "nothing runs with it any more")
	// a call given a context that has ended does not run; the interpreter goes on
	_, err = i.Call(ctx, "pwtest:count_calls")
	assert.ErrorIs(t, err, context.Canceled)
	v, err := i.Call(bg, "pwtest:count_calls")
	require.NoError(t, err)
	assert.Equal(t, int64(1), v)
}

// A Thread used from another goroutine panics there: the C side refuses to run on a thread
// that is not the interpreter's own.
func TestThreadFromAnotherGoroutinePanics(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	var got any
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() { got = recover() }()
			th.Call(bg, "pwtest:noop")
		}()
		<-done
		return nil
	}))
	assert.Contains(t, got, "another goroutine")
	v, err := i.Eval(bg, "1 + 1")
	require.NoError(t, err)
	assert.Equal(t, int64(2), v, "the interpreter is untouched")

	// ... also while the owner is in a call: before it touches the call's buffers
	got = nil
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() { got = recover() }()
			time.Sleep(50 * time.Millisecond) // the owner is in its call by now, as a rule
			th.Call(bg, "pwtest:add", "not", "this")
		}()
		v, err := th.Call(bg, "pwtest:sleep_then", 0.3, "owner's")
		<-done
		assert.Equal(t, "owner's", v)
		return err
	}))
	assert.Contains(t, got, "another goroutine")
}

// A target file that a sibling imported already is that module, not a second copy of it.
func TestTargetFileImportedBySiblingIsOneModule(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "shared_state.py"), []byte("SEEN = []\ndef count():\n    return len(SEEN)\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "user.py"), []byte("import shared_state\ndef use():\n    shared_state.SEEN.append(1)\n"), 0o644))
	i := newInterp(t, cpython.InterpreterConfig{})
	_, err := i.Call(bg, filepath.Join(dir, "user.py")+":use")
	require.NoError(t, err)
	v, err := i.Call(bg, filepath.Join(dir, "shared_state.py")+":count")
	require.NoError(t, err)
	assert.Equal(t, int64(1), v)
}

func TestCancelledBeforeStartRunsNothing(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	ctx, cancel := context.WithCancel(bg)
	cancel()
	assert.ErrorIs(t, i.Exec(ctx, "ran = True"), context.Canceled)
	v, err := i.Eval(bg, "'ran' in globals()")
	require.NoError(t, err)
	assert.Equal(t, false, v)
}

func TestCloseIsIdempotentAndRefusesWork(t *testing.T) {
	before := cpython.LiveInterpreters()
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	assert.Equal(t, before+1, cpython.LiveInterpreters())
	require.NoError(t, i.Close())
	require.NoError(t, i.Close())
	assert.Equal(t, before, cpython.LiveInterpreters())
	assert.ErrorIs(t, i.Exec(bg, "pass"), cpython.ErrClosed)
	_, err = i.Call(bg, "pwtest:noop")
	assert.ErrorIs(t, err, cpython.ErrClosed)
	select {
	case <-i.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

// startExec runs src on i in the background and returns once it has started; wait returns
// its error.
func startExec(i *cpython.Interpreter, src string) (wait func() error) {
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- i.Do(bg, func(th *cpython.Thread) error {
			close(started)
			return th.Exec(bg, src)
		})
	}()
	<-started
	return func() error { return <-done }
}

func TestCloseWaitsForRunningWork(t *testing.T) {
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	wait := startExec(i, "import time\ntime.sleep(0.2)\nfinished = True")
	require.NoError(t, i.Close())
	assert.NoError(t, wait(), "Close must let running work finish")
}

func TestCloseContextInterruptsRunningWork(t *testing.T) {
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	wait := startExec(i, "while True: pass")
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, i.CloseContext(ctx), context.DeadlineExceeded)
	execErr := wait()
	assert.ErrorIs(t, execErr, cpython.ErrClosed)
	var ie *cpython.InterruptedError
	assert.ErrorAs(t, execErr, &ie)
}

// CloseContext of an interpreter that has ended already is nil, whatever its context.
func TestCloseContextAfterTheEndIsNil(t *testing.T) {
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	require.NoError(t, i.Close())
	ended, cancel := context.WithCancel(bg)
	cancel()
	for range 100 {
		require.NoError(t, i.CloseContext(ended))
	}
}

func TestCloseWaitsForThreadsThenAtexit(t *testing.T) {
	var out pwtest.SyncBuffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out})
	require.NoError(t, err)
	require.NoError(t, i.Exec(bg, `
import atexit, threading, time
atexit.register(print, "atexit")
def work():
    time.sleep(0.2)
    print("thread done")
threading.Thread(target=work).start()
`))
	require.NoError(t, i.Close())
	assert.Equal(t, "thread done\natexit\n", out.String(), "threads first, then atexit, each once")
}

func TestCloseContextInterruptsThreadsAndAtexit(t *testing.T) {
	var out, errOut pwtest.SyncBuffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out, Stderr: &errOut})
	require.NoError(t, err)
	// Threads that never end by themselves (one computing, one sleeping: time.sleep is cut
	// short too, one an executor's, whose exit hook waits for it), an atexit function that
	// never returns, and one after it that starts another such thread: Close alone would wait
	// for good.
	require.NoError(t, i.Exec(bg, `
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
interrupted = []
def spin():
    while True:
        pass
def nap():
    while True:
        time.sleep(3600)
def pooled():
    spin()
def reporting(f):
    def run():
        try:
            f()
        except KeyboardInterrupt:
            interrupted.append(f.__name__)
            raise
    return run
def stuck():
    spin()
def last():
    sys.stdout.write("the next atexit function ran, after " + ",".join(sorted(interrupted)) + "\n")
    threading.Thread(target=spin, name="late").start()
atexit.register(last)
atexit.register(stuck)  # atexit runs the last registered first
for f in (spin, nap):
    threading.Thread(target=reporting(f), name=f.__name__).start()
ThreadPoolExecutor(1).submit(reporting(pooled))
`))
	pwtest.CloseByDeadline(t, i, 200*time.Millisecond, "the threads and the atexit function")
	assert.Equal(t, "the next atexit function ran, after nap,pooled,spin\n", out.String(), "the threads first, then each atexit function")
	assert.Contains(t, errOut.String(), "Exception ignored in atexit callback <function stuck", "the stuck one's interrupt, as CPython reports it")
	assert.Contains(t, errOut.String(), "Exception in thread late", "the thread an atexit function started, interrupted too")
}

// An atexit function registered while the interpreter winds down (here by a thread an atexit
// function started) is run there too, where an interrupt reaches it: Py_EndInterpreter would
// run it where none does.
func TestCloseContextInterruptsAtexitFunctionsRegisteredLate(t *testing.T) {
	var errOut pwtest.SyncBuffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, err)
	require.NoError(t, i.Exec(bg, `
import atexit, threading, time
def spin():
    while True:
        pass
def register():
    time.sleep(0.2)  # after the atexit functions have run (and been forgotten), before the deadline
    atexit.register(spin)
def register_late():
    threading.Thread(target=register).start()
atexit.register(register_late)
`))
	pwtest.CloseByDeadline(t, i, time.Second, "the atexit function registered late")
	assert.Contains(t, errOut.String(), "Exception ignored in atexit callback <function spin")
}

// At its end an interpreter lets go of what __main__ and the modules that are not the standard
// library's hold, in its wind-down: their finalizers run where the standard library is all
// there (an import of it inside __del__ works), __main__'s first (a name that is no string
// too), then the modules' — a target's module though the interpreter kept the target, one
// named as a standard module but not one (this.py) — and a finalizer's import of a module let
// go of fails, as at CPython's own end, rather than run that module again.
func TestEndRunsTheProgramsFinalizersFirst(t *testing.T) {
	dir := t.TempDir()
	noisy := `
class Noisy:
    def __init__(self, name):
        self.name = name
    def __del__(self):
        import json  # an import at CPython's own clearing of modules fails
        print(json.dumps(self.name), flush=True)
        try:
            import holder  # let go of (None in sys.modules) after __main__'s names: not run again
        except ImportError:
            pass
`
	for name, src := range map[string]string{
		"holder.py": "print('holder runs', flush=True)\n" + noisy + "first = Noisy('module, first')\nsecond = Noisy('module, second')\ndef target():\n    return 1\n",
		"this.py":   "from holder import Noisy\nx = Noisy('this.py')\n",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644))
	}
	var out, errOut pwtest.SyncBuffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out, Stderr: &errOut, Path: []string{dir}})
	require.NoError(t, err)
	v, err := i.Call(bg, "holder:target")
	require.NoError(t, err)
	require.Equal(t, int64(1), v)
	require.NoError(t, i.Exec(bg, "import this\nfrom holder import Noisy\nkept = Noisy('main')\nglobals()[1] = Noisy('main, 1')\n"))
	require.NoError(t, i.Close())
	lines := strings.Split(out.String(), "\n")
	require.Len(t, lines, 7, "%q; stderr: %s", out.String(), errOut.String())
	assert.Equal(t, []string{"holder runs", `"main, 1"`, `"main"`}, lines[:3], "holder once; __main__'s names first, latest first")
	assert.ElementsMatch(t, []string{`"module, first"`, `"module, second"`, `"this.py"`, ""}, lines[3:])
	assert.Empty(t, errOut.String())
}

// A finalizer that never returns, of an object in __main__ or in a target's module, is
// interrupted at CloseContext's deadline: it runs in the interpreter's wind-down, not in
// CPython's end of it.
func TestCloseContextInterruptsStuckFinalizers(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stuck.py"), []byte(`
class Stuck:
    def __del__(self):
        while True:
            pass
held = Stuck()
def target():
    return 2
`), 0o644))
	for _, where := range []string{"main", "module"} {
		t.Run(where, func(t *testing.T) {
			var errOut pwtest.SyncBuffer
			i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stderr: &errOut, Path: []string{dir}})
			require.NoError(t, err)
			if where == "main" {
				require.NoError(t, i.Exec(bg, "class Stuck:\n    def __del__(self):\n        while True:\n            pass\nx = Stuck()\n"))
			} else {
				_, err := i.Call(bg, "stuck:target")
				require.NoError(t, err)
			}
			pwtest.CloseByDeadline(t, i, 200*time.Millisecond, "the finalizer")
			assert.Contains(t, errOut.String(), "Exception ignored while calling deallocator <function Stuck.__del__")
			assert.Contains(t, errOut.String(), "KeyboardInterrupt")
		})
	}
}

func TestEndingInterpreterKeepsNoOtherWaiting(t *testing.T) {
	// As many interpreters as may end at once, each with a thread blocked in a read of a pipe:
	// their ends wait for those threads, and must not keep other interpreters from starting.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	n := cpython.LifecycleTurns()
	closed := make(chan error, n)
	for range n {
		in, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		require.NoError(t, err)
		require.NoError(t, in.Exec(bg, fmt.Sprintf(`
import os, threading
threading.Thread(target=os.read, args=(%d, 1)).start()
`, r.Fd())))
		go func() { closed <- in.Close() }()
	}
	time.Sleep(200 * time.Millisecond) // let the ends begin (the test passes without, but would not fail)
	ctx, cancel := context.WithTimeout(bg, time.Minute)
	defer cancel()
	other, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{})
	if assert.NoError(t, err, "an interpreter could not start while others waited for their threads to end") {
		assert.NoError(t, other.Close())
	}
	_, err = w.Write(make([]byte, n)) // one byte for each thread: they end, and so their interpreters
	require.NoError(t, err)
	for range n {
		assert.NoError(t, <-closed)
	}
}

func TestConcurrentCreation(t *testing.T) {
	before := cpython.LiveInterpreters()
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make([]error, 32)
		for k := range errs {
			wg.Go(func() {
				in, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Main: map[string]any{"k": k}})
				if err != nil {
					errs[k] = err
					return
				}
				v, err := in.Eval(bg, "k * 2")
				if err == nil && v != int64(k*2) {
					err = errors.New("wrong result")
				}
				errs[k] = errors.Join(err, in.Close())
			})
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...), "round %d", round)
	}
	assert.Equal(t, before, cpython.LiveInterpreters())
}

// osThreads counts this process's OS threads.
func osThreads(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skip("no /proc/self/task on this system")
	}
	return len(entries)
}

func TestCyclesLeaveNothingBehind(t *testing.T) {
	runtime.GC()
	goroutines, threads, live := runtime.NumGoroutine(), osThreads(t), cpython.LiveInterpreters()
	for k := range 200 {
		in, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		require.NoError(t, err)
		_, err = in.Call(bg, "pwtest:add", k, 1)
		require.NoError(t, err)
		require.NoError(t, in.Close())
	}
	assert.Equal(t, live, cpython.LiveInterpreters(), "interpreters")
	// goroutines and threads settle: allow the Go runtime a few of its own, never one per cycle
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "goroutines")
	assert.LessOrEqual(t, osThreads(t), threads+4, "OS threads")
}

func TestDoPropagatesPanics(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	func() {
		defer func() {
			r := recover()
			pe, ok := r.(*cpython.PanicError)
			require.True(t, ok, "want *PanicError, got %T", r)
			assert.Equal(t, "boom", pe.Value)
			assert.Contains(t, string(pe.Stack), "interpreter_test.go")
		}()
		_ = i.Do(bg, func(*cpython.Thread) error { panic("boom") })
	}()
	v, err := i.Eval(bg, "40 + 2")
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)
}

func TestThreadUsedOutsideDoPanics(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	var kept *cpython.Thread
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error { kept = th; return nil }))
	assert.Panics(t, func() { _ = kept.Exec(bg, "pass") })

	// ... also by a goroutine that kept it and, with nothing ordering it after Do's end, uses it
	// later: a panic, and no data race (-race)
	var got any
	done := make(chan struct{})
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		go func() {
			defer close(done)
			defer func() { got = recover() }()
			time.Sleep(50 * time.Millisecond) // no synchronisation with Do: the point
			_, _ = th.Eval(bg, "1")
		}()
		return nil
	}))
	<-done
	assert.NotNil(t, got, "a Thread used after its Do panics")
}

// A __main__ target is resolved again after an Exec (Eval, RunFile) that may have redefined it;
// a module's stays cached.
func TestMainTargetSeesARedefinition(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	calls := func(target string, args ...any) any {
		t.Helper()
		v, err := i.Call(bg, target, args...)
		require.NoError(t, err)
		return v
	}
	require.NoError(t, i.Exec(bg, "def f():\n    return 1\n"))
	assert.Equal(t, int64(1), calls("__main__:f"))
	assert.Equal(t, int64(1), calls("__main__:f"))
	require.NoError(t, i.Exec(bg, "def f():\n    return 2\n"))
	assert.Equal(t, int64(2), calls("__main__:f"), "the new f")
	assert.Equal(t, "1", calls("json:dumps", 1), "another target, cached before: untouched")
	require.NoError(t, i.Exec(bg, "del f"))
	_, err := i.Call(bg, "__main__:f")
	assert.Equal(t, "AttributeError", pwtest.PyErr(t, err).Type)
	require.NoError(t, i.Exec(bg, "f = lambda: 3"))
	assert.Equal(t, int64(3), calls("__main__:f"), "resolved again after a failure")
}

// RunFile runs a file as python FILE would: the folder of the file (symbolic links resolved)
// on sys.path, so that a module beside it imports; sys.argv[0] the path as given unless Argv
// was given; __file__ its absolute path (a relative one broke after a chdir); tracebacks point
// into the file.
func TestRunFileAsPythonWould(t *testing.T) {
	dir := t.TempDir()
	real, links := filepath.Join(dir, "real"), filepath.Join(dir, "links")
	require.NoError(t, os.Mkdir(real, 0o755))
	require.NoError(t, os.Mkdir(links, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(real, "beside.py"), []byte("WHAT = 'the module beside it'\n"), 0o644))
	script := filepath.Join(real, "script.py")
	require.NoError(t, os.WriteFile(script, []byte(`import sys, beside
result = (beside.WHAT, sys.argv, sys.path[0], __file__)
if len(sys.argv) > 1:
    raise ValueError("from the file")
`), 0o644))
	link := filepath.Join(links, "script.py")
	require.NoError(t, os.Symlink(script, link))

	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.RunFile(bg, link))
	v, err := i.Eval(bg, "result")
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{"the module beside it", []any{link}, real, link}, v)
	require.NoError(t, i.RunFile(bg, link))
	v, err = i.Eval(bg, "sys.path.count(sys.path[0])")
	require.NoError(t, err)
	assert.Equal(t, int64(1), v, "the folder once, however many runs")

	j := newInterp(t, cpython.InterpreterConfig{Argv: []string{"job.py", "--flag"}})
	pe := pwtest.PyErr(t, j.RunFile(bg, script))
	assert.Equal(t, "ValueError", pe.Type)
	assert.Contains(t, pe.Traceback, script+"\", line 4")
	v, err = j.Eval(bg, "sys.argv")
	require.NoError(t, err)
	assert.Equal(t, []any{"job.py", "--flag"}, v, "Argv as given")

	// a relative path: from the process's working folder, as python's
	wd, err := os.Getwd()
	require.NoError(t, err)
	rel, err := filepath.Rel(wd, link)
	require.NoError(t, err)
	k := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, k.RunFile(bg, rel))
	v, err = k.Eval(bg, "result")
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{"the module beside it", []any{rel}, real, link}, v)
}

// Interpreters run in Python's UTF-8 mode, as python itself in the C locale that a Go process
// has: file names and open()'s default encoding are UTF-8 (they were ASCII: a path such as
// données/ could not be named).
func TestUTF8Mode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "données")
	require.NoError(t, os.Mkdir(dir, 0o755))
	i := newInterp(t, cpython.InterpreterConfig{})
	v, err := i.Call(bg, "pwtest:main_eval", fmt.Sprintf(`(
    __import__("sys").flags.utf8_mode, __import__("sys").getfilesystemencoding(),
    open(%q + "/é.txt", "w").write("naïve €"), open(%q + "/é.txt").read(), __import__("os").listdir(%q))`, dir, dir, dir))
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{int64(1), "utf-8", int64(7), "naïve €", []any{"é.txt"}}, v)
}

func TestThreadRunsManyCallsInOneTurn(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		assert.Same(t, i, th.Interpreter())
		sum := int64(0)
		for k := range 1000 {
			v, err := th.Call(bg, "pwtest:add", k, 1)
			if err != nil {
				return err
			}
			sum += v.(int64)
		}
		assert.Equal(t, int64(500500), sum)
		return nil
	}))
}

func TestOutputGoesToTheChosenWriters(t *testing.T) {
	var out, errb bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out, Stderr: &errb})
	require.NoError(t, i.Exec(bg, "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.stdout.write('partial')"))
	assert.Equal(t, "to stdout\npartial", out.String(), "a partial line is written out when the call ends")
	assert.Equal(t, "to stderr\n", errb.String())

	// per call
	var callOut bytes.Buffer
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		th.SetOutput(&callOut, nil)
		return th.Exec(bg, "print('for this call only')")
	}))
	assert.Equal(t, "for this call only\n", callOut.String())
	require.NoError(t, i.Exec(bg, "print('back to default')"))
	assert.Equal(t, "to stdout\npartialback to default\n", out.String())

	// from a thread the Python code started
	_, err := i.Call(bg, "pwtest:print_from_thread", "from a Python thread")
	require.NoError(t, err)
	assert.Contains(t, out.String(), "from a Python thread\n")

	// bytes through sys.stdout.buffer, and stdin is empty
	require.NoError(t, i.Exec(bg, "sys.stdout.buffer.write('é\\n'.encode())\nassert sys.stdin.read() == ''"))
	assert.True(t, strings.HasSuffix(out.String(), "é\n"))
}

// sys.stdout.buffer hands bytes over as they are, in order with the text: a character split
// across writes stays whole, bytes that are not UTF-8 stay what they were, a memoryview counts
// its bytes; the streams work as io's do for the common uses (a TextIOWrapper over the buffer,
// reconfigure to another encoding or error handler, but not to one that would cut lines apart or
// start every write with a byte-order mark).
func TestOutputBytesAndEncodings(t *testing.T) {
	var out bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out})
	run := func(src string) string {
		t.Helper()
		out.Reset()
		require.NoError(t, i.Exec(bg, "import io, shutil, sys\n"+src))
		return out.String()
	}
	euros := strings.Repeat("€", 100_000) + "\n"
	assert.Equal(t, euros, run(fmt.Sprintf("shutil.copyfileobj(io.BytesIO(%q.encode()), sys.stdout.buffer, 65536)", euros)))
	assert.Equal(t, "é€\n", run(`for b in "é€\n".encode(): sys.stdout.buffer.write(bytes([b]))`))
	assert.Equal(t, "na\xefve\n", run(`sys.stdout.buffer.write("naïve\n".encode("latin-1"))`))
	assert.Equal(t, "ab\nc\n", run(`sys.stdout.write("a"); sys.stdout.buffer.write(b"b\n"); print("c")`))
	assert.Equal(t, "abcd4", run(`n = sys.stdout.buffer.write(memoryview(b"abcd").cast("I")); sys.stdout.write(str(n))`))
	assert.Equal(t, "wrapped\n", run(`w = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", write_through=True); w.write("wrapped\n"); w.flush()`))
	assert.Equal(t, "\xe9\n", run(`sys.stdout.reconfigure(encoding="latin-1"); print("é"); sys.stdout.reconfigure(encoding="utf-8")`))
	assert.Equal(t, "\xe9?\n", run(`sys.stdout.reconfigure(encoding="latin-1", errors="replace"); print("é€"); sys.stdout.reconfigure(encoding="utf-8")`))
	assert.Equal(t, "é\n", run(`sys.stdout.reconfigure(line_buffering=False); print("é"); assert sys.stdout.encoding == "utf-8" and sys.stdout.errors == "strict"`))
	for src, typ := range map[string]string{
		`sys.stdout.buffer.write(5)`:                           "TypeError",
		`sys.stdout.reconfigure(encoding="no-such")`:           "LookupError",
		`sys.stdout.reconfigure(errors="no-such")`:             "LookupError",
		`sys.stdout.reconfigure(newline="\r\n")`:               "ValueError",
		`sys.stdout.reconfigure(encoding="ascii"); print("é")`: "UnicodeEncodeError",
		`sys.stdout.reconfigure(encoding="utf-16")`:            "ValueError",
		`sys.stdout.reconfigure(encoding="utf-8-sig")`:         "ValueError",
		`sys.stdout.reconfigure(encoding="cp500")`:             "ValueError",
	} {
		assert.Equal(t, typ, pwtest.PyErr(t, i.Exec(bg, "import sys\n"+src)).Type, src)
		require.NoError(t, i.Exec(bg, `sys.stdout.reconfigure(encoding="utf-8")`))
	}
}

// A writer given for one turn, or to an interpreter that has ended, is not kept: pyworkers'
// lock for it goes with its last user.
func TestOutputWritersAreNotKept(t *testing.T) {
	before := cpython.WriterLocks()
	var out bytes.Buffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out, Stderr: &out})
	require.NoError(t, err)
	for k := range 50 {
		var turn bytes.Buffer
		require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
			th.SetOutput(&turn, nil)
			return th.Exec(bg, "print('turn')")
		}))
		require.Equal(t, "turn\n", turn.String())
		require.Equal(t, before+1, cpython.WriterLocks(), "after turn %d", k)
	}
	require.NoError(t, i.Exec(bg, "print('default')"))
	require.NoError(t, i.Close())
	assert.Equal(t, "default\n", out.String())
	assert.Equal(t, before, cpython.WriterLocks(), "the interpreter's own writer after its end")
}

// A long unfinished line after the last line end is not held back without bound: it goes out
// once 64 KiB of it are waiting, as a line without any line end does.
func TestOutputLongUnfinishedLineIsWritten(t *testing.T) {
	var out writeRecorder
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out})
	require.NoError(t, i.Exec(bg, "import sys\nsys.stdout.write('a\\n' + 'x' * 70000)\nsys.stdout.write('y' * 10)"))
	// the first write came from the 64 KiB rule, the second from the call's end
	assert.Equal(t, []int{2 + 70000, 10}, out.sizes())
}

// Long writes are not kept: whole lines go out from the written text itself, and the room a long
// unfinished line took is let go of once it went out (a 64 MiB line stayed held for the
// interpreter's life).
func TestOutputLongWritesAreNotKept(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{Stdout: io.Discard})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, src := range []string{
		"sys.stdout.write('x' * (64 << 20) + '\\n')",
		"sys.stdout.write('a'); sys.stdout.write('y' * (64 << 20)); sys.stdout.write('b')",
	} {
		before := heap()
		require.NoError(t, i.Exec(bg, "import sys\n"+src))
		after := heap()
		assert.Less(t, after, before+16<<20, "Go heap %d MiB before, %d MiB after: %s", before>>20, after>>20, src)
	}
}

// A partial line is written out at the end of each call, also when several calls run in one
// turn (as a pool's worker runs its tasks): it is not held until a later call ends the line,
// and glued to that call's output.
func TestOutputPartialLineIsWrittenAtEachCallsEnd(t *testing.T) {
	var out writeRecorder
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out})
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		if _, err := th.Call(bg, "builtins:print", "no line end", cpython.Kwargs{"end": ""}); err != nil {
			return err
		}
		assert.Equal(t, []int{len("no line end")}, out.sizes(), "written when the call ended, within the turn")
		if err := th.Exec(bg, "print('the next call', end='')"); err != nil {
			return err
		}
		assert.Equal(t, []int{len("no line end"), len("the next call")}, out.sizes())
		return nil
	}))
}

// A partial line a thread the code started is writing is not cut at a call's end (print writes
// its pieces one by one, and another interpreter's line could come in between): it goes out
// whole, at its line end.
func TestOutputThreadsPartialLineIsNotCutAtACallsEnd(t *testing.T) {
	var out writeRecorder
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out})
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		if err := th.Exec(bg, `
import sys, threading
began, go_on = threading.Event(), threading.Event()
def line():
    sys.stdout.write("a thread's ")
    began.set()
    go_on.wait()
    sys.stdout.write("whole line\n")
writer = threading.Thread(target=line)
writer.start()
began.wait()
`); err != nil {
			return err
		}
		assert.Empty(t, out.sizes(), "held at the call's end: the thread has not ended its line")
		return th.Exec(bg, "go_on.set(); writer.join()")
	}))
	assert.Equal(t, []int{len("a thread's whole line\n")}, out.sizes())
}

// writeRecorder is a writer that keeps the size of each Write.
type writeRecorder struct {
	mu sync.Mutex
	n  []int
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n = append(w.n, len(p))
	return len(p), nil
}

func (w *writeRecorder) sizes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.n)
}

// overlapCounter is a writer that counts the Writes that began while another was under way.
type overlapCounter struct {
	buf            bytes.Buffer
	busy, overlaps atomic.Int32
}

func (c *overlapCounter) Write(p []byte) (int, error) {
	if c.busy.Add(1) > 1 {
		c.overlaps.Add(1)
	}
	defer c.busy.Add(-1)
	time.Sleep(20 * time.Microsecond) // a slow writer: overlaps, if any, are likely
	return c.buf.Write(p)
}

// sliceWriter is a writer whose type cannot be a map key (it holds a slice): pyworkers cannot
// keep a lock per such writer, and serialises writes to all of its type instead.
type sliceWriter struct {
	c   *overlapCounter
	pad []byte
}

func (w sliceWriter) Write(p []byte) (int, error) { return w.c.Write(p) }

// wrappedWriter's type is comparable, but not its value when it holds a sliceWriter.
type wrappedWriter struct{ io.Writer }

// Interpreters that share a writer write to it one at a time, whole lines only.
func TestOutputOfManyInterpretersNeverMixesLines(t *testing.T) {
	for _, name := range []string{"pointer", "uncomparable", "uncomparable inside"} {
		c := &overlapCounter{}
		var w io.Writer = c
		switch name {
		case "uncomparable":
			w = sliceWriter{c: c}
		case "uncomparable inside":
			w = wrappedWriter{sliceWriter{c: c}}
		}
		tags := []string{"A", "B", "C", "D"}
		var wg sync.WaitGroup
		for _, tag := range tags {
			in := newInterp(t, cpython.InterpreterConfig{Stdout: w})
			wg.Go(func() {
				_, err := in.Call(bg, "pwtest:print_lines", tag, 500)
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Zero(t, c.overlaps.Load(), "%s: writes that overlapped", name)
		lines := strings.Split(strings.TrimSuffix(c.buf.String(), "\n"), "\n")
		require.Len(t, lines, 4*500, name)
		for _, l := range lines {
			body, _, ok := strings.Cut(l, " ")
			require.True(t, ok, "%s: line %q", name, l)
			require.Len(t, body, 40, "%s: line %q", name, l)
			require.Equal(t, strings.Repeat(body[:1], 40), body, "%s: mixed line %q", name, l)
		}
	}
}

// A line one interpreter left unfinished on a writer it shares with another (flushed, or written
// out at its call's end) is ended before the other's output, which was glued to it; the same
// interpreter's output, on its stdout or stderr, goes on with it as a terminal shows it.
func TestOutputUnfinishedLineEndsBeforeAnotherInterpretersOutput(t *testing.T) {
	var out bytes.Buffer // pyworkers serialises the interpreters' writes to it
	a := newInterp(t, cpython.InterpreterConfig{Stdout: &out, Stderr: &out})
	b := newInterp(t, cpython.InterpreterConfig{Stdout: &out, Stderr: &out})
	require.NoError(t, a.Exec(bg, "import sys\nprint('A-start', end='', flush=True)"))
	require.NoError(t, a.Exec(bg, "sys.stderr.write('-more')"))
	require.NoError(t, b.Exec(bg, "print('B line')"))
	require.NoError(t, a.Exec(bg, "print('A-end')"))
	require.NoError(t, b.Exec(bg, "print('B-start', end='')"))
	require.NoError(t, b.Exec(bg, "print(' B-end')"))
	assert.Equal(t, "A-start-more\nB line\nA-end\nB-start B-end\n", out.String())
}

// A function given to Do that calls runtime.Goexit (t.FailNow, require in a test) ends the
// interpreter's thread: the interpreter ends with it, on that thread, and Do says so; Close and
// later calls do not wait for good.
func TestGoexitInDoEndsTheInterpreter(t *testing.T) {
	before := cpython.LiveInterpreters()
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	err = i.Do(bg, func(th *cpython.Thread) error {
		runtime.Goexit()
		return nil
	})
	require.ErrorIs(t, err, cpython.ErrClosed)
	assert.Contains(t, err.Error(), "Goexit")
	select {
	case <-i.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the interpreter did not end with its thread")
	}
	require.NoError(t, i.Close())
	assert.ErrorIs(t, i.Exec(bg, "1"), cpython.ErrClosed)
	assert.Equal(t, before, cpython.LiveInterpreters())
}

func TestIsModuleName(t *testing.T) {
	for _, ok := range []string{"json", "os.path", "_private", "a1.b_2.c", "données", "модуль.ч", "数据", "café_2", "e\u0301t\u00e9", "match", "pkg.type"} {
		assert.True(t, cpython.IsModuleName(ok), ok)
	}
	for _, bad := range []string{"", "1abc", "a..b", "a.", ".a", "a-b", "a b", "import os", "a;b", "a\nb", "a\u00a0b", "١abc", "\u0301a", "x€", "a\xffb", "a\u200bb", "class", "pkg.def", "None"} {
		assert.False(t, cpython.IsModuleName(bad), bad)
	}
}

// IsModuleName's characters are Python's: for every code point Go's tables know, alone and after
// a letter, it agrees with str.isidentifier, but for those whose NFKC form differs (Python
// judges identifiers by that form; import names such a character's form or says SyntaxError).
func TestIsModuleNameAgreesWithPython(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	v, err := i.Eval(bg, `(lambda nfkc: bytes(
		(chr(c).isidentifier()) | (('x' + chr(c)).isidentifier() << 1) | ((nfkc('NFKC', chr(c)) != chr(c)) << 2)
		for c in range(0x110000)))(__import__('unicodedata').normalize)`)
	require.NoError(t, err)
	py := v.([]byte)
	require.Len(t, py, 0x110000)
	var differ []string
	for r := rune(0); r < 0x110000; r++ {
		// unicode.C holds unassigned code points too
		known := unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co)
		if !known || py[r]&4 != 0 {
			continue // newer than Go's tables (or a surrogate), or judged by its NFKC form
		}
		if start := py[r]&1 != 0; cpython.IsModuleName(string(r)) != start {
			differ = append(differ, fmt.Sprintf("%U alone (Python: %v)", r, start))
		}
		if cont := py[r]&2 != 0; cpython.IsModuleName("x"+string(r)) != cont {
			differ = append(differ, fmt.Sprintf("%U after a letter (Python: %v)", r, cont))
		}
	}
	assert.Empty(t, differ)
	// no keyword is a name; a soft keyword is
	v, err = i.Eval(bg, "(__import__('keyword').kwlist, __import__('keyword').softkwlist)")
	require.NoError(t, err)
	lists := v.(cpython.Tuple)
	for _, k := range lists[0].([]any) {
		assert.False(t, cpython.IsModuleName(k.(string)), k)
	}
	for _, k := range lists[1].([]any) {
		assert.True(t, cpython.IsModuleName(k.(string)), k)
	}
}

// The interrupt of a cancelled CallMany ends the batch also when it lands while an item's
// exception is being formatted (its str() is slow), instead of being taken for a failure to
// format it.
func TestCallManyInterruptedWhileFormattingAnError(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	items := make([][]any, 40) // 2 s of formatting in all
	err := i.Do(bg, func(th *cpython.Thread) error {
		_, err := th.CallMany(ctx, "pwtest:raise_slow_str", items)
		return err
	})
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	v, err := i.Call(bg, "pwtest:count_calls")
	require.NoError(t, err)
	assert.Less(t, v.(int64), int64(20), "the batch went on after its interrupt")
}

// Writing what UTF-8 cannot hold (a lone surrogate) to sys.stderr escapes it, as CPython's own
// stderr does, instead of raising in the middle of error reporting; stdout stays strict.
func TestStderrEscapesWhatUTF8CannotHold(t *testing.T) {
	var errOut strings.Builder
	i := newInterp(t, cpython.InterpreterConfig{Stderr: writerFunc(func(p []byte) (int, error) { return errOut.Write(p) })})
	require.NoError(t, i.Exec(bg, "import sys\nprint('bad \\udcff name', file=sys.stderr)"))
	assert.Equal(t, "bad \\udcff name\n", errOut.String())
	pe := pwtest.PyErr(t, i.Exec(bg, "print('bad \\udcff name')"))
	assert.Equal(t, "UnicodeEncodeError", pe.Type)
}

// A Go writer's error reaches the Python code that wrote as the OSError a file's write would
// raise, with the errno the error carries (BrokenPipeError for EPIPE) and its text; a writer
// that panics, as one with its text.
func TestAFailingWriterIsAnOSError(t *testing.T) {
	for _, c := range []struct {
		err       func() error
		typ, text string
		errno     any
	}{
		{func() error { return &os.PathError{Op: "write", Path: "/x", Err: syscall.EPIPE} }, "BrokenPipeError", "write /x: broken pipe", int64(syscall.EPIPE)},
		{func() error { return &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC} }, "OSError", "write /x: no space left on device", int64(syscall.ENOSPC)},
		{func() error { return errors.New("the disk is on fire") }, "OSError", "the disk is on fire", nil},
		{func() error { panic("a bad writer") }, "OSError", "panicked: a bad writer", nil},
	} {
		i := newInterp(t, cpython.InterpreterConfig{Stdout: writerFunc(func([]byte) (int, error) { return 0, c.err() })})
		for _, write := range []string{"print('x')", "print('x', end='', flush=True)"} {
			require.NoError(t, i.Exec(bg, "try:\n    "+write+"\nexcept OSError as e:\n    r = [type(e).__name__, e.errno, str(e)]"))
			v, err := i.Eval(bg, "r")
			require.NoError(t, err, write)
			got := v.([]any)
			assert.Equal(t, c.typ, got[0], write)
			assert.Equal(t, c.errno, got[1], write)
			assert.Contains(t, got[2], "pyworkers: the Go writer for this stream failed: ", write)
			assert.Contains(t, got[2], c.text, write)
		}
		require.NoError(t, i.Close())
	}
}

// A target file's folder goes on sys.path, as for a script; a traceback.py beside it does not
// take the place of the stdlib's in pyworkers' own error reporting.
func TestTargetFolderDoesNotShadowTracebackFormatting(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "traceback.py"), []byte("raise RuntimeError('the wrong traceback module')\n"), 0o644))
	target := filepath.Join(dir, "job.py")
	require.NoError(t, os.WriteFile(target, []byte("def f():\n    raise ValueError('from the job')\n"), 0o644))
	i := newInterp(t, cpython.InterpreterConfig{})
	_, err := i.Call(bg, target+":f")
	var pe *cpython.PythonError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "ValueError", pe.Type)
	assert.Contains(t, pe.Traceback, "Traceback (most recent call last):")
	assert.Contains(t, pe.Traceback, "job.py\", line 2, in f")
}

// An exception whose type's metaclass makes __qualname__ raise is reported like any other: in a
// batch, as its item's error (formatting it failed the whole batch, after items had run).
func TestOddExceptionTypeName(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	var rs []cpython.CallResult
	var err error
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		rs, err = th.CallMany(bg, "pwtest:odd", [][]any{{0}, {1}, {0}})
		return nil
	}))
	require.NoError(t, err)
	require.Len(t, rs, 3)
	assert.Equal(t, "pwtest.OddError", pwtest.PyErr(t, rs[1].Err).Type)
	assert.Equal(t, []cpython.CallResult{{Value: int64(1)}, rs[1], {Value: int64(2)}}, rs, "each item ran once")
	_, err = i.Call(bg, "pwtest:odd", 1)
	assert.Equal(t, "pwtest.OddError", pwtest.PyErr(t, err).Type)
}

// Converting a value holds the GIL and runs no Python code, for as long as the value takes —
// without end for a structure whose shared parts expand (2**40 nodes from 40 lists). An
// interrupt stops the conversion too; the interpreter goes on.
func TestInterruptStopsAConversion(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, "x = []\nfor _ in range(40):\n    x = [x, x]"))
	for _, expr := range []string{"x", "[0] * 10 + [x]"} {
		ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
		start := time.Now()
		_, err := i.Eval(ctx, expr)
		cancel()
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie, expr)
		assert.ErrorIs(t, err, context.DeadlineExceeded, expr)
		assert.Less(t, time.Since(start), 5*time.Second, expr)
	}
	var rs []cpython.CallResult
	var err error
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
		defer cancel()
		rs, err = th.CallMany(ctx, "pwtest:main_eval", [][]any{{"1"}, {"x"}})
		return nil
	}))
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie, "a batch whose outcome's conversion was stopped")
	assert.Nil(t, rs)
	v, err := i.Eval(bg, "len(x)")
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
}

// A late interrupt of a task that has ended (its context's watch fires as it ends) must not
// hold up the next task's: that one converting a value that expands without end holds the GIL
// until an interrupt of its own stops it, and the stale one used to wait for that GIL first,
// holding the turn of every interrupt after it (a hang of the Py_DEBUG lane).
func TestLateInterruptOfAnEndedTaskDoesNotBlockTheNext(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, "x = []\nfor _ in range(40):\n    x = [x, x]"))
	ended := cpython.LastTaskID()
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := i.Eval(ctx, "x"); done <- err }()
	time.Sleep(50 * time.Millisecond) // converting x, the GIL held
	go cpython.InterruptTask(i, ended)
	select {
	case err := <-done:
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(time.Minute):
		t.Fatal("the conversion was not interrupted: a stale interrupt held up its own")
	}
}

// An interrupted batch keeps the outcomes of the items that finished: the caller knows which
// ran. The item the interrupt stopped has the *InterruptedError, those after it ErrNotRun.
func TestCallManyInterruptedKeepsWhatFinished(t *testing.T) {
	// ctx ends when the slow item says it runs: the items before it have finished (however
	// slow this build formats their errors)
	var cancel atomic.Pointer[context.CancelFunc]
	i := newInterp(t, cpython.InterpreterConfig{Stdout: writerFunc(func(p []byte) (int, error) {
		if c := cancel.Load(); c != nil && bytes.Contains(p, []byte("slow item runs")) {
			(*c)()
		}
		return len(p), nil
	})})
	for _, slow := range []string{"__import__('time').sleep(5)", "[0 for _ in iter(int, 1)]"} {
		slow = "print('slow item runs', flush=True) or " + slow
		var rs []cpython.CallResult
		var err error
		require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
			ctx, c := context.WithCancel(bg)
			defer c()
			cancel.Store(&c)
			rs, err = th.CallMany(ctx, "pwtest:main_eval", [][]any{{"1"}, {"1/0"}, {slow}, {"4"}})
			return nil
		}))
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie, slow)
		assert.ErrorIs(t, err, context.Canceled)
		require.Len(t, rs, 4, slow)
		assert.Equal(t, cpython.CallResult{Value: int64(1)}, rs[0])
		assert.Equal(t, "ZeroDivisionError", pwtest.PyErr(t, rs[1].Err).Type)
		assert.ErrorAs(t, rs[2].Err, &ie, slow)
		assert.ErrorIs(t, rs[3].Err, cpython.ErrNotRun, slow)
	}
}

// An item that catches the batch's interrupt and returns keeps its outcome, and the batch stops
// after it: a context's end interrupts once, and the batch ran all its items.
func TestCallManyStopsAfterAnItemCaughtTheInterrupt(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
import time
ran = 0
def deaf(k):
    global ran
    ran += 1
    try:
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
    except BaseException:
        return "caught"
    return k
`))
	items := make([][]any, 100) // 2 s in all
	for k := range items {
		items[k] = []any{k}
	}
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	var rs []cpython.CallResult
	var err error
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		rs, err = th.CallMany(ctx, "__main__:deaf", items)
		return nil
	}))
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	require.Len(t, rs, len(items))
	ran, err := i.Eval(bg, "ran")
	require.NoError(t, err)
	n := int(ran.(int64))
	require.Less(t, n, len(items), "the batch ran to its end")
	assert.Equal(t, cpython.CallResult{Value: "caught"}, rs[n-1], "the item that caught it keeps its outcome")
	assert.ErrorAs(t, rs[n].Err, &ie, "the first it kept from starting")
	for k := n + 1; k < len(items); k++ {
		assert.ErrorIs(t, rs[k].Err, cpython.ErrNotRun, "item %d", k)
	}
}

// A batch that fails as a whole after its calls began says so (ErrBatchFailed, with the cause):
// its items may have run. One that fails before they begin (a target that cannot be resolved:
// found out before call_many is entered) does not; nor does an interrupted one (its
// *InterruptedError).
func TestCallManyFailingAfterItsCallsBegan(t *testing.T) {
	var out bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stdout: &out})
	var rs []cpython.CallResult
	var spoiled, unresolved, interrupted error
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		rs, spoiled = th.CallMany(bg, "pwtest:batch_item", [][]any{{0}, {1, true}, {2}})
		_, unresolved = th.CallMany(bg, "pwtest:no_such_function", [][]any{{1}})
		ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
		defer cancel()
		_, interrupted = th.CallMany(ctx, "pwtest:main_eval", [][]any{{"1"}, {"__import__('time').sleep(5)"}})
		return nil
	}))
	require.ErrorIs(t, spoiled, cpython.ErrBatchFailed)
	assert.Nil(t, rs)
	assert.Equal(t, "MemoryError", pwtest.PyErr(t, spoiled).Type, "the cause is kept")
	assert.Equal(t, "ran 0\nran 1\n", out.String(), "the calls before it ran")
	assert.NotErrorIs(t, unresolved, cpython.ErrBatchFailed)
	assert.Equal(t, "AttributeError", pwtest.PyErr(t, unresolved).Type)
	var ie *cpython.InterruptedError
	require.ErrorAs(t, interrupted, &ie)
	assert.NotErrorIs(t, interrupted, cpython.ErrBatchFailed)
}

// CallMany: one outcome per item in order, an item's exception or unconvertible result its
// own; a BaseException (SystemExit) ends the batch at its item, and the items after it do not
// run; what stops the batch before any item runs is the error.
func TestCallMany(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		rs, err := th.CallMany(bg, "pwtest:add", [][]any{{1, 2}, {"a", 3}, {1, cpython.Kwargs{"b": 41}}, {}})
		require.NoError(t, err)
		require.Len(t, rs, 4)
		assert.Equal(t, cpython.CallResult{Value: int64(3)}, rs[0])
		assert.Equal(t, "TypeError", pwtest.PyErr(t, rs[1].Err).Type)
		assert.Equal(t, cpython.CallResult{Value: int64(42)}, rs[2])
		assert.Equal(t, "TypeError", pwtest.PyErr(t, rs[3].Err).Type)

		rs, err = th.CallMany(bg, "pwtest:add", nil)
		require.NoError(t, err)
		assert.Empty(t, rs)

		rs, err = th.CallMany(bg, "pwtest:exit_with", [][]any{{3}})
		assert.Equal(t, "SystemExit", pwtest.PyErr(t, err).Type)
		require.Len(t, rs, 1)
		assert.Equal(t, "SystemExit", pwtest.PyErr(t, rs[0].Err).Type)
		_, err = th.CallMany(bg, "pwtest:no_such_function", [][]any{{1}})
		assert.Equal(t, "AttributeError", pwtest.PyErr(t, err).Type)
		_, err = th.CallMany(bg, "pwtest:ident", [][]any{{1}, {make(chan int)}})
		var ce *cpython.ConversionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, "argument", ce.What)
		assert.Equal(t, "[1][0][0]", ce.Path)
		_, err = th.CallMany(bg, "pwtest:add", [][]any{{1}, {1, 2}, {1, cpython.Kwargs{"b": make(chan int)}}})
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, `[2][1]["b"]`, ce.Path)
		// a result that cannot cross is its item's error alone; its path starts at the item's index
		rs, err = th.CallMany(bg, "pwtest:main_eval", [][]any{{"1"}, {"[3, {4}]"}, {"2"}})
		require.NoError(t, err)
		require.Len(t, rs, 3)
		assert.Equal(t, cpython.CallResult{Value: int64(1)}, rs[0])
		require.ErrorAs(t, rs[1].Err, &ce)
		assert.Equal(t, "result", ce.What)
		assert.Equal(t, "[1][1]", ce.Path)
		assert.Equal(t, cpython.CallResult{Value: int64(2)}, rs[2])
		// SystemExit at the second item: the first has its result, the rest did not run
		rs, err = th.CallMany(bg, "pwtest:main_eval", [][]any{
			{"__import__('pwtest').count_calls()"}, {"__import__('sys').exit(4)"}, {"__import__('pwtest').count_calls()"}})
		assert.Equal(t, "SystemExit", pwtest.PyErr(t, err).Type)
		require.Len(t, rs, 3)
		assert.Equal(t, int64(1), rs[0].Value)
		assert.Equal(t, "SystemExit", pwtest.PyErr(t, rs[1].Err).Type)
		assert.ErrorIs(t, rs[2].Err, cpython.ErrNotRun)
		v, err := th.Call(bg, "pwtest:count_calls")
		require.NoError(t, err)
		assert.Equal(t, int64(2), v, "the third item did not run")
		// an item's exception whose str() raises a BaseException is that item's error alone
		// (assert, not require: FailNow on the interpreter's thread would end that thread)
		rs, err = th.CallMany(bg, "pwtest:exiting_str", [][]any{{1}, {2}})
		if !assert.NoError(t, err) || !assert.Len(t, rs, 2) {
			return nil
		}
		for _, r := range rs {
			pe := pwtest.PyErr(t, r.Err)
			assert.Equal(t, "pwtest.ExitingStr", pe.Type)
			assert.Equal(t, "<exception str() failed>", pe.Message)
		}
		return nil
	}))
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// panicWriter is an output writer that panics.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("writer broke") }

// A writer that panics makes the print fail (OSError in Python), not the process: also when
// the end of a turn writes out a partial line, on the interpreter's own thread.
func TestOutputWriterThatPanics(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{Stdout: panicWriter{}})
	require.NoError(t, i.Exec(bg, "print('no line end', end='')"), "held back: written at the turn's end")
	pe := pwtest.PyErr(t, i.Exec(bg, "print('a line')"))
	assert.Equal(t, "OSError", pe.Type)
	v, err := i.Eval(bg, "1 + 1")
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
}

// Code that runs once the call's own has ended — the formatting of the exception it raised (a
// __str__), a finalizer of what it returned — still belongs to the call: the end of its context
// interrupts it, and a hang there does not keep the interpreter. Also when the exception came
// after the interrupt (a finally block), which is then spent: formatting it gets another.
func TestInterruptReachesCodeAfterTheCall(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
class Stuck(Exception):
    def __str__(self):
        while True:
            pass

def raise_stuck():
    raise Stuck()

def stuck_after_interrupt():
    try:
        while True:
            pass
    finally:
        raise Stuck()

class Holder:
    def __del__(self):
        while True:
            pass

def return_stuck():
    return [Holder()]  # cannot cross: its finalizer runs as the call ends

def interrupted_while_handling():
    try:
        raise Stuck()
    except Stuck:
        while True:  # the KeyboardInterrupt's __context__ is the Stuck
            pass

class Key(str):
    def __repr__(self):  # not run: the path of a value that cannot cross names a key by its text
        while True:
            pass

def return_stuck_keys():
    return {Key("outer"): {Key("inner"): object()}}
`))
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	_, err := i.Call(ctx, "__main__:return_stuck_keys")
	cancel()
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce, "an error at once, no interrupt needed")
	assert.Equal(t, `["outer"]["inner"]`, ce.Path)
	for _, fn := range []string{"raise_stuck", "stuck_after_interrupt", "return_stuck", "interrupted_while_handling"} {
		ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
		_, err := i.Call(ctx, "__main__:"+fn)
		cancel()
		var ie *cpython.InterruptedError
		assert.ErrorAs(t, err, &ie, fn)
		assert.ErrorIs(t, err, context.DeadlineExceeded, fn)
		if fn == "raise_stuck" && assert.NotNil(t, ie.Python) {
			assert.Equal(t, "Stuck", ie.Python.Type, "the exception the call raised")
		}
		v, err := i.Eval(bg, "1 + 1")
		require.NoError(t, err, fn)
		assert.Equal(t, int64(2), v, fn)
	}
	// a batch's item that raises one: its error is formatted inside the batch
	ctx, cancel = context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	err = i.Do(bg, func(th *cpython.Thread) error {
		_, err := th.CallMany(ctx, "__main__:raise_stuck", [][]any{{}, {}})
		return err
	})
	var ie *cpython.InterruptedError
	assert.ErrorAs(t, err, &ie)
}

// slowImport writes pwslowmod.py to a new folder and puts that on the interpreter's sys.path:
// its import sets __main__.started, then takes secs; imp(after) imports it after a sleep, and
// freeWaiter lets a thread waiting for its import lock go on if an interrupt left that lock
// taken (so that a failing test can still end the interpreter).
func slowImport(t *testing.T, i *cpython.Interpreter, secs float64) {
	t.Helper()
	withModule(t, i, "pwslowmod", fmt.Sprintf("import __main__, time\n__main__.started.set()\ntime.sleep(%g)", secs), `
import threading, time
started = threading.Event()
def imp(after):
    time.sleep(after)
    import pwslowmod
def freeWaiter():
    ref = sys.modules["_frozen_importlib"]._module_locks.get("pwslowmod")
    lock = ref and ref()
    if lock is not None and lock.wakeup.locked():
        lock.wakeup.release()
`)
}

// withModule writes module name (its source: body) to a new folder, puts that first on the
// interpreter's sys.path (sys imported), and runs setup.
func withModule(t *testing.T, i *cpython.Interpreter, name, body, setup string) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".py"), []byte(body+"\n"), 0o644))
	require.NoError(t, i.Exec(bg, fmt.Sprintf("import sys\nsys.path.insert(0, %q)\n", dir)+setup))
}

// An interrupt that comes while the task runs importlib's own code (here: waiting for another
// thread's import of the same module) lands once the task is back in its own code. Raised in
// importlib's _ModuleLock.acquire, just after its wait, it left the lock's wake-up taken: the
// next thread waiting to import the module waited for good, and so did the interpreter's end,
// which joins that thread.
func TestInterruptWaitsOutTheImportSystem(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	slowImport(t, i, 1)
	// first imports the module; the task waits for it, then later (from 100 ms in) too
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	err := i.Exec(ctx, `
first = threading.Thread(target=imp, args=(0,))
later = threading.Thread(target=imp, args=(0.1,))
first.start()
started.wait()
later.start()
import pwslowmod
while True:
    pass
`)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	assert.NotContains(t, ie.Python.Traceback, "importlib", "raised in the task's own code, after the import")
	assert.NotContains(t, ie.Python.Traceback, "pwslowmod.py", "the task waited for first's import")
	alive, err := i.Eval(bg, "later.join(10) or later.is_alive()")
	require.NoError(t, err)
	if !assert.Equal(t, false, alive, "the thread that waited for the module after the task did") {
		require.NoError(t, i.Exec(bg, "freeWaiter()\nlater.join()"))
	}
}

// The same for the interrupts that reach an ending interpreter's other threads: one waiting for
// a module's import lock is interrupted once it has it (here in the module's own code, as it
// imports the module again: the first import was interrupted), not in importlib.
func TestCloseContextWaitsOutTheImportSystem(t *testing.T) {
	var errOut pwtest.SyncBuffer
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, err)
	slowImport(t, i, 60)
	require.NoError(t, i.Exec(bg, `
threads = [threading.Thread(target=imp, args=(0,))]
threads[0].start()
started.wait()
threads += [threading.Thread(target=imp, args=(0,)) for _ in range(2)]
for th in threads[1:]:
    th.start()
time.sleep(0.2)  # they wait for the first's import
`))
	pwtest.CloseByDeadline(t, i, 100*time.Millisecond, "the threads waiting for a module's import lock")
	assert.Equal(t, 3, strings.Count(errOut.String(), "KeyboardInterrupt"), "each thread's: %s", errOut.String())
	assert.NotContains(t, errOut.String(), "importlib", "each raised in the module's code")
}

// A thread left out of a round of an ending interpreter's interrupts (waiting for a module's
// import lock) is interrupted at the next interrupt, but the threads that round reached are not
// again before the next round, a second later: neither in Python code nor in a sleep.
func TestCloseContextRoundsReachEachThreadOnceASecond(t *testing.T) {
	for _, body := range []string{"pass", "time.sleep(0.01)"} {
		t.Run(body, func(t *testing.T) {
			var out pwtest.SyncBuffer
			i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out, Stderr: io.Discard})
			require.NoError(t, err)
			dir := t.TempDir()
			// 1.5 s from the first interrupt it swallows, printing how many it got
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pwstubborn.py"), []byte(fmt.Sprintf(`import __main__, time
__main__.started.set()
hits, end = 0, time.monotonic() + 60
while time.monotonic() < end:
    try:
        while time.monotonic() < end:
            %s
    except KeyboardInterrupt:
        hits += 1
        if hits == 1:
            end = time.monotonic() + 1.5
print("interrupted", hits, "times", flush=True)
`, body)), 0o644))
			require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import sys, threading
sys.path.insert(0, %q)
started = threading.Event()
def imp():
    import pwstubborn
first = threading.Thread(target=imp)
first.start()
started.wait()
threading.Thread(target=imp).start()  # waits for first's import
`, dir)))
			pwtest.CloseByDeadline(t, i, 100*time.Millisecond, "the threads")
			assert.Regexp(t, `^interrupted [12] times\n$`, out.String(), "at the first round, and at most at the next (1 s later)")
		})
	}
}

// Code that importlib calls (here a meta path finder) is not interrupted for a second: it may
// return into importlib before the interrupt is raised, past the point where importlib could
// undo what it took (the import lock a finder runs under). The interrupt lands in the code
// that goes on after it; a finder that hangs is interrupted after that second. (A test of
// that policy: the finder here blocks in a C call, after which the interrupt would be raised
// in the finder itself, harmlessly; the harmful case, a finder stopped at its last check before
// it returns, cannot be arranged from Python.)
func TestInterruptWaitsOutCodeImportlibCalls(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	withModule(t, i, "pwafterfinder", "x = 1", `
import select
class Finder:
    hang = False
    def find_spec(self, name, path, target=None):
        if name == "pwafterfinder":
            select.select([], [], [], 0.5)  # a C call: it sees no interrupt
            while self.hang:
                pass
        return None
sys.meta_path.insert(0, Finder())
`)
	py := interruptedExec(t, i, "import pwafterfinder\nwhile True: pass")
	assert.NotContains(t, py.Traceback, "find_spec", "not raised in the finder, importlib called it")

	require.NoError(t, i.Exec(bg, "Finder.hang = True\nsys.modules.pop('pwafterfinder', None)"))
	start := time.Now()
	py = interruptedExec(t, i, "import pwafterfinder")
	assert.Contains(t, py.Traceback, "find_spec", "a finder that hangs is interrupted after all")
	assert.Less(t, time.Since(start), 30*time.Second)
	require.NoError(t, i.Exec(bg, "Finder.hang = False\nimport pwafterfinder"), "imports work on")
}

// An interrupt swallowed by a finalizer that importlib called (here a finder's, as importlib
// drops it; the interrupt lands there once it has waited a second) is not injected again at
// once, where it would be raised in importlib, but by the interrupter once the task has left
// importlib.
func TestInterruptSwallowedInCodeImportlibCallsIsOwed(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	withModule(t, i, "pwowedmod", "x = 1", `
import time
class Dying:
    def find_spec(self, name, path, target=None):
        if name == "pwowedmod":
            sys.meta_path.remove(self)  # importlib drops the last reference
        return None
    def __del__(self):
        end = time.monotonic() + 3
        try:
            while time.monotonic() < end:
                pass
        except KeyboardInterrupt:
            Dying.cut = True  # the late interrupt landed here, and is swallowed
            raise
sys.meta_path.insert(0, Dying())
`)
	py := interruptedExec(t, i, "import pwowedmod\nwhile True: pass")
	assert.NotContains(t, py.Traceback, "importlib", "raised after the import")
	v, err := i.Eval(bg, "['pwowedmod' in sys.modules, getattr(Dying, 'cut', False)]")
	require.NoError(t, err)
	assert.Equal(t, []any{true, true}, v, "the import finished; the interrupt had landed in the finalizer")
}

// The pyworkers module's private functions change the worker's state only when its own
// interpreter calls them, not a nested one run on its thread (concurrent.interpreters): there
// the wake socket of an event loop of the nested interpreter's would become the one the
// worker's interrupts write to, a number that another socket of the worker's may have later
// (and the coroutine of an async call of the nested interpreter's would be kept, and released,
// in the worker's).
func TestNestedInterpreterLeavesTheWorkersStateAlone(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
import socket
from concurrent import interpreters
nested = interpreters.create()
try:
    nested.exec("""
import pyworkers, socket
a, b = socket.socketpair()
pyworkers._set_wake_fd(a.fileno())
pyworkers._set_main(object())
fd = a.fileno()
a.close()
b.close()
""")
    fd = nested.call(eval, "fd")
finally:
    nested.close()
mine, other = socket.socketpair()
other.setblocking(False)
`))
	t.Cleanup(func() { assert.NoError(t, i.Exec(bg, "mine.close()\nother.close()")) }) // before newInterp's
	reused, err := i.Eval(bg, "mine.fileno() == fd")
	require.NoError(t, err)
	if reused != true {
		t.Skip("the worker's socket did not get the number the nested interpreter's had")
	}
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, i.Exec(ctx, "while True: pass"), context.DeadlineExceeded)
	got, err := i.Eval(bg, `other.recv(1) if __import__("select").select([other], [], [], 0)[0] else b""`)
	require.NoError(t, err)
	assert.Empty(t, got, "the interrupt wrote to a socket of the worker's")
}
