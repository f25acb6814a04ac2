package cpython_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/measure"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

func big2(s string) *big.Int {
	x, ok := new(big.Int).SetString(s, 0)
	if !ok {
		panic(s)
	}
	return x
}

type myInt int16
type myString string

// Go → Python (checked on the Python side by type) → Go.
func TestGoValuesRoundTrip(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	cases := []struct {
		name   string
		in     any
		pyType any // describe() of the value in Python
		back   any // what comes back to Go
	}{
		{"nil", nil, "NoneType", nil},
		{"true", true, "bool", true},
		{"false", false, "bool", false},
		{"int", 42, "int", int64(42)},
		{"negative int", -7, "int", int64(-7)},
		{"int8", int8(-128), "int", int64(-128)},
		{"uint8", uint8(255), "int", int64(255)},
		{"int64 max", int64(math.MaxInt64), "int", int64(math.MaxInt64)},
		{"int64 min", int64(math.MinInt64), "int", int64(math.MinInt64)},
		{"uint64 max", uint64(math.MaxUint64), "int", big2("18446744073709551615")},
		{"named int", myInt(9), "int", int64(9)},
		{"big positive", big2("0x1" + strings.Repeat("0", 40)), "int", big2("0x1" + strings.Repeat("0", 40))},
		{"big negative", big2("-123456789012345678901234567890"), "int", big2("-123456789012345678901234567890")},
		{"big that fits", big.NewInt(-5), "int", int64(-5)},
		{"big -2^63-1", big2("-9223372036854775809"), "int", big2("-9223372036854775809")},
		{"big 2^63", big2("9223372036854775808"), "int", big2("9223372036854775808")},
		{"float", 1.5, "float", 1.5},
		{"float32", float32(0.25), "float", 0.25},
		{"inf", math.Inf(-1), "float", math.Inf(-1)},
		{"max float", math.MaxFloat64, "float", math.MaxFloat64},
		{"string", "héllo, 世界 🐍", "str", "héllo, 世界 🐍"},
		{"empty string", "", "str", ""},
		{"NUL inside", "a\x00b", "str", "a\x00b"},
		{"named string", myString("s"), "str", "s"},
		{"bytes", []byte{0, 1, 255}, "bytes", []byte{0, 1, 255}},
		{"nil bytes", []byte(nil), "bytes", []byte{}},
		{"byte array", [3]byte{1, 2, 3}, "bytes", []byte{1, 2, 3}},
		{"tuple", cpython.Tuple{1, "a"}, []any{"tuple", []any{"int", "str"}}, cpython.Tuple{int64(1), "a"}},
		{"empty tuple", cpython.Tuple{}, []any{"tuple", []any{}}, cpython.Tuple{}},
		{"list", []any{1, 2.5, nil}, []any{"list", []any{"int", "float", "NoneType"}}, []any{int64(1), 2.5, nil}},
		{"typed slice", []string{"x", "y"}, []any{"list", []any{"str", "str"}}, []any{"x", "y"}},
		{"array", [2]int{7, 8}, []any{"list", []any{"int", "int"}}, []any{int64(7), int64(8)}},
		{"map", map[string]any{"a": 1, "b": []any{true}}, []any{"dict", map[string]any{"a": "int", "b": []any{"list", []any{"bool"}}}},
			map[string]any{"a": int64(1), "b": []any{true}}},
		{"typed map", map[string]float64{"pi": 3.14}, []any{"dict", map[string]any{"pi": "float"}}, map[string]any{"pi": 3.14}},
		{"empty map", map[string]any{}, []any{"dict", map[string]any{}}, map[string]any{}},
		{"nested", map[string]any{"t": cpython.Tuple{[]any{map[string]any{"z": []byte("q")}}}},
			[]any{"dict", map[string]any{"t": []any{"tuple", []any{[]any{"list", []any{[]any{"dict", map[string]any{"z": "bytes"}}}}}}}},
			map[string]any{"t": cpython.Tuple{[]any{map[string]any{"z": []byte("q")}}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			typ, err := i.Call(bg, "pwtest:describe", c.in)
			require.NoError(t, err)
			assert.Equal(t, c.pyType, typ)
			back, err := i.Call(bg, "pwtest:ident", c.in)
			require.NoError(t, err)
			assert.Equal(t, c.back, back)
		})
	}
	v, err := i.Call(bg, "pwtest:ident", math.NaN())
	require.NoError(t, err)
	assert.True(t, math.IsNaN(v.(float64)))
}

// Python → Go for values made on the Python side.
func TestPythonValuesToGo(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, "import collections, enum\nclass Color(enum.IntEnum):\n    RED = 1\nPoint = collections.namedtuple('Point', 'x y')"))
	cases := []struct {
		expr string
		want any
	}{
		{"None", nil},
		{"True", true},
		{"2**63 - 1", int64(math.MaxInt64)},
		{"-2**63", int64(math.MinInt64)},
		{"2**63", big2("9223372036854775808")},
		{"-2**200", new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 200))},
		{"0.1", 0.1},
		{"float('inf')", math.Inf(1)},
		{"'\\u00e9\\U0001f40d'", "é🐍"},
		{"b''", []byte{}},
		{"bytearray(b'x')[:0] or b'ab'", []byte("ab")},
		{"(1,)", cpython.Tuple{int64(1)}},
		{"[[], [[]]]", []any{[]any{}, []any{[]any{}}}},
		{"{'a': {'b': (None,)}}", map[string]any{"a": map[string]any{"b": cpython.Tuple{nil}}}},
		{"collections.OrderedDict(k=1)", map[string]any{"k": int64(1)}},
		{"Point(1, 2)", cpython.Tuple{int64(1), int64(2)}},
		{"Color.RED", int64(1)},
		{"True + 1", int64(2)},
	}
	for _, c := range cases {
		got, err := i.Eval(bg, c.expr)
		if assert.NoError(t, err, c.expr) {
			assert.Equal(t, c.want, got, c.expr)
		}
	}
}

