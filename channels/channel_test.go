package channels_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/channels"
	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/measure"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

// newChan makes a channel that lives until the test ends: tests hand its id to Python, and an
// id does not keep a channel alive.
func newChan(t testing.TB, capacity int) *channels.Channel {
	t.Helper()
	c, err := channels.New(capacity)
	require.NoError(t, err)
	t.Cleanup(func() { runtime.KeepAlive(c) })
	return c
}

// values of every encoded type, in the form they come back to Go
var sample = []any{
	nil, true, false, int64(0), int64(-42), int64(math.MaxInt64), int64(math.MinInt64),
	new(big.Int).Lsh(big.NewInt(3), 100), new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 70)),
	1.5, math.Inf(-1), "", "héllo 🐍", []byte{}, []byte{0, 255},
	cpython.Tuple{}, cpython.Tuple{int64(1), "a"}, []any{}, []any{nil, []any{cpython.Tuple{int64(2)}}},
	map[string]any{}, map[string]any{"k": map[string]any{"n": []any{int64(1), 2.5}}},
}

func TestGoToGo(t *testing.T) {
	c := newChan(t, 0)
	for _, v := range sample {
		require.NoError(t, c.Send(bg, v))
	}
	assert.Equal(t, len(sample), c.Len())
	for _, want := range sample {
		got, err := c.Recv(bg)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := c.TryRecv()
	assert.ErrorIs(t, err, channels.ErrEmpty)
}

// Every type goes Go → C → Python → C → Go: a Python echo loop in an interpreter forwards
// what it receives.
// echoInPython forwards every item from in to out in a new interpreter until in is closed,
// then closes out; the channel yields the interpreter's outcome.
func echoInPython(t *testing.T, in, out *channels.Channel) <-chan error {
	i := newInterp(t)
	done := make(chan error, 1)
	go func() {
		done <- i.Exec(bg, fmt.Sprintf(`
import pyworkers
src, dst = pyworkers.Channel(%d), pyworkers.Channel(%d)
for item in src:
    dst.send(item)
dst.close()
`, in.ID(), out.ID()))
	}()
	return done
}

func TestThroughPython(t *testing.T) {
	in, out := newChan(t, 0), newChan(t, 0)
	done := echoInPython(t, in, out)
	for _, v := range sample {
		require.NoError(t, in.Send(bg, v))
	}
	in.Close()
	for _, want := range sample {
		got, err := out.Recv(bg)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := out.Recv(bg)
	assert.ErrorIs(t, err, channels.ErrClosed)
	require.NoError(t, <-done)
}

// Small items travel in nodes the queue reuses (include/pyw_queue.h): values of every size
// around the limit, a burst far beyond the nodes a queue keeps, and small items interleaved
// with large ones all arrive whole, in order, through Go and through Python.
func TestSmallItemNodesAreReused(t *testing.T) {
	var want []any
	for n := range 100 { // encoded sizes from 2 to ~110 bytes cross PYW_SMALL_ITEM
		want = append(want, strings.Repeat("x", n))
	}
	for k := range 1000 { // more at once than the 256 nodes kept
		want = append(want, int64(k))
	}
	for n := range 50 {
		want = append(want, []any{strings.Repeat("y", 60+n), int64(n)}, bytes.Repeat([]byte{byte(n)}, 5000))
	}
	in, out := newChan(t, 0), newChan(t, 0)
	done := echoInPython(t, in, out)
	for round := range 2 { // the second round reuses the first's nodes
		for _, v := range want {
			require.NoError(t, in.Send(bg, v))
		}
		for k, w := range want {
			got, err := out.Recv(bg)
			require.NoError(t, err)
			require.Equal(t, w, got, "round %d, item %d", round, k)
		}
	}
	in.Close()
	_, err := out.Recv(bg)
	assert.ErrorIs(t, err, channels.ErrClosed)
	require.NoError(t, <-done)
}

func TestSharedBuffersAndLargeBytes(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	buf, err := cpython.NewBuffer(1 << 20)
	require.NoError(t, err)
	copy(buf.Bytes(), "shared")
	require.NoError(t, c.Send(bg, map[string]any{"payload": buf}))
	buf.Release() // the item holds its own reference
	v, err := i.Eval(bg, fmt.Sprintf(`(lambda m: (type(m['payload']).__name__, m['payload'].readonly, bytes(m['payload'][:6]), len(m['payload'])))(__import__('pyworkers').Channel(%d).recv())`, c.ID()))
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{"memoryview", true, []byte("shared"), int64(1 << 20)}, v)

	// Python bytes of 64 KiB or more travel shared: a memoryview in Python, a Buffer in Go
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
ch.send(b'x' * 65536)
ch.send(b'y' * 10)
`, c.ID())))
	got, err := c.Recv(bg)
	require.NoError(t, err)
	gb, ok := got.(*cpython.Buffer)
	require.True(t, ok, "got %T", got)
	assert.Equal(t, 65536, gb.Len())
	assert.Equal(t, byte('x'), gb.Bytes()[65535])
	gb.Release()
	got, err = c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, []byte("yyyyyyyyyy"), got)
}

func TestUnshareableValuesAreNotSent(t *testing.T) {
	c := newChan(t, 0)
	require.NoError(t, c.Send(bg, "first"))
	err := c.Send(bg, []any{1, map[string]any{"bad": make(chan int)}})
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, `[1]["bad"]`, ce.Path)
	assert.Equal(t, 1, c.Len(), "nothing enqueued")
	err = c.Send(bg, []any{1, (*cpython.Buffer)(nil)})
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "[1]", ce.Path)
	assert.Equal(t, "nil *Buffer", ce.Reason, "not a Release that never happened")

	i := newInterp(t)
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).send([1, {'x': {2}}])", c.ID())))
	assert.Equal(t, "TypeError", pe.Type)
	assert.Contains(t, pe.Message, `[1]["x"]`)
	assert.Contains(t, pe.Message, "'set'")
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).send(object())", c.ID())))
	assert.Contains(t, pe.Message, "'object'")
	assert.Equal(t, 1, c.Len(), "nothing enqueued")
	got, err := c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, "first", got)
}

func TestCloseAndDrain(t *testing.T) {
	c := newChan(t, 0)
	for k := range 3 {
		require.NoError(t, c.Send(bg, k))
	}
	assert.True(t, c.Close())
	assert.False(t, c.Close())
	assert.True(t, c.Closed())
	assert.ErrorIs(t, c.Send(bg, 9), channels.ErrClosed)
	assert.ErrorIs(t, c.TrySend(9), channels.ErrClosed)
	for k := range 3 {
		v, err := c.Recv(bg)
		require.NoError(t, err)
		assert.Equal(t, int64(k), v)
	}
	_, err := c.Recv(bg)
	assert.ErrorIs(t, err, channels.ErrClosed)

	// the same seen from Python
	d := newChan(t, 0)
	require.NoError(t, d.Send(bg, "a"))
	require.NoError(t, d.Send(bg, "b"))
	d.Close()
	i := newInterp(t)
	v, err := i.Eval(bg, fmt.Sprintf("list(__import__('pyworkers').Channel(%d))", d.ID()))
	require.NoError(t, err)
	assert.Equal(t, []any{"a", "b"}, v)
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).recv()", d.ID())))
	assert.Equal(t, "pyworkers.ChannelClosed", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).send(1)", d.ID())))
	assert.Equal(t, "pyworkers.ChannelClosed", pe.Type)
}

func TestClosingWakesBlockedReceivers(t *testing.T) {
	c := newChan(t, 0)
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := c.Recv(bg); errs <- err }()
	}
	time.Sleep(20 * time.Millisecond)
	c.Close()
	for range 3 {
		assert.ErrorIs(t, <-errs, channels.ErrClosed)
	}
}

func TestBoundedBackpressure(t *testing.T) {
	c := newChan(t, 2)
	assert.Equal(t, 2, c.Cap())
	require.NoError(t, c.TrySend(1))
	require.NoError(t, c.TrySend(2))
	assert.ErrorIs(t, c.TrySend(3), channels.ErrFull)
	sent := make(chan error, 1)
	go func() { sent <- c.Send(bg, 3) }()
	select {
	case err := <-sent:
		t.Fatalf("Send on a full channel returned at once: %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	v, err := c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, int64(1), v)
	require.NoError(t, <-sent)
	assert.Equal(t, 2, c.Len())

	i := newInterp(t)
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).send_nowait(4)", c.ID())))
	assert.Equal(t, "pyworkers.ChannelFull", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).send(4, timeout=0.05)", c.ID())))
	assert.Equal(t, "TimeoutError", pe.Type)

	// A send that does not wait finds the channel full before it converts the value, which
	// could take long for nothing (here: for good), or fail.
	released, err := cpython.NewBuffer(1)
	require.NoError(t, err)
	released.Release()
	assert.ErrorIs(t, c.TrySend(released), channels.ErrFull)
	ctx, cancel := context.WithTimeout(bg, time.Minute) // not a timing assertion: the conversion never ends
	defer cancel()
	pe = pwtest.PyErr(t, i.Exec(ctx, fmt.Sprintf("v = [0]\nfor _ in range(60):\n    v = [v, v]\npyworkers.Channel(%d).send_nowait(v)", c.ID())))
	assert.Equal(t, "pyworkers.ChannelFull", pe.Type)
}

func TestTimeoutsAndCancellation(t *testing.T) {
	c := newChan(t, 0)
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	_, err := c.Recv(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	ctx, cancel = context.WithCancel(bg)
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = c.Recv(ctx)
	assert.ErrorIs(t, err, context.Canceled)

	i := newInterp(t)
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).recv(timeout=0.05)", c.ID())))
	assert.Equal(t, "TimeoutError", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).recv_nowait()", c.ID())))
	assert.Equal(t, "pyworkers.ChannelEmpty", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).recv(timeout=-1)", c.ID())))
	assert.Equal(t, "ValueError", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).recv(timeout=1e-12)", c.ID())))
	assert.Equal(t, "TimeoutError", pe.Type, "a timeout below a nanosecond is still a timeout")
}

// A send_many that stops part-way says how many items went (exc.sent): a retry can send the
// rest only. An empty SendMany sends nothing, closed channel or not.
func TestSendManyPartwaySaysHowManyWent(t *testing.T) {
	i := newInterp(t)
	require.NoError(t, i.Exec(bg, `
import pyworkers
def stopped(capacity, items, close=False, **kw):
    ch = pyworkers.Channel.create(capacity)
    if close:
        ch.close()
    try:
        ch.send_many(items, **kw)
    except Exception as e:
        return (type(e).__name__, e.sent, len(ch))
    return "sent all"
`))
	for _, c := range []struct {
		call string
		want cpython.Tuple
	}{
		{"stopped(2, [1, 2, 3], timeout=0)", cpython.Tuple{"ChannelFull", int64(2), int64(2)}},
		{"stopped(1, [1, 2], timeout=0.05)", cpython.Tuple{"TimeoutError", int64(1), int64(1)}},
		{"stopped(0, [1], close=True)", cpython.Tuple{"ChannelClosed", int64(0), int64(0)}},
	} {
		v, err := i.Eval(bg, c.call)
		require.NoError(t, err, c.call)
		assert.Equal(t, c.want, v, c.call)
	}

	c := newChan(t, 0)
	c.Close()
	n, err := c.SendMany(bg, nil)
	assert.NoError(t, err)
	assert.Zero(t, n)
}

// send_many's timeout is for the whole call: a receiver that frees a slot now and then, each
// time sooner than the timeout, does not keep it going.
func TestSendManyTimeoutIsForTheWholeCall(t *testing.T) {
	c := newChan(t, 1)
	i := newInterp(t)
	stop := make(chan struct{})
	taken := make(chan int)
	go func() {
		n := 0
		defer func() { taken <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.TryRecv(); err == nil {
				n++
			}
		}
	}()
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).send_many(range(50), timeout=0.3)", c.ID())))
	close(stop)
	n := <-taken
	assert.Equal(t, "TimeoutError", pe.Type)
	assert.Less(t, n, 45, "it gave up long before the receiver took everything")
}

// TrySpinRecv takes what is there or comes during its spin, and otherwise gives up like
// TryRecv, without sleeping.
func TestTrySpinRecv(t *testing.T) {
	c := newChan(t, 0)
	start := time.Now()
	_, err := c.TrySpinRecv()
	assert.ErrorIs(t, err, channels.ErrEmpty)
	assert.Less(t, time.Since(start), time.Second, "it does not sleep until an item comes")
	require.NoError(t, c.Send(bg, "x"))
	v, err := c.TrySpinRecv()
	require.NoError(t, err)
	assert.Equal(t, "x", v)
	require.NoError(t, c.Send(bg, "y"))
	c.Close()
	v, err = c.TrySpinRecv()
	require.NoError(t, err)
	assert.Equal(t, "y", v)
	_, err = c.TrySpinRecv()
	assert.ErrorIs(t, err, channels.ErrClosed)
}

// A task blocked in recv() is woken by its interrupt at once, not when some timeout passes.
func TestInterruptWakesABlockedReceiver(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := i.Exec(ctx, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).recv()", c.ID()))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	assert.Less(t, time.Since(start), 5*time.Second)
	// nothing was lost or half-taken, and the interpreter goes on
	require.NoError(t, c.Send(bg, "later"))
	v, err := i.Eval(bg, fmt.Sprintf("pyworkers.Channel(%d).recv()", c.ID()))
	require.NoError(t, err)
	assert.Equal(t, "later", v)
}

// A thread the interpreter's code started that waits on a channel (recv, and send to a full
// one) is interrupted by the interpreter's end when CloseContext's deadline passes (the
// interpreter waits for its threads), and what the channels hold stays there.
func TestInterpretersEndInterruptsItsThreadsWaitingOnChannels(t *testing.T) {
	// the second time with pyworkers gone from sys.modules: the waits know their interpreter
	// from the channel's module, not from a look-up by name; the third with pyworkers imported
	// again after that (a fresh module object, which must know its interpreter too)
	for _, hide := range []string{"", "del sys.modules['pyworkers']", "del sys.modules['pyworkers']; import pyworkers"} {
		empty, full := newChan(t, 0), newChan(t, 1)
		require.NoError(t, full.Send(bg, "kept"))
		i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		require.NoError(t, err)
		require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers, sys, threading
%s
def wait(f, *args):
    def run():
        try:
            f(*args)
        except KeyboardInterrupt:
            pass
    return run
threading.Thread(target=wait(pyworkers.Channel(%d).recv)).start()
threading.Thread(target=wait(pyworkers.Channel(%d).send, "more")).start()
`, hide, empty.ID(), full.ID())))
		pwtest.CloseByDeadline(t, i, 200*time.Millisecond, "the threads waiting on channels "+hide)
		assert.Equal(t, 1, full.Len())
		v, err := full.Recv(bg)
		require.NoError(t, err)
		assert.Equal(t, "kept", v)
		assert.Equal(t, 0, empty.Len())
	}
}

