package channels

// #include <stdlib.h>
// #include "pyw_queue.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/wire"
)

func init() {
	if C.pyw_channels_register() != 0 {
		panic("channels: cannot register pyworkers.Channel with the pyworkers module")
	}
}

// Sentinel errors, wrapped by the errors this package returns (test with errors.Is).
var (
	// ErrClosed: Send on a closed channel, or Recv on a closed and drained one.
	ErrClosed = errors.New("channels: channel closed")
	// ErrFull: TrySend on a full bounded channel.
	ErrFull = errors.New("channels: channel full")
	// ErrEmpty: TryRecv (or TrySpinRecv) found the channel empty.
	ErrEmpty = errors.New("channels: channel empty")
	// ErrNoChannel: Open of an id no live channel has.
	ErrNoChannel = errors.New("channels: no channel with that id")
	// ErrInterrupted: a wait on an interpreter's own thread — Go code that its Python code
	// called, such as an output writer — ended because the interpreter's task was interrupted
	// (its context ended), as a wait in Python would with KeyboardInterrupt; or such a wait
	// on a thread its Python code started, when CloseContext's deadline interrupted the
	// interpreter's end.
	ErrInterrupted = errors.New("channels: wait interrupted with the interpreter's task")
	// ErrNoMemory: the C side could not allocate a channel or an item.
	ErrNoMemory = errors.New("channels: out of memory")
	// ErrReleased: the *Channel was released (Release); the channel may live on for others.
	ErrReleased = errors.New("channels: Channel released")
)

// Channel is a queue between goroutines and Python interpreters: Go sends and receives here,
// Python code in any pyworkers interpreter does with pyworkers.Channel(id). Items are copied by
// value in pyworkers' interpreter-neutral encoding (no pickle), outlive the interpreter that
// sent them, and are received exactly once.
//
// All methods are safe for concurrent use from any goroutine, Release included. The queue lives
// as long as any holder does: this *Channel (until Release, or until the garbage collector finds
// it unreachable) or a Python Channel object in some interpreter. Close is about the channel's
// state, not its memory. The queue and its items are C memory, which the garbage collector does
// not see: a program that makes many channels and drops them with items in them should Release
// each, or their memory waits for a collection that Go's heap may not ask for.
// An id is not a holder: keep the *Channel reachable (use it later, or defer
// runtime.KeepAlive(c)) until Python code has opened the id, or the queue, with its items,
// may be gone by then (pyworkers.Channel(id) then raises ValueError). Use it as *Channel, from
// New or Open: a copy of the value is not a holder (go vet reports copies), and the zero value
// is no channel (its methods panic, but ID and Cap, which say 0, and Release, which does nothing).
type Channel struct {
	_   noCopy // go vet: a copy would use the queue after the original's cleanup let it go
	q   *C.pyw_queue
	id  int64
	cap int
	// uses counts the calls using q now, with released and freed (Release): the last of the
	// calls and Release to end lets q go, as os.File's Close does its descriptor.
	uses    atomic.Int64
	cleanup runtime.Cleanup
}

const (
	released = 1 << 62 // Release was called: calls that begin now fail
	freed    = 1 << 61 // and this holder let go of the queue
)

// noCopy makes go vet's copylocks check report copies of a Channel (not of a *Channel).
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// wrap makes the Go holder of q. The cleanup is on the Channel itself (24 bytes), never on a
// smaller object holding only q: a pointer to an opaque C type is no Go pointer, so such an
// object would be a tiny allocation, whose cleanup waits until every object sharing its 16-byte
// block is unreachable too (seen: a test's queue never let go).
func wrap(q *C.pyw_queue) *Channel {
	c := &Channel{q: q, id: int64(C.pyw_queue_id(q)), cap: int(C.pyw_queue_capacity(q))}
	c.cleanup = runtime.AddCleanup(c, func(q *C.pyw_queue) { C.pyw_queue_decref(q) }, q)
	return c
}

