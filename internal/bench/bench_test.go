package bench_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

func TestMain(m *testing.M) {
	_, cleanup, err := bench.Setup()
	if err != nil {
		panic(err)
	}
	pwtest.Main(m, cleanup)
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), c.in...)
		assert.Equal(t, c.want, bench.Median(c.in), "%v", c.in)
		assert.Equal(t, in, c.in, "Median must not reorder its input")
	}
}

// Speedup runs real calls on two warm pools: one entry per round in each figure, all of them
// sane, and the speed-up is what the pool's and the machine's shares make.
func TestSpeedup(t *testing.T) {
	// Calls of ~6 ms, as the benchmark's: with ~1 ms calls the single worker's idle moments
	// (under -race, its Go side between calls is far slower) came to 28 % of a round once.
	pairs, err := bench.Speedup(context.Background(), 2, 3, bench.CPU6ms)
	require.NoError(t, err)
	require.Len(t, pairs.Ratio, 3)
	require.Len(t, pairs.Busy, 3)
	require.Len(t, pairs.CallTime, 3)
	for i, r := range pairs.Ratio {
		assert.Greater(t, r, 0.2, "1 worker cannot be 5x faster than 2 on the same calls")
		assert.Less(t, r, 10.0, "2 workers cannot be 10x faster than 1")
		assert.Greater(t, pairs.Busy[i], 0.0)
		assert.LessOrEqual(t, pairs.Busy[i], 1.0, "workers cannot be busier than the wall time")
		assert.Greater(t, pairs.CallTime[i], 0.0)
		// Ratio = 2 × Busy / CallTime, but for the single worker's idle moments (hand-offs, and
		// a Go scheduler stall of up to a few ms: 6 ms calls keep that under the tolerance)
		t.Logf("round %d: ratio %.3f, 2 × busy / call time %.3f", i, r, 2*pairs.Busy[i]/pairs.CallTime[i])
		assert.InEpsilon(t, 2*pairs.Busy[i]/pairs.CallTime[i], r, 0.25, "round %d", i)
	}
}

// PythonSpeed times the same loop in a pyworkers interpreter and in a python3.14 executable
// (python3.14d when pyworkers links the Py_DEBUG build, several times slower).
func TestPythonSpeed(t *testing.T) {
	info, err := cpython.RuntimeInfo()
	require.NoError(t, err)
	python := bench.FindPython(info) // the linked CPython's own, as pyworkers bench finds it
	if python == "" {
		t.Skip(bench.PythonName(info) + " is neither in the linked CPython's bin nor on PATH")
	}
	// 3 rounds: the median drops one stalled round
	ours, theirs, err := bench.PythonSpeed(context.Background(), python, filepath.Join(bench.Path[0], "peers.py"), 3, 50, 2000)
	require.NoError(t, err)
	t.Logf("ms per call: %.3f in pyworkers, %.3f in %s", ours, theirs, python)
	assert.Positive(t, ours)
	assert.Positive(t, theirs)
	assert.Less(t, ours/theirs, 10.0, "the same loop, 10x apart: not the same work")
	assert.Greater(t, ours/theirs, 0.1, "the same loop, 10x apart: not the same work")
	_, _, err = bench.PythonSpeed(context.Background(), python, "", 0, 20, 2000)
	assert.ErrorContains(t, err, "rounds ≥ 1")
}

func TestSpeedupRejectsBadCounts(t *testing.T) {
	_, err := bench.Speedup(context.Background(), 0, 3, 1)
	assert.ErrorContains(t, err, "workers ≥ 1")
	_, err = bench.Speedup(context.Background(), 2, 0, 1)
	assert.ErrorContains(t, err, "rounds ≥ 1")
}

// A failing call (here: benchfuncs not on the path) is reported, not folded into a ratio.
func TestSpeedupReportsFailedCalls(t *testing.T) {
	saved := bench.Path
	bench.Path = nil
	defer func() { bench.Path = saved }()
	pairs, err := bench.Speedup(context.Background(), 2, 1, 1000)
	pwtest.PyErr(t, err)
	assert.ErrorContains(t, err, "benchfuncs")
	assert.Empty(t, pairs.Ratio)
}

// NativeSpeedup times real threads: 1 against 1 is about 1, 2 against 1 between what a machine
// without a second core and one with two full ones can give; bad input is refused.
func TestNativeSpeedup(t *testing.T) {
	one, err := bench.NativeSpeedup(1, 2, time.Millisecond)
	require.NoError(t, err)
	assert.InDelta(t, 1, one, 0.5, "the same work on 1 thread twice")
	two, err := bench.NativeSpeedup(2, 2, time.Millisecond)
	require.NoError(t, err)
	assert.Greater(t, two, 0.5)
	assert.Less(t, two, 2.5, "2 threads cannot be much more than 2x faster than 1")
	for _, c := range []struct {
		workers, rounds int
		call            time.Duration
	}{{0, 1, time.Millisecond}, {1, 0, time.Millisecond}, {1, 1, 0}, {runtime.GOMAXPROCS(0) + 1, 1, time.Millisecond}} {
		_, err := bench.NativeSpeedup(c.workers, c.rounds, c.call)
		assert.Error(t, err, "%+v", c)
	}
}