// An item and an interrupt that reach a waiting recv (or recv_many) together: the interrupt
// wins and the item stays in the channel, rather than being taken and lost with the
// interrupted frame. Either the task got the item before its interrupt (and passed it on), or
// the item is still there.
func TestInterruptArrivingWithAnItemLosesNothing(t *testing.T) {
	for _, call := range []string{"recv()", "recv_many()[0]"} {
		in, out := newChan(t, 0), newChan(t, 0)
		i := newInterp(t)
		require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
inq, out = pyworkers.Channel(%d), pyworkers.Channel(%d)
def pass_on():
    out.send("ready")
    out.send(inq.%s)
`, in.ID(), out.ID(), call)))
		passed, kept := 0, 0
		// until the race this is about (item and interrupt together) has happened, 100 rounds
		// at least
		for k := 0; k < 100 || kept == 0 && k < 2000; k++ {
			ctx, cancel := context.WithCancel(bg)
			done := make(chan error, 1)
			go func() { _, err := i.Call(ctx, "__main__:pass_on"); done <- err }()
			v, err := out.Recv(bg)
			require.NoError(t, err)
			require.Equal(t, "ready", v)
			time.Sleep(500 * time.Microsecond) // past its spin, asleep in the wait
			require.NoError(t, in.Send(bg, int64(k)))
			cancel()
			<-done
			if v, err := out.TryRecv(); err == nil {
				require.Equal(t, int64(k), v, call)
				passed++
				continue
			}
			v, err = in.TryRecv()
			require.NoError(t, err, "%s, round %d: the item is neither passed on nor in the channel", call, k)
			require.Equal(t, int64(k), v, call)
			kept++
		}
		t.Logf("%s: %d passed on, %d left in the channel", call, passed, kept)
		assert.NotZero(t, kept, "%s: the interrupt never came with an item: nothing was tested", call)
	}
}

// A thread with a small stack (threading.stack_size) that sends or receives a deeply nested
// value gets an error, not a crashed process: the codec's depth limit assumes a usual stack,
// CPython's recursion check sees the real one. A refused receive leaves the item queued.
func TestDeepValuesOnASmallStack(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	var deep any = int64(1)
	for range 9000 {
		deep = []any{deep}
	}
	require.NoError(t, c.Send(bg, deep))
	v, err := i.Eval(bg, fmt.Sprintf(`(lambda: (
    __import__('threading').stack_size(256 << 10),
    globals().update(ch=__import__('pyworkers').Channel(%d), out=[]),
    exec("""
def attempt(what):
    try:
        if what == 'recv':
            ch.recv_nowait()
        else:
            v = 1
            for _ in range(9000):
                v = [v]
            ch.send(v)
        out.append(what + ' worked')
    except (RecursionError, TypeError) as e:
        out.append(what + ' refused: ' + type(e).__name__)
import threading
for what in ('recv', 'send'):
    t = threading.Thread(target=attempt, args=(what,))
    t.start()
    t.join()
threading.stack_size(0)
""", globals()),
    out)[-1])()`, c.ID()))
	require.NoError(t, err)
	assert.Equal(t, []any{"recv refused: RecursionError", "send refused: TypeError"}, v)
	assert.Equal(t, 1, c.Len(), "the item the thread could not take is still there")
	got, err := i.Eval(bg, "(lambda v: [(v := v[0]) for _ in range(9000)][-1])(ch.recv_nowait())")
	require.NoError(t, err, "the interpreter's own thread receives it")
	assert.Equal(t, int64(1), got)
}

// While one thread of an interpreter waits in recv(), the interpreter's GIL is free: another
// thread of the same interpreter runs Python meanwhile.
func TestBlockedReceiverReleasesItsGIL(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers, threading
got = []
waiter = threading.Thread(target=lambda: got.append(pyworkers.Channel(%d).recv()))
waiter.start()
`, c.ID())))
	time.Sleep(20 * time.Millisecond) // let the thread block in recv
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	v, err := i.Eval(ctx, "sum(range(100000)) if waiter.is_alive() else 'not blocked'")
	require.NoError(t, err, "the interpreter could not run while a thread waited in recv")
	assert.Equal(t, int64(4999950000), v)
	require.NoError(t, c.Send(bg, "wake"))
	require.NoError(t, i.Exec(bg, "waiter.join()"))
	v, err = i.Eval(bg, "got")
	require.NoError(t, err)
	assert.Equal(t, []any{"wake"}, v)
}

