package cpython_test

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/measure"
)

// rssBytes is this process's resident set size.
func rssBytes(b *testing.B) int64 {
	rss, err := measure.RSS(0)
	if err != nil {
		b.Skip(err)
	}
	return rss
}

// BenchmarkCreateClose: one own-GIL interpreter created, given one call, and ended; reports
// how much RSS grew per cycle. Nothing is left behind, so the growth in all stays bounded as the
// cycles grow (-benchtime 100x, 1000x, 3000x: about 1-2 MiB in all, the allocator settling).
func BenchmarkCreateClose(b *testing.B) {
	// warm up: the first interpreters fault in the stdlib and the allocator's arenas
	for range 5 {
		in, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		if err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
	runtime.GC()
	rss0 := rssBytes(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		in, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := in.Call(bg, "pwtest:noop"); err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
	b.StopTimer()
	runtime.GC()
	b.ReportMetric(float64(rssBytes(b)-rss0)/float64(b.N)/1024, "rss-KiB/op")
}

// BenchmarkThreadCall: a trivial function called on the interpreter's thread (inside Do),
// the cost pyworkers adds over the C API, per call.
func BenchmarkThreadCall(b *testing.B) { benchThreadCall(b, "pwtest:noop") }

// BenchmarkThreadCallArgs: the same with two int arguments and an int result.
func BenchmarkThreadCallArgs(b *testing.B) { benchThreadCall(b, "pwtest:add", 1, 2) }

func benchThreadCall(b *testing.B, target string, args ...any) {
	in := newInterp(b, cpython.InterpreterConfig{})
	b.ReportAllocs()
	err := in.Do(bg, func(t *cpython.Thread) error {
		for b.Loop() {
			if _, err := t.Call(bg, target, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkInterpreterCall: Interpreter.Call from another goroutine, i.e. with the hand-off to
// the interpreter's locked thread and back (what package pool optimises).
func BenchmarkInterpreterCall(b *testing.B) {
	in := newInterp(b, cpython.InterpreterConfig{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.Call(bg, "pwtest:noop"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvert: large values through Python and back (pwtest.ident), both directions.
func BenchmarkConvert(b *testing.B) {
	mb := make([]byte, 1<<20)
	ints := make([]any, 100_000)
	for k := range ints {
		ints[k] = k
	}
	dict := make(map[string]any, 10_000)
	for k := range 10_000 {
		dict["key"+strconv.Itoa(k)] = []any{k, "v", 1.5}
	}
	in := newInterp(b, cpython.InterpreterConfig{})
	for _, c := range []struct {
		name string
		v    any
		size int64
	}{
		{"bytes-1MiB", mb, 1 << 20},
		{"list-100k-ints", ints, 0},
		{"dict-10k-entries", dict, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.size > 0 {
				b.SetBytes(c.size)
			}
			b.ReportAllocs()
			err := in.Do(bg, func(t *cpython.Thread) error {
				for b.Loop() {
					if _, err := t.Call(bg, "pwtest:ident", c.v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
