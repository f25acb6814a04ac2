package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEncodingIsTheSpecifiedBytes(t *testing.T) {
	cases := []struct {
		in   any
		want []byte
	}{
		{nil, []byte("N")},
		{true, []byte("T")},
		{false, []byte("F")},
		{int64(1), []byte{'i', 1, 0, 0, 0, 0, 0, 0, 0}},
		{-1, []byte{'i', 255, 255, 255, 255, 255, 255, 255, 255}},
		{uint64(1 << 63), []byte{'I', 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0}},
		{1.0, []byte{'f', 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		{"é", []byte{'s', 2, 0xc3, 0xa9}},
		{[]byte{7}, []byte{'b', 1, 7}},
		{[2]byte{7, 8}, []byte{'b', 2, 7, 8}},
		{[2]namedByte{7, 8}, []byte{'b', 2, 7, 8}}, // named byte types convert by their kind
		{[]namedByte{7}, []byte{'b', 1, 7}},
		{wire.Tuple{nil}, []byte{'t', 1, 'N'}},
		{[]any{}, []byte{'l', 0}},
		{map[string]any{"k": true}, []byte{'d', 1, 's', 1, 'k', 'T'}},
	}
	for _, c := range cases {
		got, err := wire.Append(nil, c.in)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, "%#v", c.in)
		_, err = wire.DecodeAll(got)
		require.NoError(t, err)
	}
}

type namedByte uint8

func TestBigIntTwosComplement(t *testing.T) {
	for _, s := range []string{"9223372036854775808", "-9223372036854775809", "18446744073709551615",
		"-18446744073709551616", "340282366920938463463374607431768211455", "-340282366920938463463374607431768211456"} {
		x, _ := new(big.Int).SetString(s, 10)
		b := wire.AppendBigInt(nil, x)
		v, err := wire.DecodeAll(b)
		require.NoError(t, err)
		assert.Equal(t, 0, x.Cmp(v.(*big.Int)), s)
	}
	// a big int that fits comes back as int64, however it was encoded
	v, err := wire.DecodeAll([]byte{'I', 2, 0xff, 0xff})
	require.NoError(t, err)
	assert.Equal(t, int64(-1), v)
}

// nestedPromises is malformed input that nests 100 lists, each claiming 100,000 items, over
// 100,000 bytes: each length alone fits in the bytes left, all of them together do not.
func nestedPromises() []byte {
	var b []byte
	for range 100 {
		b = binary.AppendUvarint(append(b, 'l'), 100_000)
	}
	return append(b, bytes.Repeat([]byte{'N'}, 100_000)...)
}

// Malformed input cannot make the decoder allocate for more items than it holds bytes.
func TestNestedLengthsAreCheckedTogether(t *testing.T) {
	b := nestedPromises()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := wire.DecodeAll(b)
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, wire.ErrMalformed)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "allocated for items the input cannot hold")
}

func TestMalformed(t *testing.T) {
	cases := map[string][]byte{
		"empty":             {},
		"unknown tag":       {'?'},
		"truncated int":     {'i', 1, 2},
		"truncated float":   {'f'},
		"str too long":      {'s', 5, 'a'},
		"bad uvarint":       {'s', 0x80},
		"invalid utf-8":     {'s', 1, 0xff},
		"empty big int":     {'I', 0},
		"list too long":     {'l', 3, 'N'},
		"dict key not str":  {'d', 1, 'N', 'N'},
		"dict missing val":  {'d', 1, 's', 1, 'k'},
		"trailing bytes":    {'N', 'N'},
		"huge length claim": {'l', 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range cases {
		_, err := wire.DecodeAll(b)
		assert.ErrorIs(t, err, wire.ErrMalformed, name)
	}
}

func TestDepthLimit(t *testing.T) {
	var v any = nil
	for range wire.MaxDepth {
		v = []any{v}
	}
	b, err := wire.Append(nil, v)
	require.NoError(t, err)
	_, err = wire.DecodeAll(b)
	require.NoError(t, err)
	_, err = wire.Append(nil, []any{v})
	assert.ErrorIs(t, err, wire.ErrUnsupported)
	deep := append([]byte{}, b...)
	for range 2 {
		deep = append([]byte{'l', 1}, deep...)
	}
	_, err = wire.DecodeAll(deep)
	assert.ErrorIs(t, err, wire.ErrMalformed)
}

func TestErrorPath(t *testing.T) {
	_, err := wire.Append(nil, []any{1, map[string]any{"a": wire.Tuple{2, complex(1, 1)}}})
	var we *wire.Error
	require.True(t, errors.As(err, &we))
	assert.Equal(t, `[1]["a"][1]`, we.Path)
	assert.Contains(t, we.Error(), "complex128")
}

// A value nested past the depth limit (a Go cycle) gets a short path: its innermost part.
func TestErrorPathOfACycleIsBounded(t *testing.T) {
	a := []any{nil}
	a[0] = a
	_, err := wire.Append(nil, a)
	var we *wire.Error
	require.True(t, errors.As(err, &we))
	assert.Contains(t, we.Msg, "nested deeper")
	assert.Less(t, len(we.Path), 300)
	assert.True(t, strings.HasPrefix(we.Path, "...[0][0]"), we.Path)
}

// FuzzDecode: arbitrary bytes never crash the decoder, and whatever decodes re-encodes to a
// value that decodes the same.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{{'N'}, {'l', 2, 'T', 's', 1, 'x'}, {'d', 1, 's', 0, 'I', 1, 0x80}, {'f', 0, 0, 0, 0, 0, 0, 0xf8, 0x7f}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := wire.DecodeAll(b)
		if err != nil {
			require.ErrorIs(t, err, wire.ErrMalformed)
			return
		}
		again, err := wire.Append(nil, v)
		require.NoError(t, err)
		v2, err := wire.DecodeAll(again)
		require.NoError(t, err)
		if hasNaN(v) {
			return
		}
		require.Equal(t, v, v2)
	})
}

func hasNaN(v any) bool {
	switch x := v.(type) {
	case float64:
		return math.IsNaN(x)
	case []any:
		for _, e := range x {
			if hasNaN(e) {
				return true
			}
		}
	case wire.Tuple:
		return hasNaN([]any(x))
	case map[string]any:
		for _, e := range x {
			if hasNaN(e) {
				return true
			}
		}
	}
	return false
}