func TestItemsOutliveTheirSender(t *testing.T) {
	c := newChan(t, 0)
	sender, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	require.NoError(t, sender.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
ch.send({'from': 'a dead interpreter', 'data': [1, 2, 3]})
ch.send(pyworkers.Buffer(100000))
ch.send(b'z' * 100000)
`, c.ID())))
	require.NoError(t, sender.Close())

	receiver := newInterp(t)
	v, err := receiver.Eval(bg, fmt.Sprintf(`
(lambda ch: [ch.recv(), len(ch.recv()), bytes(ch.recv()[-3:])])(__import__('pyworkers').Channel(%d))`, c.ID()))
	require.NoError(t, err)
	assert.Equal(t, []any{map[string]any{"from": "a dead interpreter", "data": []any{int64(1), int64(2), int64(3)}}, int64(100000), []byte("zzz")}, v)
}

// Open finds each of many live channels by its id, through the registry's growth, and none
// that every holder has let go.
func TestOpenAmongMany(t *testing.T) {
	live := make([]*channels.Channel, 5000)
	for k := range live {
		live[k] = newChan(t, k%3)
	}
	for k := 0; k < len(live); k += 2 {
		live[k].Release()
	}
	for k, c := range live {
		got, err := channels.Open(c.ID())
		if k%2 == 0 {
			require.ErrorIs(t, err, channels.ErrNoChannel, "channel %d was released", k)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.ID(), got.ID())
		require.Equal(t, k%3, got.Cap())
		got.Release()
	}
	for k := 1; k < len(live); k += 2 {
		live[k].Release()
	}
}

func TestOpenByID(t *testing.T) {
	_, err := channels.Open(1 << 60)
	assert.ErrorIs(t, err, channels.ErrNoChannel)
	i := newInterp(t)
	pe := pwtest.PyErr(t, i.Exec(bg, "import pyworkers\npyworkers.Channel(1 << 60)"))
	assert.Equal(t, "ValueError", pe.Type)

	// made in Python, opened in Go
	v, err := i.Eval(bg, "(lambda ch: (globals().__setitem__('keep', ch), ch.send('hi'), ch.id)[2])(pyworkers.Channel.create(capacity=4))")
	require.NoError(t, err)
	c, err := channels.Open(v.(int64))
	require.NoError(t, err)
	assert.Equal(t, 4, c.Cap())
	got, err := c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, "hi", got)
	assert.Contains(t, c.String(), fmt.Sprintf("id=%d", c.ID()))
	v, err = i.Eval(bg, "repr(keep)")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v.(string), "<pyworkers.Channel id="))
}

// opener returns a func that asks Python in i whether a channel id opens now: Python's Channel
// object lets go at once (a *Channel from Open would hold the queue until the next collection).
func opener(t *testing.T, i *cpython.Interpreter) func(id int64) (bool, error) {
	require.NoError(t, i.Exec(bg, `
import pyworkers
def opens(id):
    try:
        pyworkers.Channel(id)
        return True
    except ValueError:
        return False
`))
	return func(id int64) (bool, error) {
		v, err := i.Call(bg, "__main__:opens", id)
		return v == true, err
	}
}

// A channel lives while a holder does — a *Channel or a Python Channel object — and not for
// its id: once the last holder is gone, the id opens nothing.
func TestAChannelLivesWhileAHolderDoes(t *testing.T) {
	i := newInterp(t)
	opens := opener(t, i)
	gone := func(id int64) bool {
		runtime.GC()
		ok, err := opens(id)
		return assert.NoError(t, err) && !ok // no require: Eventually's goroutine
	}

	c, err := channels.New(0)
	require.NoError(t, err)
	require.NoError(t, c.Send(bg, "kept by Python"))
	id := c.ID()
	require.NoError(t, i.Exec(bg, fmt.Sprintf("import pyworkers\nheld = pyworkers.Channel(%d)", id)))
	c = nil // Python holds it now
	for range 3 {
		require.False(t, gone(id), "freed while Python held it")
	}
	v, err := i.Eval(bg, "held.recv_nowait()")
	require.NoError(t, err)
	assert.Equal(t, "kept by Python", v)
	require.NoError(t, i.Exec(bg, "del held"))
	assert.Eventually(t, func() bool { return gone(id) }, 5*time.Second, 10*time.Millisecond,
		"the id still opens a channel no one holds")

	// held by Go only: dropped with the last reference to the *Channel
	c, err = channels.New(0)
	require.NoError(t, err)
	id = c.ID()
	runtime.KeepAlive(c)
	c = nil
	assert.Eventually(t, func() bool { return gone(id) }, 5*time.Second, 10*time.Millisecond)
}

// Release lets the queue go at once, with no garbage collection: unless Python holds it, or a
// call in progress uses it (until that call ends). Calls after it fail with ErrReleased.
func TestReleaseLetsTheQueueGoAtOnce(t *testing.T) {
	i := newInterp(t)
	opensOrNot := opener(t, i)
	opens := func(id int64) bool {
		ok, err := opensOrNot(id)
		require.NoError(t, err)
		return ok
	}
	c, err := channels.New(0)
	require.NoError(t, err)
	require.NoError(t, c.Send(bg, make([]byte, 1<<20)))
	id := c.ID()
	c.Release()
	assert.False(t, opens(id), "released, and no one else held it")
	assert.ErrorIs(t, c.Send(bg, 1), channels.ErrReleased)
	assert.ErrorIs(t, c.TrySend(1), channels.ErrReleased)
	_, err = c.Recv(bg)
	assert.ErrorIs(t, err, channels.ErrReleased)
	_, err = c.SendMany(bg, []any{1})
	assert.ErrorIs(t, err, channels.ErrReleased)
	_, err = c.RecvMany(bg, 2)
	assert.ErrorIs(t, err, channels.ErrReleased)
	assert.Equal(t, 0, c.Len())
	assert.True(t, c.Closed())
	assert.False(t, c.Close())
	assert.Contains(t, c.String(), "released")
	c.Release() // again: nothing

	// Python holds it too: it lives on for Python
	c, err = channels.New(0)
	require.NoError(t, err)
	require.NoError(t, c.Send(bg, "for Python"))
	require.NoError(t, i.Exec(bg, fmt.Sprintf("held = pyworkers.Channel(%d)", c.ID())))
	c.Release()
	v, err := i.Eval(bg, "held.recv_nowait()")
	require.NoError(t, err)
	assert.Equal(t, "for Python", v)
	require.NoError(t, i.Exec(bg, "del held"))

	// a Recv waiting when Release comes keeps the queue until it ends, and gets its item
	c, err = channels.New(0)
	require.NoError(t, err)
	id = c.ID()
	got := make(chan any, 1)
	go func() {
		v, err := c.Recv(bg)
		assert.NoError(t, err)
		got <- v
	}()
	for c.CallsInProgress() == 0 {
		runtime.Gosched()
	}
	c.Release()
	require.True(t, opens(id), "a Recv in progress keeps it")
	require.NoError(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).send('late')", id)))
	assert.Equal(t, "late", <-got)
	assert.False(t, opens(id), "let go when the Recv ended")

	// Release racing calls on other goroutines: each call works or says ErrReleased (-race)
	for range 20 {
		c, err = channels.New(4)
		require.NoError(t, err)
		var wg sync.WaitGroup
		for k := range 4 {
			wg.Go(func() {
				for {
					var err error
					if k%2 == 0 {
						err = c.TrySend(k)
					} else {
						_, err = c.TryRecv()
					}
					if errors.Is(err, channels.ErrReleased) {
						return
					}
					if err != nil && !errors.Is(err, channels.ErrFull) && !errors.Is(err, channels.ErrEmpty) {
						t.Errorf("call racing Release: %v", err)
						return
					}
				}
			})
		}
		runtime.Gosched()
		c.Release()
		wg.Wait()
	}
}

// A Channel that New or Open did not make (a zero value) panics with a message rather than
// crash the process in C. (Copies of a Channel are go vet's to find: see noCopy.)
func TestAZeroChannelPanicsWithAMessage(t *testing.T) {
	var zero channels.Channel
	const msg = "channels: Channel used without New or Open (its zero value)"
	assert.PanicsWithValue(t, msg, func() { zero.Len() })
	assert.PanicsWithValue(t, msg, func() { _ = zero.Send(bg, 1) })
	assert.PanicsWithValue(t, msg, func() { _, _ = zero.Recv(bg) })
	assert.PanicsWithValue(t, msg, func() { zero.Close() })
}

// N producers × M consumers across interpreters (and Go): every item delivered exactly once.
func TestManyProducersManyConsumers(t *testing.T) {
	const producers, consumers, perProducer = 3, 3, 2000
	c := newChan(t, 64)
	results := newChan(t, 0)
	var wg sync.WaitGroup
	errs := make(chan error, producers+consumers+1)
	for p := range producers {
		in := newInterp(t)
		wg.Go(func() {
			errs <- in.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
for k in range(%d):
    ch.send(%d * 1000000 + k)
`, c.ID(), perProducer, p))
		})
	}
	var cwg sync.WaitGroup
	for range consumers - 1 {
		in := newInterp(t)
		cwg.Go(func() {
			errs <- in.Exec(bg, fmt.Sprintf(`
import pyworkers
out = pyworkers.Channel(%d)
got = [x for x in pyworkers.Channel(%d)]
out.send(got)
`, results.ID(), c.ID()))
		})
	}
	var goGot []int64
	cwg.Go(func() { // and one consumer in Go
		for {
			v, err := c.Recv(bg)
			if errors.Is(err, channels.ErrClosed) {
				return
			}
			if err != nil {
				errs <- err
				return
			}
			goGot = append(goGot, v.(int64))
		}
	})
	wg.Wait()
	c.Close()
	cwg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	all := goGot
	for range consumers - 1 {
		v, err := results.Recv(bg)
		require.NoError(t, err)
		for _, x := range v.([]any) {
			all = append(all, x.(int64))
		}
	}
	require.Len(t, all, producers*perProducer)
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	k := 0
	for p := range producers {
		for n := range perProducer {
			require.Equal(t, int64(p*1000000+n), all[k], "item %d", k)
			k++
		}
	}
}

