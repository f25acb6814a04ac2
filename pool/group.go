package pool

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyworkers/pyworkers/channels"
	"github.com/pyworkers/pyworkers/cpython"
)

// Group is a set of workers with the same set-up and one queue: the pool's default group, or a
// named one (Options.Groups). All methods are safe for concurrent use.
type Group struct {
	p     *Pool
	name  string
	spec  GroupOptions
	tasks *channels.Channel // task numbers (see taskTable), waited on by the workers in C with their GILs released
	table taskTable
	room  chan struct{} // one token per waiting task when QueueSize bounds them (else nil)

	queued atomic.Int64 // tasks submitted and not yet claimed by a worker or a canceller
	// meanBusy is a moving average of how long the group's tasks ran, in ns (approximate: two
	// workers may update it at once and one update is then lost). See crowded.
	meanBusy atomic.Int64

	submitted, done, failed, cancelled, recycles atomic.Uint64
	alive                                        atomic.Int64
	ending                                       atomic.Int64 // endInBackground's and retire's, not yet ended
	givenUp                                      atomic.Int64 // retire's, not yet ended (of ending); changed under deferMu
	restartFailures                              atomic.Uint64
	restartErr                                   atomic.Pointer[string] // the last failed restart's, nil since a start succeeded
	// down counts the slots whose last downAfter starts or more all failed: when that is every
	// slot, the group is down (see downErr).
	down atomic.Int64

	mu      sync.Mutex
	workers []*worker   // the interpreter serving each slot now (nil while it starts)
	slots   []slotStats // per slot, made with the group

	// deferred holds the slots whose replacement waits for a given-up worker to end: while as
	// many workers as the group has slots are given up, another one's slot stays empty (see
	// retire). Under deferMu, as givenUp's changes are.
	deferMu  sync.Mutex
	deferred []int
}

type slotStats struct {
	tasks atomic.Uint64
	busy  atomic.Int64 // ns
}

// Name is the group's name ("" for the default group).
func (g *Group) Name() string { return g.name }

// Call runs target with args on one of the group's workers; see Pool.Call.
func (g *Group) Call(ctx context.Context, target string, args ...any) (any, error) {
	return g.call(ctx, target, opCall, args)
}

// Submit queues a call and returns its Future; see Pool.Submit.
func (g *Group) Submit(ctx context.Context, target string, args ...any) (*Future, error) {
	return g.submitCall(ctx, target, args, g.p.opts.FailFast)
}

func (g *Group) submitCall(ctx context.Context, target string, args []any, failFast bool) (*Future, error) {
	tk, err := g.submit(ctx, target, opCall, args, nil, failFast)
	if err != nil {
		return nil, err
	}
	tk.watch()
	return &Future{t: tk}, nil
}

// call queues an operation and waits for its outcome. The caller is the task's watcher (no
// watch of the pool's own per task, and none of cpython's while it runs): when ctx ends its
// wait ends, and it cancels the task itself.
func (g *Group) call(ctx context.Context, target string, op taskOp, args []any) (any, error) {
	tk, err := g.submit(ctx, target, op, args, nil, g.p.opts.FailFast)
	if err != nil {
		return nil, err
	}
	v, err := tk.wait(ctx)
	if err != nil && ctx.Err() != nil {
		tk.cancel()
	}
	return v, err
}

// submit queues a task that a worker runs on its thread (see task.exec); target names it in
// errors. Someone must cancel the task when ctx ends: its caller (see call), or a watch armed
// once it is queued (task.watch: a watch that fires at once finds it there). With failFast (the
// pool's FailFast, for its callers' Call, Submit and SubmitBatch) a full queue is ErrQueueFull
// at once; Map's batches, and the calls of an accepted batch run one by one, wait for room
// instead: they are part of work already accepted.
func (g *Group) submit(ctx context.Context, target string, op taskOp, args []any, items [][]any, failFast bool) (*task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if g.p.closing.Load() {
		return nil, ErrClosed
	}
	if err := g.downErr(); err != nil {
		return nil, err
	}
	if err := g.enter(ctx, failFast); err != nil {
		return nil, err
	}
	tk := newTask(g, ctx, target, op, args, items)
	n := g.table.put(tk)
	g.submitted.Add(1) // before a worker can count it done (see Stats)
	var err error
	if failFast {
		err = g.tasks.TrySend(n)
	} else {
		err = g.tasks.Send(ctx, n) // waits only when cancelled tasks fill it (handleBound)
	}
	if err != nil {
		g.table.take(n)
		g.submitted.Add(^uint64(0))
		g.leave()
		switch {
		case errors.Is(err, channels.ErrClosed):
			return nil, ErrClosed
		case errors.Is(err, channels.ErrFull):
			return nil, ErrQueueFull
		}
		return nil, err
	}
	if err := g.downErr(); err != nil && tk.claim() { // down since the check above: failQueued may have missed it
		tk.fail(err)
	}
	return tk, nil
}

// enter counts a task into the queue depth, waiting for room in a bounded queue (or, with
// failFast, failing at once when there is none). Every task that entered leaves once: when it
// is claimed, or when it could not be queued after all.
func (g *Group) enter(ctx context.Context, failFast bool) error {
	if g.room == nil {
		g.queued.Add(1)
		return nil
	}
	select {
	case g.room <- struct{}{}:
		g.queued.Add(1)
		return nil
	default:
	}
	if failFast {
		return ErrQueueFull
	}
	select {
	case g.room <- struct{}{}:
		g.queued.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-g.p.closed:
		return ErrClosed
	}
}

