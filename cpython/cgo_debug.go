//go:build pydebug

package cpython

// The Py_DEBUG build of CPython 3.14 (Debian's python3.14-dbg, or ./configure --with-pydebug):
// reference-count checks and C-API assertions on, for the debug test lane.

// #cgo pkg-config: python-3.14d-embed
import "C"