// An item RecvMany cannot decode (only a bug could send one) is dropped with an error; the
// items taken with it go back to the channel's head, in order.
func TestRecvManyKeepsTheOthersOfAMalformedItem(t *testing.T) {
	c := newChan(t, 0)
	require.NoError(t, c.Send(bg, "a"))
	require.NoError(t, c.SendRaw([]byte{'l', 3, 'N'})) // a list of 3 that holds one item
	require.NoError(t, c.Send(bg, "b"))
	require.NoError(t, c.Send(bg, "c"))
	_, err := c.RecvMany(bg, 10)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "undecodable")
	require.Equal(t, 3, c.Len(), "the others are back")
	got, err := c.RecvMany(bg, 10)
	require.NoError(t, err)
	assert.Equal(t, []any{"a", "b", "c"}, got)
}

// FuzzMalformedItems: whatever bytes an item holds, neither Python nor Go crashes decoding it.
func FuzzMalformedItems(f *testing.F) {
	for _, s := range [][]byte{{}, {'N'}, {'l', 3, 'N'}, {'d', 1, 'N', 'N'}, {'s', 1, 0xff}, {'B', 0}, {'I', 0},
		append([]byte{'l', 1, 'l', 1, 'l', 1}, 'N')} {
		f.Add(s)
	}
	var once sync.Once
	var in *cpython.Interpreter
	f.Fuzz(func(t *testing.T, b []byte) {
		once.Do(func() {
			var err error
			in, err = cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
			require.NoError(t, err)
		})
		c := newChan(t, 0)
		require.NoError(t, c.SendRaw(b))
		_, goErr := c.Recv(bg)
		require.NoError(t, c.SendRaw(b))
		_, pyErr := in.Eval(bg, fmt.Sprintf("__import__('pyworkers').Channel(%d).recv()", c.ID()))
		if goErr != nil {
			assert.NotErrorIs(t, goErr, channels.ErrClosed)
		}
		var pe *cpython.PythonError
		if errors.As(pyErr, &pe) {
			assert.Contains(t, []string{"ValueError", "UnicodeDecodeError"}, pe.Type, "%+v", pe)
		}
	})
}