// use begins a call that uses the channel's queue, which done ends; ErrReleased after Release.
// A Channel that New or Open did not make (a zero value) has no queue, which is a programming
// error, as a write to a nil map is.
func (c *Channel) use() (*C.pyw_queue, error) {
	if c.q == nil {
		panic("channels: Channel used without New or Open (its zero value)")
	}
	if c.uses.Add(1)&released != 0 {
		c.done()
		return nil, ErrReleased
	}
	return c.q, nil
}

// done ends a call that use began: the last one after Release lets the queue go.
func (c *Channel) done() {
	if c.uses.Add(-1) == released {
		c.letGo()
	}
}

// letGo gives up this holder's reference to the queue once Release was called and no call uses
// it: whichever of them finds that first.
func (c *Channel) letGo() {
	if c.uses.CompareAndSwap(released, released|freed) {
		c.cleanup.Stop()
		C.pyw_queue_decref(c.q)
	}
}

// Release lets go of the queue now rather than when the garbage collector finds c unreachable:
// its memory, and that of the items in it, is freed unless Python code (or another *Channel from
// Open) holds the channel too. Calls in progress finish first; later ones fail with ErrReleased
// (Len says 0, Closed true, Close false). Releasing again does nothing. Release does not close
// the channel: other holders go on using it.
func (c *Channel) Release() {
	if c == nil || c.q == nil {
		return
	}
	if c.uses.Or(released)&released == 0 {
		c.letGo()
	}
}

// New makes a channel holding up to capacity items (0: unbounded; Send then never waits).
func New(capacity int) (*Channel, error) {
	if capacity < 0 {
		return nil, fmt.Errorf("channels: New: capacity %d: want 0 (unbounded) or more", capacity)
	}
	q := C.pyw_queue_new(C.size_t(capacity))
	if q == nil {
		return nil, fmt.Errorf("channels: New: %w", ErrNoMemory)
	}
	return wrap(q), nil
}

// Open returns the live channel with this id (made by New here, or by Channel.create in
// Python), or ErrNoChannel.
func Open(id int64) (*Channel, error) {
	q := C.pyw_queue_lookup(C.int64_t(id))
	if q == nil {
		return nil, fmt.Errorf("%w: %d", ErrNoChannel, id)
	}
	return wrap(q), nil
}

// ID identifies the channel process-wide: pyworkers.Channel(id) opens it in Python.
func (c *Channel) ID() int64 { return c.id }

// Cap is the capacity given to New (0: unbounded).
func (c *Channel) Cap() int { return c.cap }

// Len is the number of items waiting in the channel now.
func (c *Channel) Len() int {
	q, err := c.use()
	if err != nil {
		return 0
	}
	defer c.done()
	return int(C.pyw_queue_len(q))
}

// Closed reports whether Close has been called, here or in Python.
func (c *Channel) Closed() bool {
	q, err := c.use()
	if err != nil {
		return true // released: it can send no more
	}
	defer c.done()
	return C.pyw_queue_is_closed(q) != 0
}

// Close closes the channel: sends fail with ErrClosed at once; receivers get the items left,
// then ErrClosed. It reports whether this call closed it; closing again is harmless.
func (c *Channel) Close() bool {
	q, err := c.use()
	if err != nil {
		return false
	}
	defer c.done()
	return C.pyw_queue_close(q) != 0
}

var encodeBufs = sync.Pool{New: func() any { return new(encodeBuf) }}

type encodeBuf struct {
	b    []byte
	refs wire.Refs
	keep *C.pyw_item // a large item built by one send attempt for the next (pyw_queue_send)
}

// c presents the encoding to C: its bytes and its table of shared buffers.
func (eb *encodeBuf) c() (*C.char, C.size_t, **C.pyw_shared, C.size_t) {
	refs, n := eb.refs.Table()
	return (*C.char)(unsafe.Pointer(&eb.b[0])), C.size_t(len(eb.b)), (**C.pyw_shared)(refs), C.size_t(n)
}

