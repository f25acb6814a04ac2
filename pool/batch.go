package pool

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyworkers/pyworkers/cpython"
)

// Result is one call's outcome in a batch.
type Result = cpython.CallResult

// BatchFuture is the pending outcome of SubmitBatch. Its methods are safe for concurrent use.
type BatchFuture struct {
	items [][]any // the task's own are dropped when it is cancelled; these stay for Len and fill
	f     *Future

	// When (some of) the batch's items have to run as calls of their own (see SubmitBatch), the
	// first Wait that finds so starts resubmit once; every Wait then waits for the same calls.
	redo    sync.Once
	redoing atomic.Bool   // set once redone is made, in redo
	redone  chan struct{} // closed when calls is set
	calls   []redoCall
}

// redoCall is one item's own call when a batch runs again call by call.
type redoCall struct {
	f   *Future // nil when Submit failed
	err error   // Submit's error
}

// SubmitBatch queues many calls of target as one task: one hand-off to a worker instead of one
// per call, which is what makes tiny calls cheap. Each item is the arguments of one call (a
// final cpython.Kwargs gives keyword arguments), and gets the outcome Call would give it, each
// call running once: its exception (a *cpython.PythonError) or a result that cannot cross (a
// *cpython.ConversionError) is its own Result.Err. A SystemExit or MemoryError ends the batch on
// its worker, which is replaced (that item's Err wraps ErrWorkerLost); another BaseException
// that is not an Exception (a KeyboardInterrupt the code raised itself) ends it too, and the
// worker stays. The items after it then run as calls of their own. So do all items when the
// batch could not start (an argument that cannot cross, a target that cannot be imported). A
// batch that fails as a whole once its calls have begun (out of memory keeping or encoding
// their outcomes) gives every item that error (wrapping cpython.ErrBatchFailed, and
// ErrWorkerLost for a MemoryError): some may have run, so none runs again. ctx governs the
// whole batch: when it ends while the batch runs, the items that finished keep their outcomes
// and the others get ctx's error, as a Wait with a context that has not ended tells (a Wait
// whose own context ends before the batch is done returns that error alone: wait with another
// context than the batch's to get the outcomes).
func (g *Group) SubmitBatch(ctx context.Context, target string, items [][]any) (*BatchFuture, error) {
	return g.submitBatch(ctx, target, items, g.p.opts.FailFast)
}

func (g *Group) submitBatch(ctx context.Context, target string, items [][]any, failFast bool) (*BatchFuture, error) {
	tk, err := g.submit(ctx, target, opCallMany, nil, items, failFast)
	if err != nil {
		return nil, err
	}
	tk.watch()
	return &BatchFuture{items: items, f: &Future{t: tk}}, nil
}

// SubmitBatch queues a batch on the default group; see Group.SubmitBatch.
func (p *Pool) SubmitBatch(ctx context.Context, target string, items [][]any) (*BatchFuture, error) {
	return p.def.SubmitBatch(ctx, target, items)
}

// BatchSizer chooses how many calls to put in the next SubmitBatch from how long the batches
// so far ran on their workers, aiming at 1 ms per batch: a batch runs on one worker, so too big
// a batch leaves the other workers idle and too small a one pays a hand-off per few calls. The
// time is measured on the worker, so the size does not depend on the caller's pace. It is
// wall time: with more busy threads than cores (more workers than cores, too) it includes the
// time a worker waited for a CPU, and batches come out smaller than the calls alone would make
// them (wall time is what a batch holds its worker for; CPU time would let calls that wait, on
// I/O or a sleep, pile up on one worker). It says 1 until a batch has finished. A BatchSizer is
// not safe for concurrent use.
type BatchSizer struct {
	Max int // most calls in a batch (0: 32)

	ran   time.Duration
	calls int
}

// Observe counts a batch that has run to its results on a worker; other batches (not done yet,
// cancelled, failed as a whole) are ignored.
func (s *BatchSizer) Observe(b *BatchFuture) {
	tk := b.f.t
	// busy and err are set before the state says done.
	if tk.state.Load() == stateDone && tk.err == nil && tk.busy > 0 {
		s.ran += tk.busy
		s.calls += len(b.items)
	}
}

// batchWork is the time a batch should run on its worker.
const batchWork = time.Millisecond

// Size is the number of calls for the next batch.
func (s *BatchSizer) Size() int {
	most := cmp.Or(s.Max, 32)
	if s.calls == 0 {
		return 1
	}
	perCall := s.ran / time.Duration(s.calls)
	if perCall <= 0 {
		return most
	}
	return int(min(max(batchWork/perCall, 1), time.Duration(most)))
}

// Len is the number of calls in the batch.
func (b *BatchFuture) Len() int { return len(b.items) }

// done reports whether the batch's task has its outcome (Wait then returns without waiting for
// the task; items it hands to calls of their own may still run).
func (b *BatchFuture) done() bool { return b.f.t.state.Load() == stateDone }

