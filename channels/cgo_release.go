//go:build !pydebug

package channels

// #cgo pkg-config: python-3.14-embed
import "C"
