package measure_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/internal/measure"
)

func TestRSS(t *testing.T) {
	self, err := measure.RSS(0)
	require.NoError(t, err)
	assert.Positive(t, self)
	byPid, err := measure.RSS(os.Getpid())
	require.NoError(t, err)
	assert.InDelta(t, self, byPid, 64<<20)
	_, err = measure.RSS(-1)
	assert.Error(t, err)
}

func TestPercentiles(t *testing.T) {
	p50, p99 := measure.Percentiles(nil)
	assert.Zero(t, p50)
	assert.Zero(t, p99)
	var lat []time.Duration
	for k := 200; k >= 1; k-- {
		lat = append(lat, time.Duration(k))
	}
	p50, p99 = measure.Percentiles(lat)
	assert.Equal(t, time.Duration(101), p50)
	assert.Equal(t, time.Duration(199), p99)
	p50, p99 = measure.Percentiles([]time.Duration{7})
	assert.Equal(t, time.Duration(7), p50)
	assert.Equal(t, time.Duration(7), p99)
}