// Nil slices and maps are empty containers in Python, as the conversion table says.
func TestNilContainersAreEmpty(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	for _, c := range []struct {
		in   any
		want string
	}{{[]int(nil), "list0"}, {[]byte(nil), "bytes0"}, {map[string]any(nil), "dict0"}} {
		v, err := i.Call(bg, "pwtest:type_and_len", c.in)
		require.NoError(t, err)
		assert.Equal(t, c.want, v, "%T", c.in)
	}
}

func TestGoValuesThatCannotCross(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	cases := []struct {
		name   string
		args   []any
		path   string
		reason string
	}{
		{"chan", []any{make(chan int)}, "args[0]", "chan int"},
		{"func", []any{1, func() {}}, "args[1]", "func()"},
		{"struct", []any{struct{ A int }{1}}, "args[0]", "struct"},
		{"time", []any{time.Time{}}, "args[0]", "time.Time"},
		{"complex", []any{complex(1, 2)}, "args[0]", "complex128"},
		{"pointer", []any{new(int)}, "args[0]", "*int"},
		{"int keys", []any{map[int]string{1: "a"}}, "args[0]", "map key type int"},
		{"invalid UTF-8", []any{"ok", "\xff\xfe"}, "args[1]", "not valid UTF-8"},
		{"invalid UTF-8 key", []any{map[string]any{"\xff": 1}}, "args[0]", "not valid UTF-8"},
		{"nested", []any{[]any{1, map[string]any{"x": []any{2, make(chan int)}}}}, `args[0][1]["x"][1]`, "chan int"},
		{"kwargs", []any{cpython.Kwargs{"bad": struct{}{}}}, `kwargs["bad"]`, "struct"},
		{"nil big", []any{(*big.Int)(nil)}, "args[0]", "nil *big.Int"},
		{"kwargs not last", []any{cpython.Kwargs{"b": 1}, 2}, "args[0]", "Kwargs must be the last argument"},
		// a long key is cut on a character boundary, as the C side cuts a Python key
		{"long key", []any{map[string]any{strings.Repeat("é", 1<<19): make(chan int)}}, `args[0]["` + strings.Repeat("é", 32) + `..."]`, "chan int"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := i.Call(bg, "pwtest:ident", c.args...)
			var ce *cpython.ConversionError
			require.ErrorAs(t, err, &ce)
			assert.ErrorIs(t, err, cpython.ErrUnsupportedValue)
			assert.Equal(t, "argument", ce.What)
			assert.Equal(t, c.path, ce.Path)
			assert.Contains(t, ce.Reason, c.reason)
		})
	}
}

