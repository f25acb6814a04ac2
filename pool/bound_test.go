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

// Task numbers: each put gives a number that takes back that task once; freed numbers are
// reused, so numbers stay as small as the tasks queued at once (and cross without allocating).
func TestTaskTable(t *testing.T) {
	var tt taskTable
	a, b := &task{target: "a"}, &task{target: "b"}
	na, nb := tt.put(a), tt.put(b)
	assert.NotEqual(t, na, nb)
	assert.Same(t, a, tt.take(na))
	assert.Nil(t, tt.take(na), "a number takes its task back once")
	assert.Nil(t, tt.take(-1))
	assert.Nil(t, tt.take(99))
	c := &task{target: "c"}
	assert.Equal(t, na, tt.put(c), "a freed number is reused")
	assert.Same(t, b, tt.take(nb))
	assert.Same(t, c, tt.take(na))
	for range 1000 {
		n := tt.put(a)
		assert.Less(t, n, int64(2))
		tt.take(n)
	}

	// a burst past tableKeep: its memory goes once every task is taken, not before
	ns := make([]int64, tableKeep+10)
	for k := range ns {
		ns[k] = tt.put(a)
	}
	for _, n := range ns[1:] {
		assert.Same(t, a, tt.take(n))
	}
	assert.Len(t, tt.slots, tableKeep+10, "a task is still queued")
	assert.Same(t, a, tt.take(ns[0]))
	assert.Empty(t, tt.slots)
	assert.Empty(t, tt.free)
	assert.Equal(t, int64(0), tt.put(b))
}
