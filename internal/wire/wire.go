// Package wire is the Go side of pyworkers' interpreter-neutral value encoding.
//
// The format is specified in include/pyw_wire.h; the C side (cpython/codec.c) converts the same
// bytes to and from Python objects. Encoding takes Go values of the supported kinds; decoding
// yields only these Go types:
//
//	None → nil            bool → bool           int → int64, or *big.Int when it does not fit
//	float → float64       str → string          bytes → []byte
//	list → []any          tuple → Tuple         dict → map[string]any
//
// The package is pure Go and safe for concurrent use.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is the deepest nesting of containers either side encodes or decodes (PYW_MAX_DEPTH).
const MaxDepth = 10000

// Tags, as in include/pyw_wire.h.
const (
	TagNone   = 'N'
	TagTrue   = 'T'
	TagFalse  = 'F'
	TagInt    = 'i'
	TagBigInt = 'I'
	TagFloat  = 'f'
	TagStr    = 's'
	TagBytes  = 'b'
	TagTuple  = 't'
	TagList   = 'l'
	TagDict   = 'd'
	TagBuffer = 'B'
)

// Tuple is a Python tuple: encoded as one, and what a decoded tuple becomes.
type Tuple []any

// ErrUnsupported is wrapped by every error about a value that has no Python counterpart.
var ErrUnsupported = errors.New("unsupported value")

// ErrMalformed is wrapped by every error about bytes that are not a valid encoding.
var ErrMalformed = errors.New("malformed encoding")

// Error describes a value that could not be encoded or decoded, and where it sits in the
// structure (Path, e.g. `[2]["name"]`, empty for the top level).
type Error struct {
	Path string
	Msg  string
	Err  error // ErrUnsupported or ErrMalformed
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return "at " + e.Path + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// maxPath bounds an error's path: past it, the outer elements are left out ("..."). A value
// nested 10,000 deep (a Go cycle) would otherwise build its path anew at every level.
const maxPath = 256

// prefix puts one path element in front of the error's path as it unwinds.
func prefix(err error, elem string) error {
	var we *Error
	if errors.As(err, &we) {
		switch {
		case len(we.Path) < maxPath:
			we.Path = elem + we.Path
		case !strings.HasPrefix(we.Path, "..."):
			we.Path = "..." + we.Path
		}
	}
	return err
}

func unsupported(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

func malformed(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...), Err: ErrMalformed}
}

// Append appends the encoding of v to buf. On error buf is returned unchanged in length
// semantics: callers must discard what was appended after the original length.
func Append(buf []byte, v any) ([]byte, error) {
	return appendValue(buf, nil, v, 0)
}

// AppendAt is Append for a value nested depth containers deep (see AppendHeader), so that the
// depth limit counts the containers around it, as the decoder does.
func AppendAt(buf []byte, v any, depth int) ([]byte, error) {
	return appendValue(buf, nil, v, depth)
}

var bigIntType = reflect.TypeFor[*big.Int]()

func appendValue(b []byte, refs *Refs, v any, depth int) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, TagNone), nil
	case bool:
		if x {
			return append(b, TagTrue), nil
		}
		return append(b, TagFalse), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case uint32:
		return appendInt(b, int64(x)), nil
	case uint16:
		return appendInt(b, int64(x)), nil
	case uint8:
		return appendInt(b, int64(x)), nil
	case float64:
		return appendFloat(b, x), nil
	case float32:
		return appendFloat(b, float64(x)), nil
	case string:
		if !utf8.ValidString(x) {
			return b, unsupported("string is not valid UTF-8 (%s)", quoteShort(x))
		}
		return appendBlob(b, TagStr, x), nil
	case []byte:
		if x == nil {
			return appendBlob(b, TagBytes, ""), nil
		}
		b = append(b, TagBytes)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	case *big.Int:
		if x == nil {
			return b, unsupported("nil *big.Int")
		}
		return AppendBigInt(b, x), nil
	case *Buffer:
		return appendBuffer(b, refs, x)
	case Tuple:
		return appendSeq(b, refs, TagTuple, x, depth)
	case []any:
		return appendSeq(b, refs, TagList, x, depth)
	case map[string]any:
		return appendMap(b, refs, x, depth)
	}
	return appendReflect(b, refs, reflect.ValueOf(v), depth)
}

func appendInt(b []byte, x int64) []byte {
	b = append(b, TagInt)
	return binary.LittleEndian.AppendUint64(b, uint64(x))
}

func appendUint(b []byte, x uint64) []byte {
	if x <= math.MaxInt64 {
		return appendInt(b, int64(x))
	}
	return AppendBigInt(b, new(big.Int).SetUint64(x))
}

func appendFloat(b []byte, x float64) []byte {
	b = append(b, TagFloat)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
}