// Send puts a copy of v in the channel, waiting while a bounded channel is full. v may be nil,
// bool, any integer or *big.Int, float, string (valid UTF-8), []byte, cpython.Tuple, slices,
// maps with string keys, and *cpython.Buffer (shared, not copied); anything else is a
// *cpython.ConversionError and nothing is sent. Errors: ErrClosed, ctx.Err(), ErrInterrupted
// (on an interpreter's thread, see the package docs), ErrNoMemory.
func (c *Channel) Send(ctx context.Context, v any) error {
	return c.send(ctx, v, block)
}

// TrySend is Send without waiting: ErrFull when a bounded channel is full (found before v is
// converted: a full channel costs no conversion).
func (c *Channel) TrySend(v any) error {
	return c.send(context.Background(), v, noWait)
}

func (c *Channel) send(ctx context.Context, v any, mode waitMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q, err := c.use()
	if err != nil {
		return err
	}
	defer c.done()
	if mode == noWait && !cheap(v) && C.pyw_queue_full_now(q) != 0 {
		return ErrFull // found full before the value is converted, perhaps at length, for nothing
	}
	eb := encodeBufs.Get().(*encodeBuf)
	defer encodeBufs.Put(eb)
	defer eb.refs.Clear()
	eb.b, err = wire.AppendRefs(eb.b[:0], &eb.refs, v)
	if err != nil {
		return conversionError("", err)
	}
	data, n, refs, nrefs := eb.c()
	// A waiting send may make three attempts: a large item is built by the first and kept for
	// the others (a small one is copied into a kept node by each).
	op := func(timeout C.int64_t, cancel *C.int) C.int {
		return C.pyw_queue_send(q, data, n, refs, nrefs, &eb.keep, timeout, cancel)
	}
	rc := wait(ctx, q, op, mode, C.PYW_Q_FULL)
	if eb.keep != nil { // a large item that was not sent (a small one never is kept): no cgo call else
		C.pyw_item_free(eb.keep)
		eb.keep = nil
	}
	return c.result(ctx, rc)
}

// cheap: v converts in less time than a look at the queue costs (a cgo call), so TrySend does
// not look before it converts v.
func cheap(v any) bool {
	switch v := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return true
	case string:
		return len(v) < 256
	case []byte:
		return len(v) < 256
	}
	return false
}

// Recv takes the next item, waiting while the channel is empty. Values come back as the Go
// types of package cpython (int64 or *big.Int, float64, string, []byte, []any, cpython.Tuple,
// map[string]any), and shared buffers as *cpython.Buffer (a view of the shared memory: call
// Release when done). Python bytes of 64 KiB or more travel as shared buffers, so they arrive
// as *cpython.Buffer too. Errors: ErrClosed once the channel is closed and drained, ctx.Err(),
// ErrInterrupted (on an interpreter's thread); an item that is not a valid encoding (only a
// bug could make one) is dropped with an internal error.
func (c *Channel) Recv(ctx context.Context) (any, error) {
	return c.recv(ctx, block)
}

// TryRecv is Recv without waiting: ErrEmpty when there is nothing to take.
func (c *Channel) TryRecv() (any, error) {
	return c.recv(context.Background(), noWait)
}

// TrySpinRecv is TryRecv that first waits as long as Recv would spin before it sleeps: up to
// 20 µs (SPIN_NS in queue.c), and only if a spin slot is free (one per CPU the process may use,
// none on one CPU). For a caller that expects an item soon and would rather sleep elsewhere,
// say on a Go channel, than in C. ErrEmpty when nothing came.
func (c *Channel) TrySpinRecv() (any, error) {
	return c.recv(context.Background(), spinOnly)
}

func (c *Channel) recv(ctx context.Context, mode waitMode) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := c.use()
	if err != nil {
		return nil, err
	}
	rb := recvBufs.Get().(*recvBuf)
	defer recvBufs.Put(rb)
	op := func(timeout C.int64_t, cancel *C.int) C.int {
		return C.pyw_queue_recv_copy(q, (*C.char)(unsafe.Pointer(&rb.small[0])), &rb.n, &rb.it, timeout, cancel)
	}
	rc := wait(ctx, q, op, mode, C.PYW_Q_EMPTY)
	c.done() // what was taken is rb's
	if err := c.result(ctx, rc); err != nil {
		return nil, err
	}
	if rb.it == nil {
		return decode(rb.small[:rb.n], nil) // decoding copies: rb can go back to the pool
	}
	defer C.pyw_item_free(rb.it)
	return decodeItem(rb.it)
}