func TestPythonValuesThatCannotCross(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	// str subclasses that are unequal to each other but equal as str: a Go map would keep one
	require.NoError(t, i.Exec(bg, "class K(str):\n    __hash__ = object.__hash__\n    __eq__ = object.__eq__\n"))
	require.NoError(t, i.Exec(bg, "class R(str):\n    def __repr__(self):\n        raise RuntimeError('ran')\n"))
	cases := []struct{ expr, path, reason string }{
		{"{K('a'): 1, K('a'): 2}", "", "two dict keys equal as str ('a')"},
		{"[{'ok': {K('b'): 1, 'b': 2}}]", `[0]["ok"]`, "two dict keys equal as str ('b')"},
		{"{1, 2}", "", "'set'"},
		{"frozenset()", "", "'frozenset'"},
		{"1j", "", "'complex'"},
		{"object()", "", "'object'"},
		{"bytearray(b'x')", "", "'bytearray'"},
		{"{1: 'a'}", "", "dict key of type 'int'"},
		{"'\\ud800'", "", "surrogates not allowed"},
		{"[1, {'x': [2, {3}]}]", `[1]["x"][1]`, "'set'"},
		{"(None, {'k': (1j,)})", `[1]["k"][0]`, "'complex'"},
		// keys as Go writes them (its own text: a str subclass's __repr__ does not run), cut
		// on a character boundary
		{"{'say \"hi\"\\n\\x01': {1}}", `["say \"hi\"\n\x01"]`, "'set'"},
		{"{R('k'): {1}}", `["k"]`, "'set'"},
		{"{'é' * 100: {1}}", `["` + strings.Repeat("é", 32) + `..."]`, "'set'"},
		// types named as Python names them in messages: with their module, but for builtins
		{"__import__('fractions').Fraction(1, 3)", "", "'fractions.Fraction'"},
		{"{__import__('decimal').Decimal(1): 1}", "", "dict key of type 'decimal.Decimal'"},
	}
	v, err := i.Eval(bg, "{K('x'): 1, K('y'): 2}") // subclass keys that differ cross as ever
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"x": int64(1), "y": int64(2)}, v)
	for _, c := range cases {
		_, err := i.Eval(bg, c.expr)
		var ce *cpython.ConversionError
		if assert.ErrorAs(t, err, &ce, c.expr) {
			assert.Equal(t, "result", ce.What)
			assert.Equal(t, c.path, ce.Path, c.expr)
			assert.Contains(t, ce.Reason, c.reason, c.expr)
		}
	}
}

// A dict key in an error's path reads the same whichever way the value was going: Go's quoting,
// cut after 64 bytes of the key on a character boundary.
func TestKeyPathsAlikeBothWays(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, "def bad(k):\n    return {k: {1}}\n"))
	for _, k := range []string{"plain", `a"b\c`, "\x00\x01\a\b\f\n\r\t\v\x1f\x7f", strings.Repeat(`"`, 40),
		strings.Repeat("x", 100), strings.Repeat("é", 40), "日本" + strings.Repeat("y", 63)} {
		_, err := i.Call(bg, "pwtest:ident", map[string]any{k: make(chan int)})
		var goSide, pySide *cpython.ConversionError
		require.ErrorAs(t, err, &goSide, "%q", k)
		_, err = i.Call(bg, "__main__:bad", k)
		require.ErrorAs(t, err, &pySide, "%q", k)
		assert.Equal(t, strings.TrimPrefix(goSide.Path, "args[0]"), pySide.Path, "%q", k)
	}
}