func appendBlob(b []byte, tag byte, s string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendBigInt appends x as 'i' when it fits in an int64, else as 'I' (two's complement).
func AppendBigInt(b []byte, x *big.Int) []byte {
	if x.IsInt64() {
		return appendInt(b, x.Int64())
	}
	n := (x.BitLen() + 8) / 8 // magnitude bits plus a sign bit, rounded up to bytes
	t := new(big.Int).Set(x)
	if x.Sign() < 0 {
		t.Add(t, new(big.Int).Lsh(big.NewInt(1), uint(8*n)))
	}
	be := t.FillBytes(make([]byte, n))
	b = append(b, TagBigInt)
	b = binary.AppendUvarint(b, uint64(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, be[i])
	}
	return b
}

// AppendHeader starts a container of n elements (its tag and length) at nesting depth (0 at the
// top level), depth permitting. The caller appends the elements after it, each with
// AppendRefsAt at depth+1 (for TagDict, a key and a value per element, as appendMap does).
func AppendHeader(b []byte, tag byte, n, depth int) ([]byte, error) {
	if depth >= MaxDepth {
		return b, unsupported("nested deeper than %d containers (does a value hold itself?)", MaxDepth)
	}
	return binary.AppendUvarint(append(b, tag), uint64(n)), nil
}

// appendItem appends element i of a sequence.
func appendItem(b []byte, refs *Refs, i int, v any, depth int) ([]byte, error) {
	b, err := appendValue(b, refs, v, depth+1)
	if err != nil {
		return b, prefix(err, "["+strconv.Itoa(i)+"]")
	}
	return b, nil
}

// appendEntry appends one key and value of a dict.
func appendEntry(b []byte, refs *Refs, k string, v any, depth int) ([]byte, error) {
	if !utf8.ValidString(k) {
		return b, unsupported("map key is not valid UTF-8 (%s)", quoteShort(k))
	}
	b, err := appendValue(appendBlob(b, TagStr, k), refs, v, depth+1)
	if err != nil {
		return b, prefix(err, keyElem(k))
	}
	return b, nil
}

func appendSeq(b []byte, refs *Refs, tag byte, items []any, depth int) ([]byte, error) {
	b, err := AppendHeader(b, tag, len(items), depth)
	for i := 0; i < len(items) && err == nil; i++ {
		b, err = appendItem(b, refs, i, items[i], depth)
	}
	return b, err
}

func appendMap(b []byte, refs *Refs, m map[string]any, depth int) ([]byte, error) {
	b, err := AppendHeader(b, TagDict, len(m), depth)
	for k, v := range m {
		if err != nil {
			break
		}
		b, err = appendEntry(b, refs, k, v, depth)
	}
	return b, err
}

// appendReflect handles named types and typed containers ([]int, map[string]float64, ...).
func appendReflect(b []byte, refs *Refs, rv reflect.Value, depth int) ([]byte, error) {
	if !rv.IsValid() {
		return append(b, TagNone), nil
	}
	switch rv.Kind() {
	case reflect.Bool:
		return appendValue(b, refs, rv.Bool(), depth)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return appendInt(b, rv.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return appendUint(b, rv.Uint()), nil
	case reflect.Float32, reflect.Float64:
		return appendFloat(b, rv.Float()), nil
	case reflect.String:
		return appendValue(b, refs, rv.String(), depth)
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			if rv.Kind() == reflect.Slice {
				return appendValue(b, refs, rv.Bytes(), depth)
			}
			buf := make([]byte, rv.Len()) // byte by byte: reflect.Copy wants uint8, not a named byte type
			for j := range buf {
				buf[j] = byte(rv.Index(j).Uint())
			}
			return appendValue(b, refs, buf, depth)
		}
		b, err := AppendHeader(b, TagList, rv.Len(), depth)
		for i := 0; i < rv.Len() && err == nil; i++ {
			b, err = appendItem(b, refs, i, rv.Index(i).Interface(), depth)
		}
		return b, err
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return b, unsupported("map key type %s is not supported (Python dicts crossing interpreters need str keys)", rv.Type().Key())
		}
		b, err := AppendHeader(b, TagDict, rv.Len(), depth)
		for iter := rv.MapRange(); err == nil && iter.Next(); {
			b, err = appendEntry(b, refs, iter.Key().String(), iter.Value().Interface(), depth)
		}
		return b, err
	case reflect.Pointer:
		if rv.Type() == bigIntType {
			return appendValue(b, refs, rv.Interface().(*big.Int), depth)
		}
	case reflect.Interface:
		if rv.IsNil() {
			return append(b, TagNone), nil
		}
		return appendValue(b, refs, rv.Elem().Interface(), depth)
	}
	return b, unsupported("Go type %s has no Python counterpart", rv.Type())
}

// keyElem is the path element of map key k: ["k"], a key longer than 64 bytes cut on a
// character boundary, with "..." (a 1 MiB key would make a 1 MiB error), as the C side does.
func keyElem(k string) string {
	cut := len(k) > 64
	if cut {
		n := 64
		for n > 0 && !utf8.RuneStart(k[n]) {
			n--
		}
		k = k[:n]
	}
	q := strconv.Quote(k)
	if cut {
		q = q[:len(q)-1] + `..."`
	}
	return "[" + q + "]"
}

func quoteShort(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strconv.QuoteToASCII(s)
}

// decoder carries the table of shared buffers 'B' tags refer to (none for DecodeAll).
type decoder struct {
	refs []unsafe.Pointer
	// promised counts the items of the sequences being decoded that have not begun: each takes
	// at least a byte of what is left, so a sequence whose length leaves too few for them is
	// malformed. A length checked against the bytes left alone would let nested sequences
	// promise far more items than the input holds, each allocated before any is read.
	promised int
}

// DecodeAll decodes exactly one value that must fill b (no shared buffers: see DecodeRefs).
func DecodeAll(b []byte) (any, error) { return DecodeRefs(b, nil) }

func readLen(b []byte, what string) (int, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, b, malformed("bad %s length", what)
	}
	if n > uint64(len(b)-k) {
		return 0, b, malformed("%s length %d exceeds the %d bytes left", what, n, len(b)-k)
	}
	return int(n), b[k:], nil
}