var recvBufs = sync.Pool{New: func() any { return new(recvBuf) }}

// recvBuf is where one receive lands: a small item copied into small (C keeps no pointer to
// it), any other handed over as it.
type recvBuf struct {
	small [C.PYW_SMALL_ITEM]byte
	n     C.size_t
	it    *C.pyw_item
}

// How long an operation may wait for an item or for room.
type waitMode int

const (
	noWait   waitMode = iota
	spinOnly          // while it would spin before sleeping (PYW_Q_SPIN_ONLY)
	block             // as long as needed, or until ctx ends
)

// wait runs op on q as mode allows. To block with a ctx that can end, op first only spins: most
// waits end there, without the cost of wiring ctx's cancellation to the queue, which only a
// wait that goes to sleep needs. A spin is at most 20 µs (SPIN_NS in queue.c): ctx's end is
// noticed that late at worst.
func wait(ctx context.Context, q *C.pyw_queue, op func(C.int64_t, *C.int) C.int, mode waitMode, busy C.int) C.int {
	switch {
	case mode == noWait:
		return op(0, nil)
	case mode == spinOnly:
		return op(C.PYW_Q_SPIN_ONLY, nil)
	case ctx.Done() == nil:
		return op(C.PYW_Q_FOREVER, nil)
	}
	if rc := op(C.PYW_Q_SPIN_ONLY, nil); rc != busy {
		return rc
	}
	cancel := (*C.int)(C.calloc(1, C.size_t(unsafe.Sizeof(C.int(0)))))
	if cancel == nil { // cgo's C.malloc never returns nil, but calloc may: no wait without a flag
		return C.PYW_Q_NOMEM
	}
	defer C.free(unsafe.Pointer(cancel))
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		C.pyw_queue_cancel(q, cancel)
		close(cancelled)
	})
	rc := op(C.PYW_Q_NO_SPIN, cancel) // it has just spun
	if !stop() {
		<-cancelled // the canceller has the flag: let it finish before the flag is freed
	}
	return rc
}

func (c *Channel) result(ctx context.Context, rc C.int) error {
	switch rc {
	case C.PYW_Q_OK:
		return nil
	case C.PYW_Q_CLOSED:
		return ErrClosed
	case C.PYW_Q_FULL:
		return ErrFull
	case C.PYW_Q_EMPTY:
		return ErrEmpty
	case C.PYW_Q_CANCELLED:
		if err := ctx.Err(); err != nil {
			return err
		}
		return context.Canceled
	case C.PYW_Q_NOMEM:
		return ErrNoMemory
	case C.PYW_Q_INTERRUPTED:
		return ErrInterrupted
	}
	return fmt.Errorf("channels: internal: unexpected queue outcome %d", int(rc))
}

// conversionError reports a value that cannot be sent; root prefixes the path (SendMany's index).
func conversionError(root string, err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return &cpython.ConversionError{What: "value", Path: root + we.Path, Reason: we.Msg}
	}
	return fmt.Errorf("channels: cannot send: %w", err)
}

// String describes the channel for logs.
func (c *Channel) String() string {
	q, err := c.use()
	if err != nil {
		return fmt.Sprintf("channels.Channel(id=%d, cap=%d, released)", c.id, c.cap)
	}
	defer c.done()
	return fmt.Sprintf("channels.Channel(id=%d, len=%d, cap=%d, closed=%t)", c.id, int(C.pyw_queue_len(q)), c.cap, C.pyw_queue_is_closed(q) != 0)
}

// sendRaw puts b in the channel as an item without checking it is a valid encoding: for
// testing the decoders against malformed items.
func (c *Channel) sendRaw(b []byte) error {
	var p *C.char
	if len(b) > 0 {
		p = (*C.char)(unsafe.Pointer(&b[0]))
	}
	q, err := c.use()
	if err != nil {
		return err
	}
	defer c.done()
	var keep *C.pyw_item
	rc := C.pyw_queue_send(q, p, C.size_t(len(b)), nil, 0, &keep, 0, nil)
	C.pyw_item_free(keep)
	return c.result(context.Background(), rc)
}