func TestDeepNesting(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	// deep but allowed, both ways
	v, err := i.Call(bg, "pwtest:deep", 5000)
	require.NoError(t, err)
	back, err := i.Call(bg, "pwtest:ident", v)
	require.NoError(t, err)
	assert.Equal(t, v, back)
	// too deep: a clear error, no crash
	_, err = i.Call(bg, "pwtest:deep", 20000)
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "nested deeper than")
	var x any = []any{}
	for range 20000 {
		x = []any{x}
	}
	_, err = i.Call(bg, "pwtest:ident", x)
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "nested deeper than")

	// the set-up's values sit in a dict of fields: the limit counts it, as Python's side does
	x = []any{}
	for range 9999 {
		x = []any{x}
	}
	_, err = cpython.NewInterpreter(bg, cpython.InterpreterConfig{Config: x})
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "config", ce.What)
	assert.Contains(t, ce.Reason, "nested deeper than")
}

// randomValue makes a value of the canonical Go types (those decoding produces).
func randomValue(r *rand.Rand, depth int) any {
	k := r.IntN(12)
	if depth > 4 && k >= 8 {
		k = r.IntN(8)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return r.Int64() - r.Int64()
	case 3:
		x := new(big.Int).Lsh(big.NewInt(r.Int64N(1<<40)+1), uint(64+r.IntN(200)))
		if r.IntN(2) == 0 {
			x.Neg(x)
		}
		return x
	case 4:
		return r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
	case 5:
		return randomString(r)
	case 6, 7:
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		return b
	case 8:
		s := make([]any, r.IntN(5))
		for j := range s {
			s[j] = randomValue(r, depth+1)
		}
		return s
	case 9:
		s := make(cpython.Tuple, r.IntN(5))
		for j := range s {
			s[j] = randomValue(r, depth+1)
		}
		return s
	default:
		m := map[string]any{}
		for range r.IntN(5) {
			m[randomString(r)] = randomValue(r, depth+1)
		}
		return m
	}
}

// randomString makes a valid UTF-8 string from the whole range of code points.
func randomString(r *rand.Rand) string {
	runes := make([]rune, r.IntN(20))
	for j := range runes {
		for {
			runes[j] = rune(r.IntN(0x10FFFF))
			if runes[j] < 0xD800 || runes[j] > 0xDFFF {
				break
			}
		}
	}
	return string(runes)
}

// Property: any value of the canonical types comes back from Python unchanged.
func TestRoundTripProperty(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	r := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		for n := range 2000 {
			v := randomValue(r, 0)
			back, err := th.Call(bg, "pwtest:ident", v)
			if err != nil {
				return err
			}
			if !assert.Equal(t, v, back, "case %d", n) {
				break
			}
		}
		return nil
	}))
}

var fuzzInterp struct {
	once sync.Once
	in   *cpython.Interpreter
	err  error
}

// FuzzGoPythonGo builds a Go value from the fuzzer's bytes, sends it through Python and back,
// and requires it unchanged.
func FuzzGoPythonGo(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{8, 3, 2, 5, 5, 65, 9, 1})
	f.Add([]byte("\x0a\x02\x05\x03abc\x03\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzInterp.once.Do(func() {
			fuzzInterp.in, fuzzInterp.err = cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		})
		require.NoError(t, fuzzInterp.err)
		v := valueFromBytes(&data, 0)
		back, err := fuzzInterp.in.Call(bg, "pwtest:ident", v)
		require.NoError(t, err)
		require.Equal(t, v, back)
	})
}