func (d *decoder) value(b []byte, depth int) (any, []byte, error) {
	if len(b) == 0 {
		return nil, b, malformed("truncated: value expected")
	}
	tag, b := b[0], b[1:]
	switch tag {
	case TagNone:
		return nil, b, nil
	case TagTrue:
		return true, b, nil
	case TagFalse:
		return false, b, nil
	case TagInt:
		if len(b) < 8 {
			return nil, b, malformed("truncated int")
		}
		return int64(binary.LittleEndian.Uint64(b)), b[8:], nil
	case TagBigInt:
		n, rest, err := readLen(b, "int")
		if err != nil {
			return nil, b, err
		}
		if n == 0 {
			return nil, b, malformed("empty int")
		}
		x := DecodeBigInt(rest[:n])
		if x.IsInt64() {
			return x.Int64(), rest[n:], nil
		}
		return x, rest[n:], nil
	case TagFloat:
		if len(b) < 8 {
			return nil, b, malformed("truncated float")
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), b[8:], nil
	case TagStr:
		n, rest, err := readLen(b, "str")
		if err != nil {
			return nil, b, err
		}
		s := string(rest[:n])
		if !utf8.ValidString(s) {
			return nil, b, malformed("str is not valid UTF-8")
		}
		return s, rest[n:], nil
	case TagBytes:
		n, rest, err := readLen(b, "bytes")
		if err != nil {
			return nil, b, err
		}
		return append([]byte{}, rest[:n]...), rest[n:], nil
	case TagBuffer:
		idx, k := binary.Uvarint(b)
		if k <= 0 || idx >= uint64(len(d.refs)) || d.refs[idx] == nil {
			return nil, b, malformed("bad shared buffer reference")
		}
		SharedOps.Incref(d.refs[idx])
		return WrapShared(d.refs[idx]), b[k:], nil
	case TagTuple, TagList:
		if depth >= MaxDepth {
			return nil, b, malformed("nested deeper than %d containers", MaxDepth)
		}
		n, rest, err := readLen(b, "sequence") // every item takes at least one byte
		if err != nil {
			return nil, b, err
		}
		if n > len(rest)-d.promised {
			return nil, b, malformed("sequence of %d items with %d bytes left for them", n, len(rest)-d.promised)
		}
		items := make([]any, n)
		d.promised += n
		for i := range items {
			d.promised--
			if items[i], rest, err = d.value(rest, depth+1); err != nil {
				return nil, b, prefix(err, "["+strconv.Itoa(i)+"]")
			}
		}
		if tag == TagTuple {
			return Tuple(items), rest, nil
		}
		return items, rest, nil
	case TagDict:
		if depth >= MaxDepth {
			return nil, b, malformed("nested deeper than %d containers", MaxDepth)
		}
		n, rest, err := readLen(b, "dict")
		if err != nil {
			return nil, b, err
		}
		m := make(map[string]any, min(n, 1024))
		for i := range n {
			if len(rest) == 0 || rest[0] != TagStr {
				return nil, b, malformed("dict key %d is not a str", i)
			}
			var k, v any
			if k, rest, err = d.value(rest, depth+1); err != nil {
				return nil, b, err
			}
			if v, rest, err = d.value(rest, depth+1); err != nil {
				return nil, b, prefix(err, "["+strconv.Quote(k.(string))+"]")
			}
			m[k.(string)] = v
		}
		return m, rest, nil
	}
	return nil, b, malformed("unknown tag 0x%02x", tag)
}

// DecodeBigInt reads little-endian two's complement bytes (len(le) >= 1).
func DecodeBigInt(le []byte) *big.Int {
	n := len(le)
	be := make([]byte, n)
	for i := range n {
		be[i] = le[n-1-i]
	}
	x := new(big.Int).SetBytes(be)
	if be[0]&0x80 != 0 {
		x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*n)))
	}
	return x
}
