package cpython

// All of this package's C lives in *.c next to this file, behind one header, include/pyw.h.

// #cgo CFLAGS: -I${SRCDIR}/../include -std=gnu11 -Wall -Wno-unused-function
import "C"