func TestReleasedMemoryviewIsRefused(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
buf = pyworkers.Buffer(8)
with memoryview(buf) as m:
    pass
del buf
pyworkers.Channel(%d).send(m)
`, c.ID())))
	assert.Equal(t, "TypeError", pe.Type)
	assert.Contains(t, pe.Message, "released memoryview")
	assert.Equal(t, 0, c.Len())
}

// A small bounded channel: full, drained after close, waking blocked receivers on close, and a
// Send that waits for room until its deadline.
func TestSmallBoundedChannel(t *testing.T) {
	c := newChan(t, 4)
	for k := range 4 {
		require.NoError(t, c.TrySend(k))
	}
	assert.ErrorIs(t, c.TrySend(4), channels.ErrFull)
	assert.Equal(t, 4, c.Len())
	v, err := c.TryRecv()
	require.NoError(t, err)
	assert.Equal(t, int64(0), v)
	require.NoError(t, c.TrySend(4))
	c.Close()
	assert.ErrorIs(t, c.TrySend(5), channels.ErrClosed)
	for k := 1; k <= 4; k++ {
		v, err := c.Recv(bg)
		require.NoError(t, err)
		assert.Equal(t, int64(k), v)
	}
	_, err = c.Recv(bg)
	assert.ErrorIs(t, err, channels.ErrClosed)

	// blocked receivers and senders wake on close; a full ring makes Send wait for room
	d := newChan(t, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := d.Recv(bg); errs <- err }()
	}
	time.Sleep(20 * time.Millisecond)
	d.Close()
	for range 2 {
		assert.ErrorIs(t, <-errs, channels.ErrClosed)
	}
	e := newChan(t, 2)
	require.NoError(t, e.Send(bg, 1))
	require.NoError(t, e.Send(bg, 2))
	sent := make(chan error, 1)
	go func() { sent <- e.Send(bg, 3) }()
	time.Sleep(20 * time.Millisecond)
	_, err = e.Recv(bg)
	require.NoError(t, err)
	require.NoError(t, <-sent)
	ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, e.Send(ctx, 4), context.DeadlineExceeded)
}

func TestSendManyRecvMany(t *testing.T) {
	c := newChan(t, 3) // bounded: send_many waits for room as the receiver drains
	i := newInterp(t)
	recv := newInterp(t)
	type outcome struct {
		batches any
		err     error
	}
	got := make(chan outcome, 1)
	go func() { // no require here: FailNow must run on the test's goroutine
		err := recv.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
batches, n = [], 0
while n < 10:
    b = ch.recv_many(2)
    batches.append(b)
    n += len(b)
`, c.ID()))
		var v any
		if err == nil {
			v, err = recv.Eval(bg, "batches")
		}
		got <- outcome{v, err}
	}()
	v, err := i.Eval(bg, fmt.Sprintf("__import__('pyworkers').Channel(%d).send_many(range(10))", c.ID()))
	require.NoError(t, err)
	assert.Equal(t, int64(10), v)
	r := <-got
	require.NoError(t, r.err)
	var all []any
	for _, batch := range r.batches.([]any) {
		b := batch.([]any)
		assert.NotEmpty(t, b)
		assert.LessOrEqual(t, len(b), 2)
		all = append(all, b...)
	}
	require.Len(t, all, 10)
	for k, x := range all {
		assert.Equal(t, int64(k), x, "in order")
	}

	// a value that cannot cross: nothing is sent
	pe := pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).send_many([1, 2, {3}])", c.ID())))
	assert.Equal(t, "TypeError", pe.Type)
	assert.Contains(t, pe.Message, "item 2")
	assert.Equal(t, 0, c.Len())

	// recv_many returns what is there, and ends with ChannelClosed
	require.NoError(t, c.Send(bg, "a"))
	c.Close()
	v, err = i.Eval(bg, fmt.Sprintf("pyworkers.Channel(%d).recv_many()", c.ID()))
	require.NoError(t, err)
	assert.Equal(t, []any{"a"}, v)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).recv_many()", c.ID())))
	assert.Equal(t, "pyworkers.ChannelClosed", pe.Type)
	pe = pwtest.PyErr(t, i.Exec(bg, fmt.Sprintf("pyworkers.Channel(%d).send_many([1])", c.ID())))
	assert.Equal(t, "pyworkers.ChannelClosed", pe.Type)
}

func TestGoSendManyRecvMany(t *testing.T) {
	c := newChan(t, 4)
	done := make(chan []any, 1)
	go func() {
		var all []any
		for len(all) < 10 {
			vs, err := c.RecvMany(bg, 3)
			if !assert.NoError(t, err) {
				break
			}
			assert.LessOrEqual(t, len(vs), 3)
			all = append(all, vs...)
		}
		done <- all
	}()
	vs := make([]any, 10)
	for k := range vs {
		vs[k] = k
	}
	n, err := c.SendMany(bg, vs) // waits for room as the receiver drains the 4 slots
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	all := <-done
	for k, v := range all {
		assert.Equal(t, int64(k), v)
	}

	_, err = c.SendMany(bg, []any{1, make(chan int)})
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "[1]", ce.Path)
	assert.Equal(t, 0, c.Len(), "nothing sent")

	n, err = c.SendMany(bg, []any{"a", "b"})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	c.Close()
	got, err := c.RecvMany(bg, 10)
	require.NoError(t, err)
	assert.Equal(t, []any{"a", "b"}, got)
	_, err = c.RecvMany(bg, 10)
	assert.ErrorIs(t, err, channels.ErrClosed)
	_, err = c.SendMany(bg, []any{1})
	assert.ErrorIs(t, err, channels.ErrClosed)
	_, err = c.RecvMany(bg, 0)
	assert.Error(t, err)

	// a full channel and a deadline: part sent, ctx error
	d := newChan(t, 2)
	ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	n, err = d.SendMany(ctx, []any{1, 2, 3})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 2, n)
	assert.Equal(t, 2, d.Len())
}

