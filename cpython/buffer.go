package cpython

// #include "pyw.h"
import "C"

import (
	"errors"
	"unsafe"

	"github.com/pyworkers/pyworkers/internal/wire"
)

// Buffer is memory shared between Go and interpreters without copying: the Go face of
// pyworkers.Buffer. Pass a *Buffer as an argument (Python receives a read-only memoryview of the
// same memory), or receive one when Python returns a pyworkers.Buffer. See wire.Buffer's
// methods: Bytes, Len, Release. Safe for concurrent use; the memory itself is not synchronised.
type Buffer = wire.Buffer

func init() {
	wire.SharedOps.Incref = func(p unsafe.Pointer) { C.pyw_shared_incref((*C.pyw_shared)(p)) }
	wire.SharedOps.Decref = func(p unsafe.Pointer) { C.pyw_shared_decref((*C.pyw_shared)(p)) }
	wire.SharedOps.Data = func(p unsafe.Pointer) []byte {
		s := (*C.pyw_shared)(p)
		if s.len == 0 {
			return []byte{}
		}
		return unsafe.Slice((*byte)(unsafe.Pointer(s.data)), int(s.len))
	}
}

// NewBuffer allocates a zeroed shared buffer of n bytes (64-byte aligned). Fill it through
// Bytes, then pass it to Python; Release it when done (the garbage collector releases a lost
// one eventually).
func NewBuffer(n int) (*Buffer, error) {
	if n < 0 {
		return nil, errors.New("cpython: NewBuffer: negative size")
	}
	p := C.pyw_shared_new(C.size_t(n))
	if p == nil {
		return nil, errors.New("cpython: NewBuffer: out of memory")
	}
	return wire.WrapShared(unsafe.Pointer(p)), nil
}

// cRefs presents a table of shared buffers to C.
func cRefs(r *wire.Refs) (**C.pyw_shared, C.size_t) {
	p, n := r.Table()
	return (**C.pyw_shared)(p), C.size_t(n)
}

// goRefs presents a table of shared buffers from C to wire.DecodeRefs.
func goRefs(p **C.pyw_shared, n C.size_t) []unsafe.Pointer {
	return wire.TableAt(unsafe.Pointer(p), int(n))
}
