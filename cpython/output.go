package cpython

// #include <stddef.h>
// #include <stdint.h>
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// maxPartial is how much of a line without a newline is held back before it is written anyway.
const maxPartial = 64 << 10

// stream is one of an interpreter's sys.stdout / sys.stderr on the Go side: it gathers text into
// whole lines and hands each batch of whole lines to the writer in one Write, under a lock
// shared by everyone writing to that writer, so that lines of different interpreters never mix.
// Python threads of the interpreter may write concurrently, hence the mutex.
type stream struct {
	mu      sync.Mutex
	def     output // the interpreter's writer (setDefault)
	cur     output // the current call's writer (Thread.SetOutput)
	partial []byte
	owner   uint64 // the interpreter's number among writers' users (see writerLock.open)
	// ownPartial: the interpreter's own thread, which runs the calls, wrote last and left a
	// partial line (see flushOwn). Set under mu; read without it by flushOwn, on that thread.
	ownPartial atomic.Bool
}

func (s *stream) writer() output {
	if s.cur.w != nil {
		return s.cur
	}
	return s.def
}

func (s *stream) write(p []byte, own bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf := p // what is held, then p: p itself when nothing is held (a long write is not copied)
	if len(s.partial) > 0 {
		s.partial = append(s.partial, p...)
		buf = s.partial
	}
	var err error
	rest := buf
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 || len(buf) >= maxPartial {
		if i < 0 || len(buf)-(i+1) >= maxPartial {
			i = len(buf) - 1 // no line end, or a long unfinished line after the last one
		}
		err = s.writer().emit(buf[:i+1], s.owner)
		rest = buf[i+1:]
	}
	if cap(s.partial) > 2*maxPartial {
		s.partial = nil // a long unfinished line went out: its room is not kept for good
	}
	s.partial = append(s.partial[:0], rest...) // at most maxPartial (overlapping: a move)
	s.ownPartial.Store(own && len(s.partial) > 0)
	return err
}

func (s *stream) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *stream) flushLocked() error {
	if len(s.partial) == 0 {
		return nil
	}
	err := s.writer().emit(s.partial, s.owner)
	s.partial = s.partial[:0]
	s.ownPartial.Store(false)
	return err
}

// flushOwn writes out a partial line the interpreter's own thread wrote last: at the end of a
// call, what the call printed without a line end goes out then, not glued to a later call's
// output. A partial line a thread the code started is writing stays held until its line end
// (print writes its pieces one by one), so that lines never break in the middle. Called at
// every call's end on the interpreter's own thread, which sees its own writes: no lock unless
// that thread left a partial line.
func (s *stream) flushOwn() {
	if !s.ownPartial.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ownPartial.Load() {
		s.flushLocked()
	}
}

// setDefault sets the interpreter's writer and its number (owner), once, before any output.
func (s *stream) setDefault(w io.Writer, owner uint64) {
	s.def = newOutput(w)
	s.owner = owner
}

// outputOwners numbers interpreters for their writers (stream.owner).
var outputOwners atomic.Uint64

// setCurrent switches the call writer, writing out what the previous writer still holds.
func (s *stream) setCurrent(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	if s.cur.w == nil && w == nil { // the end of every turn without SetOutput: nothing to do
		return
	}
	s.cur.release()
	s.cur = newOutput(w)
}

// close writes out what is held and gives up the writers (the interpreter has ended).
func (s *stream) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	s.cur.release()
	s.def.release()
	s.cur, s.def = output{}, output{}
}

// output is a writer with the lock every stream writing to it shares.
type output struct {
	w io.Writer
	l *writerLock
}

// writerLock serialises writes to one io.Writer from several interpreters: one per writer, or
// per type for writers that cannot be map keys (a struct value holding a slice, or an
// interface that holds one), which share their type's. Counted by the streams using it and
// forgotten with the last, so that a writer given for one turn is not kept for good.
type writerLock struct {
	mu    sync.Mutex
	key   any
	users int // under writerLocksMu
	// open is the interpreter (stream.owner) whose output to the writer last ended without a
	// line end (a flush, or a call's end, wrote out its partial line); 0: none. Under mu; only
	// for a writer that is its own key (one shared per type cannot tell writers apart).
	open  uint64
	exact bool // the lock's key is the writer itself
}

