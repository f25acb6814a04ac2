package pool

import "time"

// SetCWaitersMax sets how many Waits may wait in C at once (0: none, every Wait spins and then
// parks in Go); the returned func restores the value.
func SetCWaitersMax(n int32) (restore func()) {
	old := cWaitersMax.Swap(n)
	return func() { cWaitersMax.Store(old) }
}

// MeanBusy is the group's moving average of its task times.
func (g *Group) MeanBusy() time.Duration { return time.Duration(g.meanBusy.Load()) }

// CWaiters is how many Waits wait in C now, process-wide.
func CWaiters() int32 { return cWaiters.Load() }

// Crowded reports whether a first waiter of one of the group's tasks would park in Go now.
func (g *Group) Crowded() bool { return g.crowded() }

// TaskLimit is a new worker's task limit for MaxTasksPerWorker max.
func TaskLimit(max int) int { return taskLimit(max) }