// valueFromBytes consumes data to build a canonical value deterministically.
func valueFromBytes(data *[]byte, depth int) any {
	next := func() byte {
		if len(*data) == 0 {
			return 0
		}
		b := (*data)[0]
		*data = (*data)[1:]
		return b
	}
	take := func(n int) []byte {
		n = min(n, len(*data))
		b := append([]byte{}, (*data)[:n]...)
		*data = (*data)[n:]
		return b
	}
	switch k := next() % 11; {
	case k == 0:
		return nil
	case k == 1:
		return next()%2 == 0
	case k == 2:
		var x int64
		for _, b := range take(8) {
			x = x<<8 | int64(b)
		}
		return x
	case k == 3:
		x := new(big.Int).SetBytes(take(int(next() % 40)))
		x.Lsh(x, 64)
		if next()%2 == 1 {
			x.Neg(x)
		}
		if x.IsInt64() {
			return x.Int64()
		}
		return x
	case k == 4:
		var u uint64
		for _, b := range take(8) {
			u = u<<8 | uint64(b)
		}
		if f := math.Float64frombits(u); !math.IsNaN(f) { // NaN != NaN: tested on its own
			return f
		}
		return 0.0
	case k == 5:
		return strings.ToValidUTF8(string(take(int(next()%32))), "\uFFFD")
	case k == 6:
		return take(int(next() % 32))
	case depth > 50:
		return nil
	case k == 7, k == 8:
		n := int(next() % 6)
		s := make([]any, n)
		for j := range s {
			s[j] = valueFromBytes(data, depth+1)
		}
		if k == 8 {
			return cpython.Tuple(s)
		}
		return s
	default:
		m := map[string]any{}
		for range int(next() % 6) {
			key := strings.ToValidUTF8(string(take(int(next()%8))), "?")
			m[key] = valueFromBytes(data, depth+1)
		}
		return m
	}
}

func TestSharedBuffersCrossWithoutCopy(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	buf, err := cpython.NewBuffer(8)
	require.NoError(t, err)
	copy(buf.Bytes(), "abcdefgh")
	require.NoError(t, i.Exec(bg, `
held = None
def keep(mv):
    global held
    held = mv
    return (type(mv).__name__, mv.readonly, bytes(mv), len(mv))
`))
	v, err := i.Call(bg, "__main__:keep", buf)
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{"memoryview", true, []byte("abcdefgh"), int64(8)}, v)

	// the same memory, not a copy: a change in Go shows in Python
	buf.Bytes()[0] = 'X'
	v, err = i.Eval(bg, "bytes(held)")
	require.NoError(t, err)
	assert.Equal(t, []byte("Xbcdefgh"), v)
	// read-only on the receiving side
	pe := pwtest.PyErr(t, i.Exec(bg, "held[0] = 1"))
	assert.Equal(t, "TypeError", pe.Type)

	// Go's reference goes; Python's stays valid
	buf.Release()
	buf.Release()
	assert.Nil(t, buf.Bytes())
	v, err = i.Eval(bg, "bytes(held[:2])")
	require.NoError(t, err)
	assert.Equal(t, []byte("Xb"), v)
	_, err = i.Call(bg, "pwtest:ident", buf)
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "released")

	// a pyworkers.Buffer made and filled in Python reaches Go by reference
	v, err = i.Eval(bg, "(lambda b: (memoryview(b).__setitem__(slice(0, 3), b'xyz'), b)[1])(__import__('pyworkers').Buffer(4))")
	require.NoError(t, err)
	gb, ok := v.(*cpython.Buffer)
	require.True(t, ok, "got %T", v)
	assert.Equal(t, []byte("xyz\x00"), gb.Bytes())
	assert.Equal(t, 4, gb.Len())
	gb.Release()

	// a view of part of a buffer cannot be shared
	_, err = i.Eval(bg, "memoryview(__import__('pyworkers').Buffer(4))[1:]")
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Reason, "part of a pyworkers.Buffer")

	v, err = i.Eval(bg, "(repr(__import__('pyworkers').Buffer(3)), len(__import__('pyworkers').Buffer(5)))")
	require.NoError(t, err)
	assert.Equal(t, cpython.Tuple{"<pyworkers.Buffer of 3 bytes>", int64(5)}, v)
}