var (
	writerLocksMu sync.Mutex
	writerLocks   = map[any]*writerLock{}
)

// newOutput is w with its lock, counting one more user of it; the zero output for a nil w.
func newOutput(w io.Writer) output {
	if w == nil {
		return output{}
	}
	var key any = w
	exact := reflect.ValueOf(w).Comparable()
	if !exact { // a map key would panic
		key = reflect.TypeOf(w)
	}
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	l := writerLocks[key]
	if l == nil {
		l = &writerLock{key: key, exact: exact}
		writerLocks[key] = l
	}
	l.users++
	return output{w, l}
}

// release gives up o's use of its lock.
func (o output) release() {
	if o.l == nil {
		return
	}
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	if o.l.users--; o.l.users == 0 {
		delete(writerLocks, o.l.key)
	}
}

// emit writes p, owner's output, to o's writer. When another interpreter left a line
// unfinished there, it is ended first: lines of different interpreters never mix. A writer
// that panics gives an error instead: the write may come from the end of a turn on the
// interpreter's thread, where a panic would end the process.
func (o output) emit(p []byte, owner uint64) (err error) {
	if o.w == nil || len(p) == 0 {
		return nil
	}
	o.l.mu.Lock()
	defer o.l.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cpython: the output writer panicked: %v", r)
		}
	}()
	if o.l.open != 0 && o.l.open != owner {
		if _, err = o.w.Write(lineEnd); err != nil {
			return err
		}
	}
	_, err = o.w.Write(p)
	if o.l.exact { // else the lock is shared by writers of one type
		o.l.open = 0
		if p[len(p)-1] != '\n' {
			o.l.open = owner
		}
	}
	return err
}

var lineEnd = []byte{'\n'}

func (i *Interpreter) stream(fd C.int) *stream {
	if fd == 2 {
		return &i.stderr
	}
	return &i.stdout
}

// The preamble of a file with exported functions may hold declarations only.

// pywGoWrite is called by _pyworkers.write (module.c) with the GIL released; mine says whether
// the interpreter's own thread wrote (see stream.flushOwn).
//
// It returns what writeOutcome makes of the writer's error.
//
//export pywGoWrite
func pywGoWrite(h C.uintptr_t, fd C.int, p *C.char, n C.size_t, mine C.int, why **C.char) (rc C.int) {
	defer recoverWrite(&rc, why)
	s := cgo.Handle(h).Value().(*Interpreter).stream(fd)
	return writeOutcome(s.write(unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n)), mine != 0), why)
}

// pywGoFlush is called by _pyworkers.flush (module.c) with the GIL released; as pywGoWrite.
//
//export pywGoFlush
func pywGoFlush(h C.uintptr_t, fd C.int, why **C.char) (rc C.int) {
	defer recoverWrite(&rc, why)
	return writeOutcome(cgo.Handle(h).Value().(*Interpreter).stream(fd).flush(), why)
}

// recoverWrite, deferred by the exports above, turns a panic into a failed write: a Go panic
// must never unwind through CPython's frames.
func recoverWrite(rc *C.int, why **C.char) {
	if r := recover(); r != nil {
		*rc = writeOutcome(fmt.Errorf("panic: %v", r), why)
	}
}

// writeOutcome is what module.c turns into the OSError of a failed write (0: none): the errno
// the error carries (> 0), so that Python code sees what writing to a file would give it
// (BrokenPipeError for a closed pipe, ENOSPC for a full disk), else -1; and in *why the error's
// text, in C memory, which the C side frees.
func writeOutcome(err error, why **C.char) C.int {
	if err == nil {
		return 0
	}
	*why = C.CString(err.Error())
	if errno := syscall.Errno(0); errors.As(err, &errno) && errno != 0 {
		return C.int(errno)
	}
	return -1
}
