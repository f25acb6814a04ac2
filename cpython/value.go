package cpython

import (
	"fmt"
	"strconv"

	"github.com/pyworkers/pyworkers/internal/wire"
)

// Tuple is a Python tuple. Pass one to send a tuple; a Python tuple comes back as one.
type Tuple = wire.Tuple

// Kwargs passes keyword arguments as the last argument of Call (as another argument it is an
// error; inside a value it is a dict, as any map is).
//
//	t.Call(ctx, "json:dumps", data, cpython.Kwargs{"indent": 2})
type Kwargs map[string]any

// SplitKwargs separates a final Kwargs argument (nil when there is none) from the positional
// arguments, as Call does.
func SplitKwargs(args []any) ([]any, Kwargs) {
	if n := len(args); n > 0 {
		if k, ok := args[n-1].(Kwargs); ok {
			return args[:n-1], k
		}
	}
	return args, nil
}

// encodeCall appends the call encoding (a tuple of positional arguments, then a dict of keyword
// arguments or None) to buf.
func encodeCall(buf []byte, refs *wire.Refs, args []any) ([]byte, error) {
	return encodeArgs(buf, refs, args, -1, 0)
}

// encodeCalls appends CallMany's items: a list of (args tuple, kwargs dict or None), encoded in
// place (no per-item values are built: this is on the path of every Map batch).
func encodeCalls(buf []byte, refs *wire.Refs, items [][]any) ([]byte, error) {
	buf, err := wire.AppendHeader(buf, wire.TagList, len(items), 0)
	for k := 0; k < len(items) && err == nil; k++ {
		if buf, err = wire.AppendHeader(buf, wire.TagTuple, 2, 1); err == nil {
			buf, err = encodeArgs(buf, refs, items[k], k, 2)
		}
	}
	return buf, err
}

// encodeArgs appends one call's arguments: a tuple of the positional ones, then a dict of the
// keyword ones or None, each depth containers deep. item is the call's index in a CallMany
// batch, -1 for Call; a ConversionError's path starts at "args"/"kwargs" for Call and at
// "[item][0]"/"[item][1]" in a batch (where the two sit in the list of pairs).
func encodeArgs(buf []byte, refs *wire.Refs, args []any, item, depth int) ([]byte, error) {
	args, kw := SplitKwargs(args)
	for k, a := range args {
		if _, ok := a.(Kwargs); ok { // not last: surely a mistake, not a dict meant as Kwargs
			return buf, &ConversionError{What: "argument", Path: argsRoot(item, 0) + "[" + strconv.Itoa(k) + "]",
				Reason: "Kwargs must be the last argument (pass a map[string]any for a dict)"}
		}
	}
	buf, err := wire.AppendTupleAt(buf, refs, args, depth)
	if err != nil {
		return buf, conversionError("argument", argsRoot(item, 0), err)
	}
	if kw == nil {
		return append(buf, wire.TagNone), nil
	}
	buf, err = wire.AppendRefsAt(buf, refs, map[string]any(kw), depth)
	if err != nil {
		return buf, conversionError("argument", argsRoot(item, 1), err)
	}
	return buf, nil
}

// argsRoot is where part 0 (positional) or 1 (keyword) of call item's arguments sits; see
// encodeArgs.
func argsRoot(item, part int) string {
	if item < 0 {
		return [...]string{"args", "kwargs"}[part]
	}
	return fmt.Sprintf("[%d][%d]", item, part)
}

// pythonError is the PythonError of a (type, message, traceback) record from the bootstrap, or
// of a SystemExit's (type, message, traceback, exit status).
func pythonError(v any) (*PythonError, error) {
	if t, ok := v.(Tuple); ok && len(t) == 4 {
		status, ok := t[3].(int64)
		if !ok || status < 0 || status > 255 {
			return nil, fmt.Errorf("cpython: internal: a SystemExit's exit status %v (%T)", t[3], t[3])
		}
		pe, err := pythonError(t[:3])
		if err == nil {
			pe.systemExit, pe.exitStatus = true, int(status)
		}
		return pe, err
	}
	s, err := stringTuple(v, 3)
	if err != nil {
		return nil, err
	}
	return &PythonError{Type: s[0], Message: s[1], Traceback: s[2]}, nil
}

// decodeStrings decodes a tuple of n strings (error records from C).
func decodeStrings(b []byte, n int) ([]string, error) {
	v, err := wire.DecodeAll(b)
	if err != nil {
		return nil, err
	}
	return stringTuple(v, n)
}

func stringTuple(v any, n int) ([]string, error) {
	t, ok := v.(Tuple)
	if !ok || len(t) != n {
		return nil, fmt.Errorf("cpython: internal: want a tuple of %d strings, got %T", n, v)
	}
	out := make([]string, n)
	for i, x := range t {
		if out[i], ok = x.(string); !ok {
			return nil, fmt.Errorf("cpython: internal: want a tuple of %d strings, got %T at %d", n, x, i)
		}
	}
	return out, nil
}