// A Buffer that Python returned is freed once Go releases it, if Python holds it no more: the
// interpreter keeps no reference of its own to the last result's buffers (it did until its
// next call: an idle worker held on to the last one it returned).
func TestReturnedBufferFreedOnRelease(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	const size = 256 << 20 // malloc'd apart (mmap): freed memory leaves the resident set at once
	require.NoError(t, i.Exec(bg, `
import pyworkers
def touched(n):
    b = pyworkers.Buffer(n)
    mv = memoryview(b)
    for k in range(0, n, 4096):
        mv[k] = 1
    return b
`))
	v, err := i.Call(bg, "__main__:touched", size)
	require.NoError(t, err)
	buf, ok := v.(*cpython.Buffer)
	require.True(t, ok, "got %T", v)
	held, err := measure.RSS(0)
	require.NoError(t, err)
	buf.Release()
	after, err := measure.RSS(0)
	require.NoError(t, err)
	assert.Greater(t, held-after, int64(size/2), "resident %d MiB with the buffer, %d MiB after its Release", held>>20, after>>20)
}

// Release may race with a send of the same Buffer and with Bytes/Len (the type says its methods
// are safe for concurrent use): a send either took its own reference before the Release, and
// Python reads intact memory, or it fails saying the buffer was released; -race sees no race.
func TestBufferReleaseRacesASend(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	sent, refused := 0, 0
	for range 200 {
		buf, err := cpython.NewBuffer(4096)
		require.NoError(t, err)
		buf.Bytes()[4095] = 7
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for buf.Len() != 0 {
				_ = buf.Bytes()
			}
		}()
		go func() {
			defer wg.Done()
			buf.Release()
		}()
		v, err := i.Call(bg, "pwtest:buffer_last_byte", buf)
		wg.Wait()
		if err != nil {
			var ce *cpython.ConversionError
			require.ErrorAs(t, err, &ce)
			assert.Contains(t, ce.Reason, "released")
			refused++
			continue
		}
		assert.Equal(t, int64(7), v)
		sent++
	}
	t.Logf("%d sent before the Release, %d refused after it", sent, refused)
}

// -0.0 keeps its sign both ways (assert.Equal would take 0.0 for it: Signbit says).
func TestNegativeZeroKeepsItsSign(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	v, err := i.Call(bg, "pwtest:ident", math.Copysign(0, -1))
	require.NoError(t, err)
	f, ok := v.(float64)
	require.True(t, ok, "%T", v)
	assert.True(t, math.Signbit(f), "came back as +0")
	v, err = i.Eval(bg, "-0.0")
	require.NoError(t, err)
	assert.True(t, math.Signbit(v.(float64)), "Python's -0.0 reached Go as +0")
}

// The argument buffer is kept from call to call for arguments up to a few MiB (a 1 MiB one
// would otherwise grow a fresh buffer each call), and let go after a larger one.
func TestArgumentBufferKeptUpToAFewMiB(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	for _, c := range []struct {
		size int
		kept bool
	}{{1 << 20, true}, {8 << 20, false}, {1 << 20, true}} {
		_, err := i.Call(bg, "pwtest:ident", make([]byte, c.size))
		require.NoError(t, err)
		if n := cpython.ArgBufCap(i); c.kept {
			assert.Greater(t, n, c.size, "after an argument of %d bytes", c.size)
		} else {
			assert.Zero(t, n, "after an argument of %d bytes", c.size)
		}
	}
}