// SendMany sends vs in order, taking the queue's lock once per batch rather than once per item
// (see send_many in Python), waiting for room as needed. Every value is encoded first: one that
// cannot cross is a *cpython.ConversionError naming its index, and nothing is sent. It returns
// how many were sent; with ErrClosed or ctx.Err() part-way, the rest were not. An empty vs
// sends nothing and returns 0, nil, closed channel or not.
func (c *Channel) SendMany(ctx context.Context, vs []any) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	q, err := c.use()
	if err != nil {
		return 0, err
	}
	defer c.done()
	var chain, last *C.pyw_item
	freeChain := func() { C.pyw_item_free_chain(chain); chain = nil }
	eb := encodeBufs.Get().(*encodeBuf)
	defer encodeBufs.Put(eb)
	for i, v := range vs {
		var err error
		eb.b, err = wire.AppendRefs(eb.b[:0], &eb.refs, v)
		if err != nil {
			freeChain()
			return 0, conversionError(fmt.Sprintf("[%d]", i), err)
		}
		it := C.pyw_item_new(eb.c())
		eb.refs.Clear()
		if it == nil {
			freeChain()
			return 0, ErrNoMemory
		}
		if last == nil {
			chain = it
		} else {
			last.next = it
		}
		last = it
	}
	total := 0
	op := func(timeout C.int64_t, cancel *C.int) C.int {
		var pushed C.size_t
		rc := C.pyw_queue_push_many(q, &chain, &pushed, timeout, cancel)
		total += int(pushed)
		return rc
	}
	rc := wait(ctx, q, op, block, C.PYW_Q_FULL)
	freeChain() // what was not sent
	return total, c.result(ctx, rc)
}

// RecvMany waits for one item like Recv and returns it with up to max-1 more that are already
// waiting, in order (see recv_many in Python). Errors as Recv; when one of the items taken is
// not a valid encoding, it is dropped and the others go back to the channel's head, in order.
func (c *Channel) RecvMany(ctx context.Context, max int) ([]any, error) {
	if max < 1 {
		return nil, fmt.Errorf("channels: RecvMany: max %d: want 1 or more", max)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := c.use()
	if err != nil {
		return nil, err
	}
	defer c.done() // until what could not be decoded is back
	var chain *C.pyw_item
	var n C.size_t
	op := func(timeout C.int64_t, cancel *C.int) C.int {
		return C.pyw_queue_pop_many(q, &chain, C.size_t(max), &n, timeout, cancel)
	}
	rc := wait(ctx, q, op, block, C.PYW_Q_EMPTY)
	if err := c.result(ctx, rc); err != nil {
		return nil, err
	}
	out := make([]any, 0, int(n))
	var prev *C.pyw_item
	for it := chain; it != nil; prev, it = it, it.next {
		v, err := decodeItem(it)
		if err != nil {
			// out's shared buffers, if any, are let go by the garbage collector (wire.Buffer);
			// the items going back hold references of their own
			if prev == nil {
				chain = it.next
			} else {
				prev.next = it.next
			}
			it.next = nil
			C.pyw_item_free(it)
			C.pyw_queue_unget(q, chain) // nothing else is lost
			return nil, err
		}
		out = append(out, v)
	}
	C.pyw_item_free_chain(chain)
	return out, nil
}

func decodeItem(it *C.pyw_item) (any, error) {
	data := unsafe.Slice((*byte)(unsafe.Pointer(it.data)), int(it.len))
	return decode(data, wire.TableAt(unsafe.Pointer(it.refs.v), int(it.refs.n)))
}

func decode(data []byte, refs []unsafe.Pointer) (any, error) {
	v, err := wire.DecodeRefs(data, refs)
	if err != nil {
		return nil, fmt.Errorf("channels: internal: undecodable item: %w", err)
	}
	return v, nil
}