func (g *Group) leave() {
	g.queued.Add(-1)
	if g.room != nil {
		<-g.room
	}
}

// Check imports target's module and finds the function on one of the group's workers without
// calling it: a target that cannot be imported fails here, before any work is queued.
func (g *Group) Check(ctx context.Context, target string) error {
	_, err := g.call(ctx, target, opResolve, nil)
	return err
}

// Args is an input of Map spread into positional arguments (a final cpython.Kwargs into keyword
// arguments); a cpython.Kwargs input is keyword arguments alone (as Args{kw} is), and any other
// input is passed as the one argument. Map keeps an input until its batch
// has been sent: an iterator must not change an Args it has yielded (refill one slice for the
// next input); yielding the same unchanged one again is fine.
type Args []any

// Map sends inputs in batches sized by a BatchSizer (one hand-off each, see SubmitBatch) and
// keeps up to mapWindow batches per worker in flight: enough that the oldest is usually done
// when Map waits for it, few enough that memory stays bounded.
const mapWindow = 4

// Map calls target once for each input and yields the results in input order. It sends the
// inputs to the workers in batches (see SubmitBatch) sized to about a millisecond of a worker's
// time, by the time the calls so far took on the workers: single calls at first and for slow
// functions, up to 32 calls for tiny ones. It keeps at most 4 batches per worker in flight, so
// memory stays bounded however many inputs there are. Inputs are pulled one at a time, never
// while the loop body runs (with iter.Pull: the iterator runs on a goroutine of its own, which
// the caller's hands over to and waits for, so an iterator must not depend on which goroutine
// runs it, as one that locks its OS thread would); results already done are
// yielded before another batch is filled, and a batch being filled goes out after a
// millisecond even when short, so a slow iterator holds results back by one input at most. An iterator must
// not wait for a result of the same Map (a feedback loop): Map waits for that input first. A
// bounded queue makes Map wait for room, FailFast or not. Stopping the iteration early cancels
// the calls in flight. Cancelling ctx ends it (once the iterator returns from a pull under way)
// with errors wrapping ctx.Err() for the calls in flight, and pulls no more inputs. When the
// pool closes under a batch, the calls of it that finished still yield their results (see
// BatchFuture.Wait), the others ErrClosed, and no more inputs are pulled. Either way, after the
// calls in flight, a last pair (nil, error wrapping ctx.Err() or ErrClosed) says that Map
// stopped pulling inputs before they ran out (also when ctx had ended, or the pool closed,
// before the first; and after a batch the group refused); an iteration that ends without one
// had every input. While the group is
// down (ErrNoWorkers), the inputs of the batches in flight get that error, and Map ends with
// the first batch the group refuses.
func (g *Group) Map(ctx context.Context, target string, inputs iter.Seq[any]) iter.Seq2[any, error] {
	return func(yield func(any, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		next, stop := iter.Pull(inputs)
		defer stop()
		window := mapWindow * max(g.spec.Workers, 1)
		type pending struct {
			b   *BatchFuture
			n   int
			err error
		}
		fifo := make([]pending, 0, window)
		headDone := func() bool { return len(fifo) > 0 && (fifo[0].err != nil || fifo[0].b.done()) }
		more := true
		var cut error // why inputs stopped being pulled before they ran out: ctx's end, Close
		var sizer BatchSizer
		// late says the batch being filled has taken mapFill: a timer armed for each batch's
		// filling, not a clock read per input (a tenth of a tiny call's cost). One that fired
		// for the batch before, as it was stopped, only sends the next one a little early.
		var late atomic.Bool
		fillTimer := time.AfterFunc(time.Hour, func() { late.Store(true) })
		defer fillTimer.Stop()
		for {
			size := sizer.Size()
			for more && len(fifo) < window && !headDone() {
				items := make([][]any, 0, size)
				var ones []any // one backing array for the batch's single arguments
				late.Store(false)
				fillTimer.Reset(mapFill)
				for len(items) < size {
					if ctx.Err() != nil || g.p.closing.Load() {
						more = false // nothing more is pulled (the batches in flight still yield)
						if cut = ctx.Err(); cut == nil {
							cut = ErrClosed
						}
						break
					}
					// the inputs come slowly: out with what there is, before the next pull
					// (which may take long: a burst of inputs, then a slow one)
					if len(items) > 0 && late.Load() {
						break
					}
					in, ok := next()
					if !ok {
						more = false
						break
					}
					if a, ok := in.(Args); ok {
						items = append(items, a)
						continue
					}
					if ones == nil {
						ones = make([]any, size)
					}
					k := len(items)
					ones[k] = in
					items = append(items, ones[k:k+1:k+1])
				}
				fillTimer.Stop() // a timer left to fire would cost a goroutine per batch
				if len(items) == 0 {
					break
				}
				b, err := g.submitBatch(ctx, target, items, false)
				fifo = append(fifo, pending{b: b, n: len(items), err: err})
				if err != nil {
					more, cut = false, err // cancelled, closed or down: the inputs after these get no calls
				}
			}
			if len(fifo) == 0 {
				if cut != nil { // inputs were left: a last pair says so, not a silent end
					yield(nil, fmt.Errorf("pool: Map ended before its inputs did: %w", cut))
				}
				return
			}
			p := fifo[0]
			copy(fifo, fifo[1:])
			fifo = fifo[:len(fifo)-1]
			var results []Result
			err := p.err
			if err == nil {
				results, err = p.b.Wait(ctx)
			}
			switch {
			case err == nil:
				sizer.Observe(p.b)
			case results == nil: // with results: the pool closed under it, which of its calls finished
				results = fill(p.n, err)
			}
			for _, r := range results {
				if !yield(r.Value, r.Err) {
					return
				}
			}
		}
	}
}

// mapFill is the longest Map fills a batch before it sends what it has: the time a batch is
// sized to run (see BatchSizer).
const mapFill = time.Millisecond

// Map calls target for each input on the default group; see Group.Map.
func (p *Pool) Map(ctx context.Context, target string, inputs iter.Seq[any]) iter.Seq2[any, error] {
	return p.def.Map(ctx, target, inputs)
}

// ---- tasks and futures

const (
	stateQueued  int32 = iota
	stateClaimed       // a worker or a canceller owns it
	stateDone          // val and err are set
)

// What a task asks its worker to do.
type taskOp int

const (
	opCall     taskOp = iota // call target with args
	opCallMany               // call target once per item (SubmitBatch)
	opResolve                // import and find target without calling it (Check)
)

type task struct {
	g      *Group
	ctx    context.Context
	target string
	op     taskOp
	args   []any
	items  [][]any

	state atomic.Int32
	// res is the channel a first waiter waits on in C, made when that wait begins (a task that is
	// done before anyone waits for it, as with a loop over many Submits, never needs one);
	// finish takes it and sends the one item that wakes the waiter at once. finishedRes once done.
	res  atomic.Pointer[channels.Channel]
	val  any
	err  error
	busy time.Duration                 // how long it ran on its worker (0: it never ran), set before done
	late bool                          // it ran and ended after its context had (see Future.Late), set before done
	done atomic.Pointer[chan struct{}] // closed when done; made on first use: see doneChan

	waiting   atomic.Bool            // a Wait owns res's signal (the first one, until it gives up)
	worker    atomic.Pointer[worker] // the worker running it
	stopWatch atomic.Pointer[func() bool]
	// grace gives its worker up InterruptGrace after a cancel of the running task; stopped when
	// the task ends first, so that it does not hold the task (its arguments and result), the
	// worker and the pool that long.
	grace atomic.Pointer[time.Timer]
}

// resultChans recycles the one-slot channels tasks signal completion on (see task.res).
var resultChans sync.Pool

// finishedRes is a done task's res: a waiter that comes later needs no channel.
var finishedRes = new(channels.Channel)

func newTask(g *Group, ctx context.Context, target string, op taskOp, args []any, items [][]any) *task {
	return &task{g: g, ctx: ctx, target: target, op: op, args: args, items: items}
}

// signal returns the channel the task's finish will send its item on, making it now if no
// waiter has; nil once the task is done (its outcome is there: no wait is needed), or when no
// channel could be made (out of memory: the caller waits in Go instead).
func (tk *task) signal() *channels.Channel {
	c := tk.res.Load()
	if c == nil {
		fresh, _ := resultChans.Get().(*channels.Channel)
		if fresh == nil {
			var err error
			if fresh, err = channels.New(1); err != nil {
				return nil
			}
		}
		if tk.res.CompareAndSwap(nil, fresh) {
			return fresh
		}
		resultChans.Put(fresh) // finish came first (an earlier waiter's channel would be found above)
		c = tk.res.Load()
	}
	if c == finishedRes {
		return nil
	}
	return c
}

// exec does what the task asks, on its worker's thread.
func (tk *task) exec(t *cpython.Thread) (any, error) {
	switch tk.op {
	case opCallMany:
		return t.CallMany(tk.ctx, tk.target, tk.items)
	case opResolve:
		return nil, t.Resolve(tk.ctx, tk.target)
	}
	return t.Call(tk.ctx, tk.target, tk.args...)
}

// watch arranges for cancel to run when the task's context ends.
func (tk *task) watch() {
	if tk.ctx.Done() == nil {
		return
	}
	stop := context.AfterFunc(tk.ctx, tk.cancel)
	tk.stopWatch.Store(&stop)
	if tk.state.Load() == stateDone {
		stop()
	}
}

// cancel is what happens when the task's context ends: a queued task leaves the queue at once
// (a worker that pops it later skips it); a running one is interrupted (the workers'
// interpreters leave that to the pool: cpython.InterpreterConfig.ExternalInterrupts), and its
// worker is given up if it has not stopped after InterruptGrace. A worker that has claimed the
// task but not started it yet finds the context ended and does not start it.
func (tk *task) cancel() {
	if tk.claim() {
		tk.args, tk.items = nil, nil // its number may wait in the queue a while: hold no arguments meanwhile
		tk.drop(tk.ctx.Err())
		return
	}
	if tk.state.Load() == stateDone {
		return
	}
	if w := tk.worker.Load(); w != nil {
		// the timer first: the task may end as soon as the interrupt lands, and run stops it then
		tk.grace.Store(time.AfterFunc(tk.g.p.opts.InterruptGrace, func() {
			// Take the task from the worker: either this or run's own CAS wins, never both.
			if w.current.CompareAndSwap(tk, nil) {
				w.retire()
			}
		}))
		go w.in.InterruptContext(tk.ctx) // it waits for the worker's GIL: not on the caller's time
	}
}

// claim takes a queued task for a worker or a canceller: true for exactly one caller, which then
// owns it. The task stops waiting: it leaves the queue depth and gives back its room.
func (tk *task) claim() bool {
	if !tk.state.CompareAndSwap(stateQueued, stateClaimed) {
		return false
	}
	tk.g.leave()
	return true
}

// drop ends a task that did not run (cancelled while queued, or ended by Close) with err,
// counted as cancelled: every accepted task is counted once as done, failed or cancelled.
func (tk *task) drop(err error) {
	tk.g.cancelled.Add(1)
	tk.finish(nil, err)
}

// fail ends a task that did not run with err, counted as failed (Close's and cancellation's
// are drop's).
func (tk *task) fail(err error) {
	tk.args, tk.items = nil, nil
	tk.g.failed.Add(1)
	tk.finish(nil, err)
}

// finish records the outcome, once, by the task's owner (the worker or the canceller).
func (tk *task) finish(val any, err error) {
	tk.val, tk.err = val, err
	tk.state.Store(stateDone)
	// State first, then the watch (watch does the reverse): one of the two sees the other and
	// stops the watch, so that it never outlives the task on a long-lived context.
	if stop := tk.stopWatch.Load(); stop != nil {
		(*stop)()
	}
	if c := tk.res.Swap(finishedRes); c != nil {
		// Before done closes: a waiter woken by done finds the signal to take. A channel the
		// signal cannot go into (no memory for it in C) is closed instead, which wakes the
		// waiter as well; it then finds the task done.
		if c.TrySend(nil) != nil {
			c.Close()
		}
	}
	if c := tk.done.Swap(&closedChan); c != nil {
		close(*c)
	}
}

// doneChan is closed when the task is done. Only Future.Done, a second Wait and a Wait parked in
// Go need one, so it is made on first use rather than for every task: a Call (first Wait, in C)
// never makes it. Either it is made before finish, which closes it, or it is closedChan.
func (tk *task) doneChan() <-chan struct{} {
	for {
		if c := tk.done.Load(); c != nil {
			return *c
		}
		c := make(chan struct{})
		if tk.done.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// closedChan is every finished task's doneChan.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// takeTask turns an item of the group's queue back into its task (nil for anything else).
func (g *Group) takeTask(v any) *task {
	n, ok := v.(int64)
	if !ok {
		return nil
	}
	return g.table.take(n)
}

// taskTable numbers the tasks in a group's queue: the C queue carries the number (C keeps no Go
// pointer) and the worker that receives it takes the task back. Numbers are reused, so they
// stay as small as the number of tasks queued at once, and a number below 256 crosses with no
// allocation at all (cgo.Handle, used before, cost 2-3 allocations per task on a round trip).
// The table grows to the most tasks queued at once (16 bytes each) and lets that memory go when
// it is empty again, past tableKeep slots.
type taskTable struct {
	mu    sync.Mutex
	slots []*task
	free  []int64 // unused slots' numbers
}

func (t *taskTable) put(tk *task) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := len(t.free); k > 0 {
		n := t.free[k-1]
		t.free = t.free[:k-1]
		t.slots[n] = tk
		return n
	}
	t.slots = append(t.slots, tk)
	return int64(len(t.slots) - 1)
}

// take returns task n and frees its number; nil when n holds no task.
func (t *taskTable) take(n int64) *task {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n < 0 || n >= int64(len(t.slots)) || t.slots[n] == nil {
		return nil
	}
	tk := t.slots[n]
	t.slots[n] = nil
	t.free = append(t.free, n)
	if len(t.free) == len(t.slots) && len(t.slots) > tableKeep {
		t.slots, t.free = nil, nil // empty after a burst: no number is out, start afresh
	}
	return tk
}

// tableKeep is how many slots an empty taskTable keeps (4096 × 16 bytes).
const tableKeep = 4096

// Future is the pending result of a submitted call. Its methods are safe for concurrent use.
type Future struct {
	t *task
}

// Wait returns the call's result, waiting for it. If ctx ends first, Wait returns an error
// wrapping ctx.Err() (the task goes on unless its own context, given to Submit, ends too); a
// result that is there by then is returned instead. A task whose worker was given up (see
// Options.InterruptGrace) is done only when its call returns, which a call blocked in C may
// never do: Wait with a context that ends (the task's own, say) to hear of it.
//
// How it waits: a result that is there is returned at once. Otherwise the first waiter of a task
// waits in C on a one-slot channel it gives the task (recycled from earlier tasks), spinning for up
// to 20 µs and then asleep, woken directly by the worker (a tiny call's round trip is then
// 3-5 µs). Each such waiter holds an OS thread, so at most 256 wait in C at once, process-wide;
// past that, a first waiter spins in C and then parks on done. Further waiters of the same
// task park on done at once, and so does a first waiter when as many waiters as GOMAXPROCS
// wait in C already and the group's tasks take under 50 µs on average (many goroutines calling
// tiny functions: see crowded). Parking is otherwise for extreme
// concurrency only: Go's runtime would end the process at 10,000 threads (debug.SetMaxThreads),
// and a goroutine readied by a worker waits in the worker's P until sysmon takes that P back,
// up to 10 ms on an otherwise quiet process (parking from 3 waiters up on 2 cores cut the CPU
// speed-up of 4 calls of 25 ms from 1.9-2.0x to 1.4-1.6x).
func (f *Future) Wait(ctx context.Context) (any, error) { return f.t.wait(ctx) }

func (tk *task) wait(ctx context.Context) (any, error) {
	if tk.state.Load() == stateDone {
		return tk.val, tk.err
	}
	// The first waiter takes the task's signal, so that its channel can serve another task.
	if tk.g.crowded() || !tk.waiting.CompareAndSwap(false, true) {
		return tk.waitInGo(ctx)
	}
	c := tk.signal()
	if c == nil {
		tk.waiting.Store(false)
		return tk.waitInGo(ctx) // done by now, as a rule
	}
	if cWaiters.Add(1) <= cWaitersMax.Load() {
		_, err := c.Recv(ctx)
		cWaiters.Add(-1)
		if err == nil {
			return tk.recycle(c)
		}
	} else {
		cWaiters.Add(-1)
		if _, err := c.TrySpinRecv(); err == nil {
			return tk.recycle(c)
		}
		tk.park(ctx)
	}
	// The task is done (finish sends the signal before it closes done) or ctx ended: a result
	// that is there wins.
	if _, err := c.TryRecv(); err == nil {
		return tk.recycle(c)
	}
	if ctx.Err() == nil {
		// The wait in C failed otherwise (no memory for it, or finish closed the channel): wait
		// in Go instead.
		tk.park(ctx)
		if _, err := c.TryRecv(); err == nil {
			return tk.recycle(c)
		}
	}
	tk.waiting.Store(false)
	if tk.state.Load() == stateDone { // done before its signal came: the channel is not reused
		return tk.val, tk.err
	}
	return nil, tk.wrapCtx(ctx)
}

// waitInGo parks until the task is done or ctx ends; a result that is there by then wins (also
// one whose done is not closed yet).
func (tk *task) waitInGo(ctx context.Context) (any, error) {
	tk.park(ctx)
	if tk.state.Load() == stateDone {
		return tk.val, tk.err
	}
	return nil, tk.wrapCtx(ctx)
}

// crowded reports whether a first waiter should park in Go rather than wait in C: when at least
// as many Waits as the process has Ps (GOMAXPROCS when the pool was made; at most cWaitersMax)
// wait in C already, those of every pool and group of the process, and this group's tasks are
// tiny (tinyTask). A soft limit: waiters that begin at once may all find room. Threads waiting in C, each woken for its result and then
// needing a Go P to go on, take the Ps and cores from the workers that produce the results: 64
// goroutines calling a no-op on 2 workers made 42-73 k calls/s all waiting in C, 188-201 k with
// the waiters past 2 parked. One goroutine waiting for many tasks in turn (Map; a loop over
// Submits' futures) is one waiter, and waits in C unless that many others do: parked, Map made
// 1.19-1.41 M calls/s instead of 1.46-1.63 M. A goroutine a worker readies waits on that worker's P until another P takes it,
// or the worker's next wait in C lets the P go: with tiny tasks soon; behind a long task for up
// to a sysmon tick (20 µs to 10 ms), which is why long tasks' waiters stay in C. The choice is
// made when the wait begins: after a switch from tiny tasks to long ones, waits begun before
// the first long task ended stay parked.
func (g *Group) crowded() bool {
	return cWaiters.Load() >= min(g.p.procs, cWaitersMax.Load()) && g.meanBusy.Load() < int64(tinyTask)
}

// tinyTask is the mean task time below which crowded waiters park in Go: at 50 µs, a pool of 2
// workers makes 40 k results/s, near what 64 waiters in C took on 2 cores.
const tinyTask = 50 * time.Microsecond

// park waits in Go until the task is done or ctx ends.
func (tk *task) park(ctx context.Context) {
	select {
	case <-tk.doneChan():
	case <-ctx.Done():
	}
}

// cWaiters counts the Waits waiting in C now, process-wide; at most cWaitersMax do.
var cWaiters, cWaitersMax atomic.Int32

func init() { cWaitersMax.Store(256) }

// recycle gives the task's result channel c, its signal taken, to later tasks (finish has let
// go of it); it returns the outcome.
func (tk *task) recycle(c *channels.Channel) (any, error) {
	if tk.state.Load() == stateDone { // always so: the signal follows the result
		resultChans.Put(c)
	}
	return tk.val, tk.err
}

func (tk *task) wrapCtx(ctx context.Context) error {
	return fmt.Errorf("pool: %s: %w", tk.target, ctx.Err())
}

// Done is closed when the result is ready.
func (f *Future) Done() <-chan struct{} { return f.t.doneChan() }

// Late reports whether the call ended only after its context (Submit's) had ended: it caught
// its interrupt and went on, or it ended as its deadline passed, before the interrupt reached
// it. Its outcome is then whatever the call gave, which a caller that holds to the deadline may
// want to refuse. It is decided on the worker when the call ends, so a waiter that is itself
// slow to go on does not make an outcome late. False while the call is not done, and for a
// call that did not run.
func (f *Future) Late() bool { return f.t.isLate() }

// isLate is Future.Late of the task.
func (tk *task) isLate() bool { return tk.state.Load() == stateDone && tk.late }

// ---- workers

type worker struct {
	g       *Group
	id      int
	in      *cpython.Interpreter
	retired atomic.Bool
	current atomic.Pointer[task]
	tasks   int
	limit   int // tasks before it is recycled (0: never); see taskLimit
}

// taskLimit is a new worker's task limit for MaxTasksPerWorker max: from 90 % of max to max,
// drawn for each worker. Workers that share a queue do nearly the same number of tasks: with
// one limit they would all be recycled at once, and the group would serve nothing while the
// replacements ran their set-up (a model to load); spread out, they are replaced one by one.
func taskLimit(max int) int {
	if max < 10 {
		return max
	}
	return max - rand.IntN(max/10+1)
}

type endReason int

const (
	endStop    endReason = iota // the queue is closed: the pool is closing
	endRecycle                  // task limit, or a fatal condition: start a fresh interpreter
	endRetired                  // given up on (stuck after an interrupt): a replacement runs already
	endBroken                   // could not wait for work: start a fresh interpreter after a pause
)

// startSlot starts a goroutine that keeps slot id of g filled (runSlot), unless the pool is
// closing: a replacement asked for while Close runs (retire) must not add to the slots Close
// waits for once its wait may have begun.
//
// With ready (a first start, from New), ctx governs that start, and end the end of a worker
// that fails it (ready has its error first); otherwise the pool's restarts does both.
func (p *Pool) startSlot(ctx, end context.Context, g *Group, id int, ready func(error)) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	if p.closing.Load() {
		if ready != nil {
			ready(ErrClosed)
		}
		return
	}
	p.slots.Add(1)
	go func() {
		defer p.slots.Done()
		g.runSlot(ctx, end, id, ready)
	}()
}

// downAfter is how many starts in a row a slot fails before it counts as down: with every slot
// of a group down, calls to it fail at once (downErr) rather than wait for a worker that may
// never come; a start that fails once or twice, as a file being replaced can make it, does not
// fail them (the third comes 150 ms or more after the first, plus the starts' own time).
const downAfter = 3

// downErr is the error every call to the group gets while it is down — each of its slots failed
// its last downAfter starts or more — and nil while it is not. The slots keep trying (see
// runSlot): calls succeed again once one starts.
func (g *Group) downErr() error {
	if g.down.Load() < int64(len(g.slots)) {
		return nil
	}
	msg := g.restartErr.Load()
	if msg == nil { // a slot has started since
		return nil
	}
	return fmt.Errorf("%w: group %q: each of its %d workers failed to restart %d times or more in a row, the last time with: %s",
		ErrNoWorkers, g.name, len(g.slots), downAfter, *msg)
}

// failQueued ends the tasks waiting in the group's queue with downErr's error, when the group is
// down: no worker takes them. A task queued after it sees that itself (submit).
func (g *Group) failQueued() {
	for err := g.downErr(); err != nil; err = g.downErr() {
		tk, ok := g.takeQueued()
		if !ok {
			return
		}
		if tk != nil {
			tk.fail(err)
		}
	}
}

// takeQueued claims the next task in the group's queue, for a caller that ends it without
// running it: ok is false when the queue is empty, tk nil for a task someone else has claimed
// (cancelled while queued).
func (g *Group) takeQueued() (tk *task, ok bool) {
	v, err := g.tasks.TryRecv()
	if err != nil {
		return nil, false
	}
	if tk = g.takeTask(v); tk != nil && tk.claim() {
		return tk, true
	}
	return nil, true
}

// runSlot keeps slot id of the group filled with a working interpreter until the pool closes.
func (g *Group) runSlot(ctx, end context.Context, id int, ready func(error)) {
	const firstPause, lastPause = 50 * time.Millisecond, 5 * time.Second
	pause := firstPause
	fails := 0 // starts failed in a row
	// wait pauses before the next start after a failure, longer each time; false if the pool
	// closed meanwhile.
	wait := func() bool {
		t := time.NewTimer(pause)
		defer t.Stop()
		pause = min(2*pause, lastPause)
		select {
		case <-t.C:
			return true
		case <-g.p.closed:
			return false
		}
	}
	for !g.p.closing.Load() {
		report := ready
		if report == nil {
			report = func(error) {}
		}
		w, err := g.startWorker(ctx, end, id, report)
		ctx, end = g.p.restarts, g.p.restarts // restarts: until Close begins
		if ready != nil {
			ready = nil
			if err != nil {
				return
			}
		}
		if err != nil { // a restart failed (its set-up raised?): try again, slower each time
			if !g.p.closing.Load() { // not the close interrupting it
				msg := err.Error()
				g.restartErr.Store(&msg)
				g.restartFailures.Add(1)
				if fails++; fails == downAfter {
					g.down.Add(1)
				}
				g.failQueued() // when that made the group down, or it was down already
			}
			if !wait() {
				return
			}
			continue
		}
		if fails >= downAfter {
			g.down.Add(-1) // before the error goes: downErr needs both
		}
		fails = 0
		g.restartErr.Store(nil)
		end := w.serve()
		if end == endRetired {
			// The grace timer took its task, and its retire is on the way (it may not have
			// started): retire does its work once, whichever of the two calls it first.
			w.retire()
		}
		switch {
		case w.retired.Load(): // given up on (retire): counted as ending since, not alive
			w.in.CloseContext(g.p.abort)
			g.givenUpEnded()
			g.ending.Add(-1)
		case end == endRecycle || end == endBroken:
			g.endInBackground(w) // the replacement need not wait for the threads its code left
			g.alive.Add(-1)
		default:
			// What its end waits for is interrupted once CloseContext's context ends, also for a
			// worker that started after CloseContext's interruptAll looked
			w.in.CloseContext(g.p.abort)
			g.alive.Add(-1)
		}
		g.setWorker(id, w, nil)
		if w.tasks > 0 {
			pause = firstPause // it did work: failures before it no longer count
		}
		if end != endRecycle && end != endBroken {
			return
		}
		g.recycles.Add(1) // also when the pool closes during endBroken's pause (see GroupStats)
		// One that could not wait for work: if that persists, do not spin on restarts.
		if end == endBroken && !wait() {
			return
		}
	}
}

// endInBackground ends a recycled worker's interpreter while its slot starts the next. Ending
// waits for the threads the worker's code started (and its atexit functions); those still
// running after InterruptGrace are interrupted (see cpython's CloseContext: a thread in a
// blocking C call sees it when the call returns), and at once when CloseContext's context
// ends. Close waits for it, as for a slot. Called from the worker's slot goroutine.
func (g *Group) endInBackground(w *worker) {
	p := g.p
	p.slots.Add(1) // from inside a slot: the count is above zero, Close's Wait has not returned
	g.ending.Add(1)
	go func() {
		defer p.slots.Done()
		p.endWithGrace(p.abort, w.in)
		g.ending.Add(-1)
	}()
}

// endWithGrace ends in, interrupting what its end waits for (threads its code started, atexit
// functions) once InterruptGrace has passed, or at once when ctx ends.
func (p *Pool) endWithGrace(ctx context.Context, in *cpython.Interpreter) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.InterruptGrace)
	defer cancel()
	in.CloseContext(ctx)
}

