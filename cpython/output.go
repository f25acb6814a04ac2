package cpython

// #include <stddef.h>
// #include <stdint.h>
import "C"

import (
	"bytes"
	"io"
	"reflect"
	"runtime/cgo"
	"sync"
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
	def     io.Writer // the interpreter's writer
	cur     io.Writer // the current call's writer (Thread.SetOutput), or nil
	partial []byte
}

func (s *stream) writer() io.Writer {
	if s.cur != nil {
		return s.cur
	}
	return s.def
}

func (s *stream) write(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	i := bytes.LastIndexByte(s.partial, '\n')
	if i < 0 && len(s.partial) < maxPartial {
		return nil
	}
	if i < 0 {
		i = len(s.partial) - 1
	}
	err := emit(s.writer(), s.partial[:i+1])
	n := copy(s.partial, s.partial[i+1:])
	s.partial = s.partial[:n]
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
	err := emit(s.writer(), s.partial)
	s.partial = s.partial[:0]
	return err
}

// setCurrent switches the call writer, writing out what the previous writer still holds.
func (s *stream) setCurrent(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	s.cur = w
}

// writerLocks serialises writes to one io.Writer from several interpreters: one lock per
// writer, or per type for writers that cannot be map keys (a struct value holding a slice, or
// an interface that holds one), which share their type's.
var writerLocks sync.Map // io.Writer or reflect.Type -> *sync.Mutex

func emit(w io.Writer, p []byte) error {
	if w == nil || len(p) == 0 {
		return nil
	}
	var key any = w
	if !reflect.ValueOf(w).Comparable() { // a map key would panic
		key = reflect.TypeOf(w)
	}
	m, ok := writerLocks.Load(key)
	if !ok { // a writer's first batch: no mutex made for every later one
		m, _ = writerLocks.LoadOrStore(key, new(sync.Mutex))
	}
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	_, err := w.Write(p)
	return err
}

func (i *Interpreter) stream(fd C.int) *stream {
	if fd == 2 {
		return &i.stderr
	}
	return &i.stdout
}

// The preamble of a file with exported functions may hold declarations only.

// pywGoWrite is called by _pyworkers.write (module.c) with the GIL released.
//
//export pywGoWrite
func pywGoWrite(h C.uintptr_t, fd C.int, p *C.char, n C.size_t) (rc C.int) {
	defer func() { // never unwind a Go panic through CPython's frames
		if recover() != nil {
			rc = -1
		}
	}()
	i := cgo.Handle(h).Value().(*Interpreter)
	if err := i.stream(fd).write(unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))); err != nil {
		return -1
	}
	return 0
}

// pywGoFlush is called by _pyworkers.flush (module.c) with the GIL released.
//
//export pywGoFlush
func pywGoFlush(h C.uintptr_t, fd C.int) (rc C.int) {
	defer func() {
		if recover() != nil {
			rc = -1
		}
	}()
	i := cgo.Handle(h).Value().(*Interpreter)
	if err := i.stream(fd).flush(); err != nil {
		return -1
	}
	return 0
}
