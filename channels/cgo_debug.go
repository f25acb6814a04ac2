//go:build pydebug

package channels

// #cgo pkg-config: python-3.14d-embed
import "C"