func (g *Group) setWorker(id int, old, w *worker) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.workers[id] == old {
		g.workers[id] = w
	}
}

// startWorker starts worker id; ending ctx interrupts its Preload and Setup. It reports the
// outcome before a worker that failed ends (New need not wait for that to know), which end
// governs: what the failed Setup left running is interrupted InterruptGrace later, at once if
// end has ended.
func (g *Group) startWorker(ctx, end context.Context, id int, report func(error)) (*worker, error) {
	opts := g.p.opts
	in, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{
		Path: opts.Path, Config: g.spec.Config, WorkerID: id, Workers: g.spec.Workers,
		Stdout: opts.Stdout, Stderr: opts.Stderr,
		ExternalInterrupts: true, // every task's context is watched here already (task.cancel)
	})
	if err != nil {
		report(err)
		return nil, err
	}
	// The interpreter leaves watching contexts to its owner (ExternalInterrupts): here, ctx,
	// again every 100 ms (as cpython's CloseContext does) for set-up code that swallows one.
	interrupted, started := make(chan struct{}), make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		for {
			in.InterruptContext(ctx)
			select {
			case <-started:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	err = in.Do(ctx, func(t *cpython.Thread) error {
		for _, m := range g.spec.Preload {
			if !cpython.IsModuleName(m) {
				return fmt.Errorf("preloading %q: not a module name", m)
			}
			if err := t.Exec(ctx, "import "+m); err != nil {
				return fmt.Errorf("preloading %s: %w", m, err)
			}
		}
		if g.spec.Setup != "" {
			if err := t.Exec(ctx, g.spec.Setup); err != nil {
				return fmt.Errorf("running Setup: %w", err)
			}
		}
		return nil
	})
	close(started)
	if !stop() {
		<-interrupted
	}
	if err != nil {
		report(err)
		g.p.endWithGrace(end, in) // Setup may have started a thread before it failed
		return nil, err
	}
	w := &worker{g: g, id: id, in: in, limit: taskLimit(g.spec.MaxTasksPerWorker)}
	g.alive.Add(1)
	g.mu.Lock()
	g.workers[id] = w // also over a retired worker still ending: interruptAll must reach this one
	g.mu.Unlock()
	report(nil)
	return w, nil
}

// serve runs tasks on the worker's own thread, one turn of the interpreter for its whole life,
// waiting for each task in C with the GIL released.
func (w *worker) serve() endReason {
	g := w.g
	end := endStop
	w.in.Do(context.Background(), func(t *cpython.Thread) error {
		for {
			v, err := g.tasks.Recv(context.Background())
			if err != nil {
				// Not seen in practice (the items are int64 task numbers; an interrupt is only pending
				// while a task runs). Had an item been taken, its task would be lost with it.
				if !errors.Is(err, channels.ErrClosed) && !g.p.closing.Load() && !w.retired.Load() {
					end = endBroken // could not wait for work (not closed): a fresh worker takes the slot
				}
				return nil // closed and drained
			}
			tk := g.takeTask(v)
			if tk == nil {
				continue
			}
			tk.worker.Store(w) // before the claim: a watch that fires from now on finds its worker
			if !tk.claim() {
				continue // cancelled while queued
			}
			if g.p.closing.Load() {
				tk.drop(ErrClosed)
				continue
			}
			if end = w.run(t, tk); end != endStop {
				return nil
			}
		}
	})
	return end
}

// run runs one task; it returns endStop to go on (the name only matters for the other values).
func (w *worker) run(t *cpython.Thread, tk *task) endReason {
	g := w.g
	w.current.Store(tk)
	start := time.Now()
	val, err := tk.exec(t)
	busy := time.Since(start)
	retired := !w.current.CompareAndSwap(tk, nil) // the grace timer took it: this worker is given up
	if gt := tk.grace.Load(); gt != nil && !retired {
		gt.Stop() // (one stored just after this look fires in vain, holding what it holds till then)
	}
	// cpython returns the context's own error, as it is, only for a call it did not start: one
	// whose context ended once this worker had taken it (a Call's canceller takes its task only
	// after its wait has returned). Not run, so not counted as run (Stats, the task limit).
	ctxErr := tk.ctx.Err()
	ran := err == nil || err != ctxErr
	if ran {
		st := &g.slots[w.id]
		st.tasks.Add(1)
		st.busy.Add(int64(busy))
		w.tasks++
	}

	end := endStop
	if g.p.closing.Load() && errors.Is(err, cpython.ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err) // interrupted by CloseContext's deadline
	}
	switch {
	case err == nil:
		g.done.Add(1)
	case ctxErr != nil && errors.Is(err, ctxErr), errors.Is(err, ErrClosed): // an error of ctx's: it had ended by then
		g.cancelled.Add(1)
		// its modules may be half made, or the code raised what ends an interpreter as it
		// stopped (except KeyboardInterrupt: sys.exit(130)): a fresh interpreter takes the slot
		if interruptedInImport(err) || endsItsInterpreter(err) != nil {
			end = endRecycle
		}
	default:
		g.failed.Add(1)
		if pe := endsItsInterpreter(err); pe != nil {
			err = fmt.Errorf("%w (its interpreter raised %s): %w", ErrWorkerLost, pe.Type, err)
			end = endRecycle
		}
	}
	tk.busy = busy
	tk.late = ran && (ctxErr != nil || pastDeadline(tk.ctx, start.Add(busy)))
	tk.finish(val, err)
	if ran {
		m := g.meanBusy.Load() // after the result is out: only later waits read it (crowded)
		g.meanBusy.Store(m + (int64(busy)-m)/8)
	}
	switch {
	case retired || w.retired.Load():
		return endRetired
	case end == endRecycle:
		return endRecycle
	case w.limit > 0 && w.tasks >= w.limit:
		return endRecycle
	}
	return endStop
}

