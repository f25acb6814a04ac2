package cpython_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

const asyncSrc = `
import asyncio
async def double(x):
    await asyncio.sleep(0)
    return 2 * x
async def fails(x):
    await asyncio.sleep(0)
    raise ValueError(f"bad {x}")
async def loop_id():
    return id(asyncio.get_running_loop())
class Model:
    async def predict(self, x):
        return x + 1
    async def __call__(self, x):
        return x + 2
model = Model()
import functools
triple = functools.partial(functools.partial(double), 3)  # a partial of a partial: 2 * 3
cleaned = []
async def sleeps(secs):
    try:
        await asyncio.sleep(secs)
    finally:
        cleaned.append(secs)
def plain_coroutine():  # a plain function returning a coroutine is not run
    coro = double(1)
    coro.close()
    return coro
`

// An async function as a target is run to completion, as asyncio.run would, on an event loop
// the interpreter keeps; its errors show the user's frames, not asyncio's.
func TestAsyncTargets(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, asyncSrc))

	v, err := i.Call(bg, "__main__:double", 21)
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)
	v, err = i.Call(bg, "__main__:model.predict", 1)
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
	v, err = i.Call(bg, "__main__:model", 1) // an async __call__
	require.NoError(t, err)
	assert.Equal(t, int64(3), v)
	v, err = i.Call(bg, "__main__:triple")
	require.NoError(t, err)
	assert.Equal(t, int64(6), v)

	_, err = i.Call(bg, "__main__:fails", 1)
	pe := pwtest.PyErr(t, err)
	assert.Equal(t, "ValueError", pe.Type)
	assert.Equal(t, "Traceback (most recent call last):\n  File \"<exec-1>\", line 8, in fails\n    raise ValueError(f\"bad {x}\")\nValueError: bad 1\n", pe.Traceback)

	// one loop for every call: what a module binds to it goes on working
	first, err := i.Call(bg, "__main__:loop_id")
	require.NoError(t, err)
	second, err := i.Call(bg, "__main__:loop_id")
	require.NoError(t, err)
	assert.Equal(t, first, second)

	// in a batch, each item is run to completion, with its own result or error
	err = i.Do(bg, func(th *cpython.Thread) error {
		res, err := th.CallMany(bg, "__main__:double", [][]any{{1}, {2}, {"x"}})
		require.NoError(t, err)
		assert.Equal(t, []cpython.CallResult{{Value: int64(2)}, {Value: int64(4)}, {Value: "xx"}}, res)
		res, err = th.CallMany(bg, "__main__:fails", [][]any{{1}})
		require.NoError(t, err)
		require.Len(t, res, 1)
		assert.ErrorContains(t, res[0].Err, "ValueError: bad 1")
		return nil
	})
	require.NoError(t, err)

	_, err = i.Call(bg, "__main__:plain_coroutine")
	require.ErrorContains(t, err, "'coroutine' is not supported")
}

// An interrupt reaches an async target that waits for events: the loop is woken, the task is
// cancelled (its finally blocks run), and the error shows where it waited.
func TestAsyncTargetInterrupted(t *testing.T) {
	var errOut bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, i.Exec(bg, asyncSrc))
	assert.Contains(t, interruptedCall(t, i, "__main__:sleeps", 3600).Traceback, "in sleeps\n    await asyncio.sleep(secs)\n")
	v, err := i.Eval(bg, "cleaned")
	require.NoError(t, err)
	assert.Equal(t, []any{int64(3600)}, v, "the task's finally ran")
	assertLoopServes(t, i, "")

	assert.Empty(t, errOut.String())
}

// An interrupt of an async call that finds the loop running another task's code cancels the
// call's task at the loop's next turn rather than raising KeyboardInterrupt in that code: the
// other task, a background one an earlier call started, runs on.
func TestAsyncInterruptSparesOtherTasks(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, asyncSrc+`
import time
ticks = 0
async def ticker():  # busy nearly all the time: where an injected interrupt would land
    global ticks
    while True:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.02:
            pass
        ticks += 1
        await asyncio.sleep(0)
async def start_ticker():
    global background
    background = asyncio.get_running_loop().create_task(ticker())
async def ticker_state():
    before = ticks
    await asyncio.sleep(0.1)
    return [background.done(), ticks > before]
`))
	_, err := i.Call(bg, "__main__:start_ticker")
	require.NoError(t, err)
	for range 3 {
		assert.Contains(t, interruptedCall(t, i, "__main__:sleeps", 3600).Traceback, "in sleeps\n    await asyncio.sleep(secs)\n")
	}
	v, err := i.Call(bg, "__main__:ticker_state")
	require.NoError(t, err)
	assert.Equal(t, []any{false, true}, v, "the background task is alive and ticking")
	v, err = i.Eval(bg, "cleaned")
	require.NoError(t, err)
	assert.Equal(t, []any{int64(3600), int64(3600), int64(3600)}, v, "each cancelled task's finally ran")
}

// An async call whose task catches its cancellation still ends as interrupted: at once when it
// returns, after its second of clean-up when it waits on.
func TestAsyncInterruptCancellationCaught(t *testing.T) {
	var errOut bytes.Buffer // "Task was destroyed but it is pending!" (waits_on) when the interpreter ends
	i := newInterp(t, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, i.Exec(bg, asyncSrc+`
async def returns():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        return "caught"
async def waits_on():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
`))
	for _, target := range []string{"__main__:returns", "__main__:waits_on"} {
		tb := interruptedCall(t, i, target).Traceback
		assert.Contains(t, tb, "await asyncio.sleep(3600)", target)
		assert.NotContains(t, tb, "CancelledError", target)
		assertLoopServes(t, i, target)
	}
}