// A waiter spins for a while before it sleeps, and a send (or receive) wakes no sleeper while
// spinners are enough to take what is there: this checks that no item and no free slot is ever
// left with every waiter asleep. Items come in bursts separated by pauses around the spin's
// length, so that waiters are caught spinning, giving up their spin, and asleep; each burst must
// be taken before the next one is sent.
func TestNoWakeUpIsLost(t *testing.T) {
	const bursts = 2000
	pauses := []time.Duration{0, 5 * time.Microsecond, 18 * time.Microsecond, 25 * time.Microsecond, 100 * time.Microsecond}
	within := func(t *testing.T, what string, k int, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("burst %d: %s: still waiting after 5 s, every waiter asleep", k, what)
		}
	}
	t.Run("receivers", func(t *testing.T) {
		c := newChan(t, 0)
		got := make(chan int64, 8)
		var wg sync.WaitGroup
		for r := range 3 {
			wg.Go(func() {
				ctx := bg
				if r == 0 { // one waits with a context that can end: spin first, then sleep
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(bg)
					defer cancel()
				}
				for {
					v, err := c.Recv(ctx)
					if err != nil {
						return
					}
					got <- v.(int64)
				}
			})
		}
		defer wg.Wait()
		defer c.Close()
		n := int64(0)
		for k := range bursts {
			size := 1 + k%3
			for range size {
				require.NoError(t, c.Send(bg, n))
				n++
			}
			within(t, "receiving", k, func() error {
				for range size {
					<-got
				}
				return nil
			})
			time.Sleep(pauses[k%len(pauses)])
		}
	})
	t.Run("senders", func(t *testing.T) {
		c := newChan(t, 1)
		var wg sync.WaitGroup
		for s := range 3 {
			wg.Go(func() {
				ctx := bg
				if s == 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(bg)
					defer cancel()
				}
				for c.Send(ctx, s) == nil {
				}
			})
		}
		defer wg.Wait()
		defer c.Close()
		for k := range bursts {
			within(t, "waiting for a sender", k, func() error {
				for range 1 + k%3 {
					if _, err := c.Recv(bg); err != nil {
						return err
					}
				}
				return nil
			})
			time.Sleep(pauses[k%len(pauses)])
		}
	})
}

// A large item (built once, pushed by every attempt) waits for room in a full bounded channel,
// from Go and from Python, and arrives whole, once; one whose wait is cancelled is not sent.
func TestLargeItemWaitsForRoom(t *testing.T) {
	c := newChan(t, 1)
	big := bytes.Repeat([]byte("x"), 1000)
	require.NoError(t, c.Send(bg, "first"))
	sent := make(chan error, 1)
	go func() { sent <- c.Send(bg, big) }()
	time.Sleep(30 * time.Millisecond) // past its spin: asleep, waiting for room
	v, err := c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, "first", v)
	require.NoError(t, <-sent)
	v, err = c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, big, v)

	require.NoError(t, c.Send(bg, "full"))
	ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, c.Send(ctx, big), context.DeadlineExceeded)
	assert.Equal(t, 1, c.Len())

	i := newInterp(t)
	done := make(chan error, 1)
	go func() {
		done <- i.Exec(bg, fmt.Sprintf("import pyworkers\npyworkers.Channel(%d).send(b'y' * 1000)", c.ID()))
	}()
	time.Sleep(30 * time.Millisecond)
	v, err = c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, "full", v)
	require.NoError(t, <-done)
	v, err = c.Recv(bg)
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte("y"), 1000), v)
	assert.Equal(t, 0, c.Len())
}

// An interrupt that Python code caught is spent: a channel wait in its cleanup waits as asked
// instead of raising KeyboardInterrupt a second time.
func TestCaughtInterruptDoesNotEndTheNextWait(t *testing.T) {
	out, empty := newChan(t, 0), newChan(t, 0)
	i := newInterp(t)
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	err := i.Exec(ctx, fmt.Sprintf(`
import pyworkers
out = pyworkers.Channel(%d)
try:
    while True:
        pass
except KeyboardInterrupt:
    for wait in ("recv", "recv_many"):
        try:
            getattr(pyworkers.Channel(%d), wait)(timeout=0.05)
            out.send(wait + " returned")
        except TimeoutError:
            out.send(wait + " timed out")
        except KeyboardInterrupt:
            out.send(wait + " interrupted again")
`, out.ID(), empty.ID()))
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie, "the task was interrupted, though it caught the interrupt")
	for _, want := range []string{"recv timed out", "recv_many timed out"} {
		v, err := out.TryRecv()
		require.NoError(t, err)
		assert.Equal(t, want, v)
	}
}

// A send that fails to convert (a dict value that cannot cross) after the task's interrupt was
// caught raises TypeError: it did not take the interrupt that came before for one that stopped
// it and convert again, for good. Sync code that caught KeyboardInterrupt, and an async target's
// cancellation (no KeyboardInterrupt: the interrupt is a cancel request).
func TestFailedSendAfterACaughtInterruptRaisesTypeError(t *testing.T) {
	c := newChan(t, 0)
	for _, tc := range []struct{ name, code, target string }{
		{"caught KeyboardInterrupt", `
try:
    while True:
        pass
except KeyboardInterrupt:
    outcome = send()
`, ""},
		{"async cancellation", `
async def f():
    global outcome
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        outcome = send()
        raise
`, "__main__:f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
			require.NoError(t, err)
			require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import asyncio, pyworkers
ch = pyworkers.Channel(%d)
outcome = "-"
def send():
    try:
        ch.send({"a": object()})
        return "sent"
    except TypeError:
        return "TypeError"
`, c.ID())))
			ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				if tc.target == "" {
					done <- i.Exec(ctx, tc.code)
					return
				}
				if err := i.Exec(bg, tc.code); err != nil {
					done <- err
					return
				}
				_, err := i.Call(ctx, tc.target)
				done <- err
			}()
			select {
			case err = <-done:
			case <-time.After(time.Minute): // not a timing assertion: the send converts again for good
				ended, end := context.WithCancel(bg)
				end()
				i.CloseContext(ended) // its interrupts, repeated, end the loop
				<-done
				t.Fatal("the send did not return")
			}
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			v, err := i.Eval(bg, "outcome")
			require.NoError(t, err)
			assert.Equal(t, "TypeError", v)
			require.NoError(t, i.Close())
		})
	}
}

// Python threads that send and end take their encoding space with them: a worker whose code
// starts a thread per task does not grow by a buffer per thread.
func TestSendingThreadsLeaveNoMemory(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	const threads = 150 // each encodes 0.9 MB
	run := func() int64 {
		require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers, threading
def one():
    ch = pyworkers.Channel(%d)
    ch.send("x" * 900_000)
    ch.recv()
for _ in range(%d):
    t = threading.Thread(target=one)
    t.start()
    t.join()
`, c.ID(), threads)))
		rss, err := measure.RSS(os.Getpid())
		require.NoError(t, err)
		return rss
	}
	before := run() // the first round warms the allocator's arenas and thread stacks
	after := run()
	assert.Less(t, after-before, int64(threads*900_000/3), "RSS grew by %d MB", (after-before)>>20)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Go code that Python calls on the interpreter's thread (here its output writer) and that waits