// pastDeadline reports whether ctx has a deadline and t is not before it: a context's error
// comes from a timer that may fire later than its deadline.
func pastDeadline(ctx context.Context, t time.Time) bool {
	d, ok := ctx.Deadline()
	return ok && !t.Before(d)
}

// endsItsInterpreter is err's Python exception if it is one after which the worker is replaced: a
// SystemExit or a subclass of it (a program's own exit), or a MemoryError itself (a subclass,
// such as numpy's for one array too big, leaves the interpreter fine).
func endsItsInterpreter(err error) *cpython.PythonError {
	var pe *cpython.PythonError // errors.As takes its address: allocated, so only on a failure's path
	if !errors.As(err, &pe) {
		return nil
	}
	if _, exit := pe.ExitStatus(); exit || pe.Type == "MemoryError" {
		return pe
	}
	return nil
}

// interruptedInImport reports whether err is an interrupt that stopped an import half-way
// (cpython.InterruptedError.InImport).
func interruptedInImport(err error) bool {
	var ie *cpython.InterruptedError
	return errors.As(err, &ie) && ie.InImport()
}

// retire gives up on the worker when its task was cancelled and did not stop within
// InterruptGrace: a replacement takes the slot, and this interpreter is interrupted until it
// stops, then ended.
//
// Each given-up worker keeps an interpreter and an OS thread until its call returns, which a
// call blocked in C (a socket's recv on a backend that hangs) may never do: with as many of the
// group's workers given up as it has slots, a further one's slot is filled only when one of
// them ends (the group serves with fewer workers meanwhile), so that a backend that hangs for
// good costs at most twice the group's interpreters, not one more per call.
func (w *worker) retire() {
	g := w.g
	// Once per worker (the grace timer and its slot goroutine both call it), under deferMu: a
	// second call must not count a given-up worker out, which would start a deferred slot.
	g.deferMu.Lock()
	if w.retired.Load() {
		g.deferMu.Unlock()
		return
	}
	g.ending.Add(1) // before retired: its slot goroutine, which counts it out, may see that at once
	g.givenUp.Add(1)
	w.retired.Store(true)
	wait := g.givenUp.Load() > int64(len(g.slots))
	if wait {
		g.deferred = append(g.deferred, w.id)
	}
	g.deferMu.Unlock()
	g.alive.Add(-1) // its replacement is the slot's worker now
	g.recycles.Add(1)
	if !wait {
		g.p.startSlot(g.p.restarts, g.p.restarts, g, w.id, nil) // not once the pool is closing
	}
	go w.in.CloseContext(ended) // interrupts the stuck task every 100 ms until it returns
}

// givenUpEnded counts a given-up worker out, and starts a slot whose replacement waited for
// that (retire).
func (g *Group) givenUpEnded() {
	g.deferMu.Lock()
	g.givenUp.Add(-1)
	id := -1
	if len(g.deferred) > 0 {
		id = g.deferred[0]
		g.deferred = g.deferred[1:]
	}
	g.deferMu.Unlock()
	if id >= 0 {
		g.p.startSlot(g.p.restarts, g.p.restarts, g, id, nil)
	}
}

// interruptAll interrupts every running task of the group (CloseContext's deadline).
func (g *Group) interruptAll() {
	g.mu.Lock()
	ws := append([]*worker(nil), g.workers...)
	g.mu.Unlock()
	for _, w := range ws {
		if w != nil {
			go w.in.CloseContext(ended)
		}
	}
}

// ended is a context that has ended: CloseContext with it interrupts at once.
var ended = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()