// Wait returns one Result per item, in order. The error is for the batch as a whole: ctx
// (Wait's) ended, with no results, or the pool closed. An interrupted batch — the pool
// closed, or the batch's context ended (then with a nil error) — gives the items that
// finished before the interrupt their outcomes and the others its error; when it had not
// started, or its interrupt could not be told from its items (cpython.Thread.CallMany), there
// are no outcomes: with the pool closed, no results; with its context ended, every item has
// that error. Wait may be called again, also concurrently, and waits for the same calls: when
// items have to run as calls of their own (see SubmitBatch), those calls are submitted once,
// whichever Wait finds that first, and a Wait that gives up leaves them running for the next.
func (b *BatchFuture) Wait(ctx context.Context) ([]Result, error) {
	v, err := b.f.Wait(ctx)
	if err != nil && b.done() {
		v, err = b.f.t.val, b.f.t.err // its outcome is there: that, whatever Wait's ctx says
	}
	if err == nil {
		return v.([]Result), nil
	}
	if !b.done() {
		return nil, err // Wait's ctx ended first
	}
	ran, _ := v.([]Result) // with an interrupt, the outcomes of the items that finished
	if errors.Is(err, ErrClosed) {
		if ran == nil { // closed before it ran
			return nil, err
		}
		return finished(ran, err), err
	}
	// The batch's context ended (the items that finished keep their outcomes, the others have
	// its error), or its calls may have run (every item has that error): none runs again.
	if own := b.f.t.ctx; own.Err() != nil && errors.Is(err, own.Err()) || errors.Is(err, cpython.ErrBatchFailed) {
		if ran != nil {
			return finished(ran, err), nil
		}
		return fill(len(b.items), err), nil
	}
	if len(ran) == len(b.items) {
		// An item ended the batch (SystemExit, MemoryError): it gets what Call would give it
		// (err: the worker was replaced), the items before it keep their outcomes, those after
		// it (ErrNotRun) run now, each on its own. Nothing runs twice.
		stop := len(ran)
		for stop > 0 && errors.Is(ran[stop-1].Err, cpython.ErrNotRun) {
			stop--
		}
		out := append([]Result(nil), ran[:stop]...)
		if stop > 0 {
			out[stop-1].Err = err
		}
		rest, err := b.oneByOne(ctx, stop)
		if err != nil {
			return nil, err
		}
		return append(out, rest...), nil
	}
	// Nothing ran: an argument that cannot cross, a target that cannot be resolved. Each call on
	// its own gives each item its own outcome.
	var ce *cpython.ConversionError
	var pe *cpython.PythonError
	if errors.As(err, &ce) || errors.As(err, &pe) || errors.Is(err, ErrWorkerLost) {
		return b.oneByOne(ctx, 0)
	}
	return fill(len(b.items), err), nil
}

// finished is the outcomes of an interrupted batch (CallMany's): the items that finished keep
// theirs, the one the interrupt stopped and those it kept from running get err.
func finished(ran []Result, err error) []Result {
	out := append([]Result(nil), ran...)
	for i := range out {
		var ie *cpython.InterruptedError
		if errors.Is(out[i].Err, cpython.ErrNotRun) || errors.As(out[i].Err, &ie) {
			out[i] = Result{Err: err}
		}
	}
	return out
}

func fill(n int, err error) []Result {
	out := make([]Result, n)
	for i := range out {
		out[i].Err = err
	}
	return out
}

// oneByOne waits for the batch's items from index from on, run as separate calls. from is the
// same for every Wait of a batch (it follows from the batch's one outcome).
func (b *BatchFuture) oneByOne(ctx context.Context, from int) ([]Result, error) {
	b.redo.Do(func() {
		b.redone = make(chan struct{})
		b.redoing.Store(true) // for Late, which does not go through redo
		go b.resubmit(from)   // Submit may wait for room in a bounded queue: no Wait waits on it past its ctx
	})
	select {
	case <-b.redone: // first: re-run calls that are all done give their outcomes whatever ctx says
	default:
		select {
		case <-b.redone:
		case <-ctx.Done():
			return nil, b.f.t.wrapCtx(ctx)
		}
	}
	out := make([]Result, len(b.calls))
	for i, c := range b.calls {
		if c.f == nil {
			out[i].Err = c.err
			continue
		}
		out[i].Value, out[i].Err = c.f.Wait(ctx)
		if out[i].Err != nil && ctx.Err() != nil {
			if c.f.t.state.Load() != stateDone {
				return nil, b.f.t.wrapCtx(ctx)
			}
			out[i].Value, out[i].Err = c.f.Wait(ctx) // done: its own outcome, not ctx's
		}
	}
	return out, nil
}

// Late reports whether the batch's calls ended only after its context had ended (see
// Future.Late): the last call to run caught its interrupt and went on, or ended as the deadline
// passed. The items that finished before the context ended have their outcomes in time all the
// same; for a batch of one call it says that call was late. Items that ran as calls of their own
// (see SubmitBatch) count once their Wait has returned results; before that, and for a batch
// that is not done, Late may say false.
func (b *BatchFuture) Late() bool {
	if b.f.t.isLate() {
		return true
	}
	if !b.redoing.Load() {
		return false
	}
	select {
	case <-b.redone:
	default:
		return false
	}
	for _, c := range b.calls {
		if c.f != nil && c.f.t.isLate() {
			return true
		}
	}
	return false
}

// resubmit submits each item from index from on as a call of its own, under the batch's
// context, and closes redone.
func (b *BatchFuture) resubmit(from int) {
	tk := b.f.t
	calls := make([]redoCall, len(b.items)-from)
	for i, args := range b.items[from:] {
		calls[i].f, calls[i].err = tk.g.submitCall(tk.ctx, tk.target, args, false) // accepted: waits for room
	}
	b.calls = calls
	close(b.redone)
}
