package wire

import (
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// SharedOps are the C operations on shared buffers (pyw_shared). Package cpython sets them at
// init; wire itself stays free of cgo.
var SharedOps struct {
	Incref func(p unsafe.Pointer)
	Decref func(p unsafe.Pointer)
	// Data returns the buffer's memory as a slice over C memory.
	Data func(p unsafe.Pointer) []byte
}

// Buffer is a reference to a shared buffer: interpreter-neutral memory, reference counted,
// that crosses between Go and Python interpreters without being copied.
//
// Bytes gives direct access to the memory. A Buffer holds one reference until Release (or,
// as a safety net, until the garbage collector finds the *Buffer unreachable); after Release,
// Bytes returns nil. The slice Bytes returns is C memory that does not keep the *Buffer
// alive: as with os.File.Fd, use it only while the *Buffer is reachable (runtime.KeepAlive(b)
// after the last use of the slice, or a Release after it) and never after Release.
//
// Its methods are safe for concurrent use, Release included (a send that has taken its own
// reference keeps the memory); the memory itself is not synchronised: do not change it after
// sending the buffer, the receivers see the change.
type Buffer struct {
	mu      sync.RWMutex   // readers: those taking a reference of their own (ref); writer: Release
	p       unsafe.Pointer // C pyw_shared*
	data    []byte
	state   atomic.Int32 // 0 live, 1 released
	cleanup runtime.Cleanup
}

// WrapShared makes a Buffer for p, taking over one reference the caller already holds.
func WrapShared(p unsafe.Pointer) *Buffer {
	b := &Buffer{p: p, data: SharedOps.Data(p)}
	b.cleanup = runtime.AddCleanup(b, SharedOps.Decref, p)
	return b
}

// Bytes is the buffer's memory (nil after Release). See Buffer for how long the slice is valid.
func (b *Buffer) Bytes() []byte {
	if b == nil || b.state.Load() != 0 {
		return nil
	}
	return b.data
}

// Len is the buffer's size in bytes (0 after Release).
func (b *Buffer) Len() int { return len(b.Bytes()) }

// Release gives up this reference. It is idempotent; the memory is freed when the last
// reference, here or in any interpreter, is gone.
func (b *Buffer) Release() {
	if b == nil {
		return
	}
	b.mu.Lock() // waits for a ref in progress: it must not take its reference from freed memory
	released := b.state.Swap(1) != 0
	b.mu.Unlock()
	if released {
		return
	}
	b.cleanup.Stop()
	SharedOps.Decref(b.p)
}

// ref takes a reference of the caller's own on the buffer's memory, or fails after Release.
func (b *Buffer) ref() (unsafe.Pointer, error) {
	if b == nil {
		return nil, errReleased
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.state.Load() != 0 {
		return nil, errReleased
	}
	SharedOps.Incref(b.p)
	return b.p, nil
}

var errReleased = errors.New("released Buffer")

// Refs collects the shared buffers an encoding refers to, in the order of their 'B' indexes.
// Each entry holds one reference (Incref at Add) until Clear.
type Refs struct {
	P []unsafe.Pointer
}

// Table is the table as C sees it (pyw_shared **): its first entry and length; nil for none.
func (r *Refs) Table() (unsafe.Pointer, int) {
	if len(r.P) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&r.P[0]), len(r.P)
}

// TableAt is a table of n shared buffers that C holds at p (pyw_shared **), for DecodeRefs.
func TableAt(p unsafe.Pointer, n int) []unsafe.Pointer {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*unsafe.Pointer)(p), n)
}

// Clear drops every reference.
func (r *Refs) Clear() {
	for _, p := range r.P {
		SharedOps.Decref(p)
	}
	r.P = r.P[:0]
}

// AppendRefs is Append that also accepts *Buffer values, encoding them by reference into refs.
// On error, refs is as it was.
func AppendRefs(buf []byte, refs *Refs, v any) ([]byte, error) {
	return AppendRefsAt(buf, refs, v, 0)
}

// AppendRefsAt is AppendRefs for a value nested depth containers deep (see AppendHeader), so
// that the depth limit counts the containers around it.
func AppendRefsAt(buf []byte, refs *Refs, v any, depth int) ([]byte, error) {
	n := len(refs.P)
	out, err := appendValue(buf, refs, v, depth)
	refs.undoOnError(n, err)
	return out, err
}

// AppendTupleAt is AppendRefsAt(buf, refs, Tuple(items), depth) without making an interface
// value of the tuple, which would cost an allocation per call on the path of every call.
func AppendTupleAt(buf []byte, refs *Refs, items []any, depth int) ([]byte, error) {
	n := len(refs.P)
	out, err := appendSeq(buf, refs, TagTuple, items, depth)
	refs.undoOnError(n, err)
	return out, err
}

// undoOnError drops the references taken after the first n when err is not nil.
func (r *Refs) undoOnError(n int, err error) {
	if err == nil {
		return
	}
	for _, p := range r.P[n:] {
		SharedOps.Decref(p)
	}
	r.P = r.P[:n]
}

func appendBuffer(b []byte, refs *Refs, x *Buffer) ([]byte, error) {
	if refs == nil {
		return b, unsupported("a Buffer cannot be passed here")
	}
	if x == nil {
		return b, unsupported("nil *Buffer")
	}
	p, err := x.ref()
	if err != nil {
		return b, unsupported("Buffer was released")
	}
	refs.P = append(refs.P, p)
	b = append(b, TagBuffer)
	return binary.AppendUvarint(b, uint64(len(refs.P)-1)), nil
}

// DecodeRefs is Decode for bytes whose 'B' tags index refs; each becomes a new *Buffer with a
// reference of its own.
func DecodeRefs(b []byte, refs []unsafe.Pointer) (any, error) {
	d := decoder{refs: refs}
	v, rest, err := d.value(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("%d trailing bytes after the value", len(rest))
	}
	return v, nil
}
