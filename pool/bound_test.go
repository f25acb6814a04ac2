package pool

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The task queue's capacity for a QueueSize: unbounded stays unbounded, and a size too large
// to count the bound for does not wrap around into a small (or negative) capacity.
func TestHandleBound(t *testing.T) {
	assert.Equal(t, 0, handleBound(0))
	assert.Equal(t, 4+1024, handleBound(1))
	assert.Equal(t, 4*1000+1024, handleBound(1000))
	assert.Equal(t, 0, handleBound(math.MaxInt))
	assert.Equal(t, 0, handleBound(math.MaxInt/4))
	big := (math.MaxInt - 1024) / 4
	assert.Equal(t, 4*big+1024, handleBound(big))
	assert.Positive(t, handleBound(big))
}