// on a channel is interrupted with the task, as Python code would be; once: an interrupt that
// Python caught does not end the waits of its cleanup's output.
func TestGoWaitOnAnInterpretersThreadIsInterrupted(t *testing.T) {
	c := newChan(t, 0)
	for _, tc := range []struct {
		name, code string
		writerWait time.Duration // 0: no deadline of its own
		want       error
	}{
		{"interrupted while waiting", "print('waits for the channel', flush=True)", 0, channels.ErrInterrupted},
		{"caught before", "try:\n    while True: pass\nexcept KeyboardInterrupt:\n    print('cleaning up', flush=True)",
			50 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waited := make(chan error, 1)
			i := newInterpWith(t, cpython.InterpreterConfig{Stdout: writerFunc(func(p []byte) (int, error) {
				ctx := bg
				if tc.writerWait > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(bg, tc.writerWait)
					defer cancel()
				}
				_, err := c.Recv(ctx)
				waited <- err
				return len(p), nil
			})})
			ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
			defer cancel()
			var ie *cpython.InterruptedError
			assert.ErrorAs(t, i.Exec(ctx, tc.code), &ie)
			assert.ErrorIs(t, <-waited, tc.want)
		})
	}
}

// A receiver that cannot decode what it took (here: sys.modules['pyworkers'] replaced, so no
// Buffer can be made for a shared payload) puts it back: the next receiver gets it.
func TestItemsThatCannotBeDecodedStayInTheChannel(t *testing.T) {
	c := newChan(t, 3)
	i := newInterp(t)
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers, sys
ch = pyworkers.Channel(%d)
ch.send(b"x" * 70000)
ch.send_many([b"y" * 70000, 1])
me = sys.modules["pyworkers"]
sys.modules["pyworkers"] = sys
errors = []
for op in (ch.recv, ch.recv_many):
    try:
        op()
        errors.append("none")
    except RuntimeError:
        errors.append("RuntimeError")
sys.modules["pyworkers"] = me
got = [bytes(ch.recv(timeout=5)[:1]), [x if isinstance(x, int) else bytes(x[:1]) for x in ch.recv_many(timeout=5)]]
`, c.ID())))
	v, err := i.Eval(bg, "errors")
	require.NoError(t, err)
	assert.Equal(t, []any{"RuntimeError", "RuntimeError"}, v)
	v, err = i.Eval(bg, "got")
	require.NoError(t, err)
	assert.Equal(t, []any{[]byte("x"), []any{[]byte("y"), int64(1)}}, v, "in order, none lost")
	assert.Equal(t, 0, c.Len())
	require.NoError(t, c.Send(bg, "room"), "the capacity counts the items put back and taken again")
}

// An item Python's recv cannot decode (only a bug could send one) is dropped with ValueError,
// not put back for every receiver after it to fail on; recv_many puts the items taken with it
// back, in order.
func TestPythonRecvDropsAMalformedItem(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	malformed := []byte{'l', 3, 'N'} // a list of 3 that holds one item
	require.NoError(t, c.SendRaw(malformed))
	require.NoError(t, c.Send(bg, "a"))
	require.NoError(t, c.Send(bg, "b"))
	require.NoError(t, c.SendRaw([]byte{'N', 'x', 'y'})) // None, then bytes that are no value (Go's decoder refuses it too)
	require.NoError(t, c.Send(bg, "c"))
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
got = []
def step(f):
    try:
        got.append(f())
    except ValueError as e:
        got.append("ValueError")
step(ch.recv)                      # the malformed item: dropped
step(ch.recv)                      # "a"
step(lambda: ch.recv_many(10))     # "b", the malformed one, "c": dropped, "b" and "c" back
step(lambda: ch.recv_many(10, timeout=5))  # ["b", "c"] (a timeout: no hang if they were not put back)
`, c.ID())))
	got, err := i.Eval(bg, "got")
	require.NoError(t, err)
	assert.Equal(t, []any{"ValueError", "a", "ValueError", []any{"b", "c"}}, got)
	assert.Equal(t, 0, c.Len())
}

// Python's decoder, as Go's, cannot be made to allocate for more items than a malformed item
// holds bytes: 100 nested lists each claiming 100,000 items over 100,000 bytes are refused at
// the second list's length, not found short ("truncated") once 100 lists of 100,000 slots
// have been allocated. (tracemalloc, which could count that, cannot load in a subinterpreter.)
func TestPythonRecvOfNestedLengthClaims(t *testing.T) {
	c := newChan(t, 0)
	i := newInterp(t)
	var b []byte
	for range 100 {
		b = binary.AppendUvarint(append(b, 'l'), 100_000)
	}
	require.NoError(t, c.SendRaw(append(b, bytes.Repeat([]byte{'N'}, 100_000)...)))
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
try:
    ch.recv()
    outcome = "decoded"
except ValueError as e:
    outcome = str(e)
`, c.ID())))
	outcome, err := i.Eval(bg, "outcome")
	require.NoError(t, err)
	assert.Contains(t, outcome, "bad sequence length")
}

// Code of a task may run an interpreter of its own on the worker's thread (concurrent.interpreters):
// a channel wait there ends with the task's interrupt too, also when the interrupt came before
// the wait began (the interpreter's own code was running then).
func TestNestedInterpreterWaitEndsWithTheTasksInterrupt(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	for _, before := range []bool{false, true} {
		spin := 0.0
		if before {
			spin = 0.5 // the interrupt comes at 0.2 s, while the nested interpreter spins
		}
		ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
		done := make(chan error, 1)
		go func() {
			done <- i.Exec(ctx, fmt.Sprintf(`
from concurrent import interpreters
nested = interpreters.create()
try:
    nested.exec("""
import pyworkers, time
t = time.monotonic()
while time.monotonic() - t < %g:
    pass
pyworkers.Channel(%d).recv()
""")
finally:
    nested.close()
`, spin, c.ID()))
		}()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.DeadlineExceeded, "interrupt before the wait: %v", before)
		case <-time.After(time.Minute):
			t.Fatalf("the nested wait did not end (interrupt before the wait: %v)", before)
		}
		cancel()
	}
	assert.Equal(t, 0, c.Len())

	// the nested code catches the KeyboardInterrupt its wait got: the task is interrupted all
	// the same, when the nested interpreter hands control back
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	err := i.Exec(ctx, fmt.Sprintf(`
from concurrent import interpreters
nested = interpreters.create()
try:
    nested.exec("""
import pyworkers
try:
    pyworkers.Channel(%d).recv()
except KeyboardInterrupt:
    pass
""")
    after = "went on"
finally:
    nested.close()
`, c.ID()))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	v, err := i.Eval(bg, "'after' in globals()")
	require.NoError(t, err)
	assert.Equal(t, false, v, "the call went on after the nested interpreter returned")
}

// A value that takes the codec long (here one whose shared parts expand without end: it would
// never finish) is stopped by the task's interrupt in a channel's send, as a call's arguments
// and result are: the task gets one KeyboardInterrupt, nothing is sent, the interpreter goes on.
func TestInterruptStopsAChannelSendsConversion(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	for _, send := range []string{"ch.send(v)", "ch.send_many([v])"} {
		ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
		err := i.Exec(ctx, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
v = [0]
for _ in range(60):
    v = [v, v]  # 2**60 leaves
try:
    %s
except KeyboardInterrupt as e:
    caught, handled = getattr(e, "sent", "-"), False
    for _ in range(5_000_000):  # the interrupt came once: this runs to its end
        pass
    handled = True
    raise
`, c.ID(), send))
		cancel()
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie, send)
		assert.ErrorIs(t, err, context.DeadlineExceeded, send)
		handled, err := i.Eval(bg, "handled")
		require.NoError(t, err)
		assert.Equal(t, true, handled, "one interrupt, not a second in the handler: %s", send)
		caught, err := i.Eval(bg, "caught")
		require.NoError(t, err)
		want := any("-")
		if strings.Contains(send, "send_many") {
			want = int64(0)
		}
		assert.Equal(t, want, caught, send)
		assert.Equal(t, 0, c.Len(), send)
	}
}

