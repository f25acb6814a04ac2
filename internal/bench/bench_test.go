package bench_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// Speedup runs real calls on two warm pools: one ratio per round, all of them sane.
func TestSpeedup(t *testing.T) {
	med, all, err := bench.Speedup(context.Background(), 2, 3, 20_000)
	require.NoError(t, err)
	require.Len(t, all, 3)
	for _, r := range all {
		assert.Greater(t, r, 0.2, "1 worker cannot be 5x faster than 2 on the same calls")
		assert.Less(t, r, 10.0, "2 workers cannot be 10x faster than 1")
	}
	assert.Equal(t, bench.Median(all), med)
}

func TestSpeedupRejectsBadCounts(t *testing.T) {
	_, _, err := bench.Speedup(context.Background(), 0, 3, 1)
	assert.ErrorContains(t, err, "workers ≥ 1")
	_, _, err = bench.Speedup(context.Background(), 2, 0, 1)
	assert.ErrorContains(t, err, "rounds ≥ 1")
}

// A failing call (here: benchfuncs not on the path) is reported, not folded into a ratio.
func TestSpeedupReportsFailedCalls(t *testing.T) {
	saved := bench.Path
	bench.Path = nil
	defer func() { bench.Path = saved }()
	_, all, err := bench.Speedup(context.Background(), 2, 1, 1000)
	pwtest.PyErr(t, err)
	assert.ErrorContains(t, err, "benchfuncs")
	assert.Empty(t, all)
}
