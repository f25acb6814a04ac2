//go:build !pydebug

package cpython

// The release build of CPython 3.14. Build with -tags pydebug to link the Py_DEBUG build instead.

// #cgo pkg-config: python-3.14-embed
import "C"