// A busy receiver, which never waits and so keeps its GIL, loses no item to its interrupts:
// the interrupter, waiting for the GIL, is let in at the next receive, before it takes an item,
// not at the check Python makes as a receive returns (which lost the item with the frame in 1
// of 5 interrupts of "out.send(ch.recv())").
func TestBusyReceiverLosesNoItemToInterrupts(t *testing.T) {
	for _, body := range []string{"out.send(inq.recv())", "x = inq.recv()\n        out.send(x)", "out.send_many(inq.recv_many(2))", "for x in inq:\n            out.send(x)"} {
		in, out := newChan(t, 0), newChan(t, 0)
		const n = 1_000_000
		vs := make([]any, n)
		for k := range vs {
			vs[k] = int64(k)
		}
		_, err := in.SendMany(bg, vs)
		require.NoError(t, err)
		i := newInterp(t)
		require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
inq, out = pyworkers.Channel(%d), pyworkers.Channel(%d)
def pass_on():
    while True:
        %s
`, in.ID(), out.ID(), body)))
		for k := range 100 {
			ctx, cancel := context.WithTimeout(bg, time.Duration(500+k*10)*time.Microsecond)
			_, err := i.Call(ctx, "__main__:pass_on")
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded, body)
		}
		t.Logf("%q: %d of %d items left", body, in.Len(), n)
		require.NotZero(t, in.Len(), "%s: the receiver was busy to the end", body)
		assert.Equal(t, n, in.Len()+out.Len(), "%s: items lost to 100 interrupts", body)
		in.Release()
		out.Release()
	}
}

// A send whose conversion an interrupt stopped keeps nothing of it: the table of the shared
// buffers converted so far leaked with every stop (a few MiB each, here).
func TestInterruptedSendsConversionKeepsNothing(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
v = [pyworkers.Buffer(8)]
for _ in range(60):
    v = [v, v]  # 2**60 references to one buffer
`, c.ID())))
	for _, send := range []string{"ch.send(v)", "ch.send_many([v])"} {
		rss := func() int64 {
			n, err := measure.RSS(0)
			require.NoError(t, err)
			return n
		}
		var first int64
		for round := range 6 {
			if round == 1 {
				first = rss() // the first round may grow what is reused after
			}
			for range 10 {
				ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
				err := i.Exec(ctx, send)
				cancel()
				require.ErrorIs(t, err, context.DeadlineExceeded, send)
			}
		}
		grew := rss() - first
		assert.Less(t, grew, int64(16<<20), "%s: resident set grew by %d MiB over 50 interrupted sends", send, grew>>20)
		assert.Equal(t, 0, c.Len(), send)
	}
}

// A value that cannot be sent is a TypeError whose path names a dict key by its own text: the
// key's __repr__ is not run (on an error's path it could hang, or take the task's interrupt).
func TestKeysReprIsNotRun(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
class Key(str):
    def __repr__(self):
        raise RuntimeError("repr ran")
try:
    ch.send({Key("k"): object()})
except TypeError as e:
    said = str(e)
`, c.ID())))
	said, err := i.Eval(bg, "said")
	require.NoError(t, err)
	assert.Contains(t, said, `["k"]`)
	assert.Contains(t, said, "'object'")
	assert.Equal(t, 0, c.Len())
}

// A finalizer that the interpreter's end runs after it has cleared its modules (the last
// collection: here of an object in a cycle that only sys held) may still receive a shared
// buffer: that is an error it may catch, not the end of the process.
func TestBufferReceivedAsTheInterpreterEnds(t *testing.T) {
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	c, said := newChan(t, 0), newChan(t, 0)
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import sys, pyworkers
class Late:
    def __del__(self):  # builtins are gone by then: no names but self's
        try:
            self.ch.recv_nowait()
            self.said.send("received")
        except self.Exception as e:
            self.said.send(e.__class__.__name__)
late = Late()
late.ch, late.said, late.me, late.Exception = pyworkers.Channel(%d), pyworkers.Channel(%d), late, Exception
late.ch.send(pyworkers.Buffer(8))
sys.pw_late = late
del late
`, c.ID(), said.ID())))
	require.NoError(t, i.Close())
	v, err := said.TryRecv()
	require.NoError(t, err, "the finalizer ran")
	assert.Equal(t, "RuntimeError", v)
}

// An async call's cancellation is a CancelledError at its task's next await, not a
// KeyboardInterrupt, also when it comes while a task converts a channel's value (and the
// conversion stops): the interrupt asks the loop to cancel and injects nothing, so the
// conversion runs again. Escalation to KeyboardInterrupt after 50 ms aside: here the loop takes
// the cancellation within a few ms (Go drains the channel). The value is just big enough for the
// codec to poll for interrupts (300,000 items took up to 60 ms a send under -race on a loaded
// machine: past the escalation); five tries for an interrupt that lands in a conversion.
func TestAsyncCancellationDuringAChannelConversionIsACancellation(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := c.Recv(bg); err != nil {
				return
			}
		}
	}()
	defer func() { c.Close(); <-drained }()
	require.NoError(t, i.Exec(bg, fmt.Sprintf(`
import asyncio, pyworkers
ch = pyworkers.Channel(%d)
big = list(range(100_000))  # past the 64k values after which the codec polls for an interrupt
seen = None

async def child():
    global seen
    try:
        while True:
            ch.send(big)
            await asyncio.sleep(0)
    except BaseException as e:
        seen = type(e).__name__
        raise

async def main():
    await asyncio.create_task(child())
`, c.ID())))
	for range 5 {
		ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
		_, err := i.Call(ctx, "__main__:main")
		cancel()
		var ie *cpython.InterruptedError
		require.ErrorAs(t, err, &ie)
		seen, err := i.Eval(bg, "seen")
		require.NoError(t, err)
		assert.Equal(t, "CancelledError", seen)
	}
}

// A batch of many items, each too small for the codec's first poll (64k values), is stopped by
// the task's interrupt like one huge value: send_many raises it with .sent = 0 rather than
// converting all of them first; recv_many puts what it took back.
func TestInterruptStopsAChannelBatchOfSmallItems(t *testing.T) {
	i := newInterp(t)
	c := newChan(t, 0)
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	err := i.Exec(ctx, fmt.Sprintf(`
import pyworkers
ch = pyworkers.Channel(%d)
item = [None] * 60_000  # below the first poll
caught = None
try:
    ch.send_many([item] * 5_000)  # 300 M values: far longer to convert than the 100 ms
except KeyboardInterrupt as e:
    caught = getattr(e, "sent", "-")
    raise
`, c.ID()))
	var ie *cpython.InterruptedError
	require.ErrorAs(t, err, &ie)
	caught, err := i.Eval(bg, "caught")
	require.NoError(t, err)
	assert.Equal(t, int64(0), caught)
	assert.Equal(t, 0, c.Len())

	small := make([]any, 60_000)
	for range 400 {
		require.NoError(t, c.Send(bg, small))
	}
	ctx, cancel = context.WithTimeout(bg, 30*time.Millisecond)
	defer cancel()
	err = i.Exec(ctx, fmt.Sprintf(`
while True:
    pyworkers.Channel(%d).recv_many(400)  # 24 M values: longer to make than the 30 ms
`, c.ID()))
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, 400, c.Len(), "what recv_many took went back")
}
