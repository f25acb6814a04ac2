package channels

// This package's C (queue.c, pychan.c) sits behind include/pyw_queue.h. It uses the value
// codec and interruptible waits of package cpython's C, which every program importing this
// package links.

// #cgo CFLAGS: -I${SRCDIR}/../include -std=gnu11 -Wall -Wno-unused-function
import "C"