// assertLoopServes checks that i's event loop serves a call after an interrupted one (i ran
// asyncSrc: its double).
func assertLoopServes(t *testing.T, i *cpython.Interpreter, msg string) {
	t.Helper()
	v, err := i.Call(bg, "__main__:double", 2)
	require.NoError(t, err, msg)
	assert.Equal(t, int64(4), v, msg)
}

// An async call whose own task waits while code that never awaits holds the loop (a child
// task that spins, or sleeps in time.sleep) is interrupted all the same: the loop cannot take
// the request to cancel the task, and KeyboardInterrupt is injected into that code instead.
func TestAsyncInterruptLoopBlockedByChild(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, asyncSrc+`
import time
async def child(how):
    if how == "spin":
        while True:
            pass
    time.sleep(3600)
async def gathers(how):
    await asyncio.gather(child(how))
`))
	for _, how := range []string{"spin", "sleep"} {
		assert.Contains(t, interruptedCall(t, i, "__main__:gathers", how).Traceback, "await asyncio.gather(child(how))", how)
		assertLoopServes(t, i, how)
	}
}

// An interrupt that comes as a batch's async item returns ends the batch: the items after it
// do not run.
func TestAsyncInterruptEndsBatch(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
import asyncio, time
ran = []
def busy(task):  # runs once the task is done: the interrupt finds no task code running
    t = time.perf_counter()
    while time.perf_counter() - t < 0.3:
        pass
async def item(k):
    ran.append(k)
    if k == 0:
        asyncio.current_task().add_done_callback(busy)
        return k
    await asyncio.sleep(3600)
`))
	err := i.Do(bg, func(th *cpython.Thread) error {
		ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
		defer cancel()
		_, err := th.CallMany(ctx, "__main__:item", [][]any{{0}, {1}, {2}})
		return err
	})
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	v, err := i.Eval(bg, "ran")
	require.NoError(t, err)
	assert.Equal(t, []any{int64(0)}, v, "no item after the interrupted one ran")
}

// However early an interrupt lands in an interpreter's first async call (importing asyncio,
// making the loop), what it cut short is taken out again: the next async call works.
// (pwtest imports no asyncio itself.)
func TestAsyncFirstCallInterruptedEarly(t *testing.T) {
	for _, ms := range []int{3, 10, 20, 30, 50} {
		i := newInterp(t, cpython.InterpreterConfig{})
		_, err := i.Call(bg, "pwtest:add", 1, 2) // pwtest imported: the interrupt is not in that
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(bg, time.Duration(ms)*time.Millisecond)
		_, err = i.Call(ctx, "pwtest:async_sleep_then", 3600, "never")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "%d ms", ms)
		v, err := i.Call(bg, "pwtest:async_sleep_then", 0, "slept")
		require.NoError(t, err, "%d ms", ms)
		assert.Equal(t, "slept", v)
	}
}

// An interrupt that comes while the first async call builds its event loop waits until the
// loop is whole: cut short there, the half-made loop failed in its __del__ ("Exception ignored
// ... no attribute '_ssock'"). The loop's making is stretched here to land the interrupt in it.
func TestAsyncInterruptWaitsForTheLoopToBeMade(t *testing.T) {
	var errOut bytes.Buffer
	i := newInterp(t, cpython.InterpreterConfig{Stderr: &errOut})
	require.NoError(t, i.Exec(bg, asyncSrc+`
import asyncio.selector_events, time
_make = asyncio.selector_events.BaseSelectorEventLoop._make_self_pipe
def _slow_make(self):
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    _make(self)
asyncio.selector_events.BaseSelectorEventLoop._make_self_pipe = _slow_make
`))
	assert.Contains(t, interruptedCall(t, i, "__main__:sleeps", 3600).Traceback, "in sleeps\n    await asyncio.sleep(secs)\n",
		"the interrupt lands once the loop is made")
	_, err := i.Eval(bg, "__import__('gc').collect()")
	require.NoError(t, err)
	assertLoopServes(t, i, "")
	assert.Empty(t, errOut.String())
}

// When the interpreter ends, the tasks a call left running on its loop are cancelled and
// finish, as asyncio.run's are: their cleanup runs, and asyncio has no "Task was destroyed but
// it is pending" to say.
func TestAsyncBackgroundTasksEndWithTheInterpreter(t *testing.T) {
	var out bytes.Buffer // pyworkers serialises the interpreter's writes to it
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{Stdout: &out, Stderr: &out})
	require.NoError(t, err)
	require.NoError(t, i.Exec(bg, `
import asyncio
keep = set()
async def forever():
    try:
        await asyncio.sleep(3600)
    finally:
        print("background task cleaned up")
async def start():
    keep.add(asyncio.get_running_loop().create_task(forever()))
    await asyncio.sleep(0)
`))
	_, err = i.Call(bg, "__main__:start")
	require.NoError(t, err)
	require.NoError(t, i.Close())
	assert.Equal(t, "background task cleaned up\n", out.String())
}
