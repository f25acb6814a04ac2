package pool

import "time"

// SetCWaitersMax sets how many Waits may wait in C at once (0: none, every Wait spins and then
// parks in Go); the returned func restores the value.
func SetCWaitersMax(n int32) (restore func()) {
	old := cWaitersMax.Swap(n)
	return func() { cWaitersMax.Store(old) }
}

// SpinFor is how long a first waiter of one of the group's tasks would spin now.
func (g *Group) SpinFor() time.Duration { return g.spinFor() }

// Running is how many tasks run on workers now, process-wide.
func Running() int32 { return running.Load() }

// CWaiters is how many Waits wait in C now, process-wide.
func CWaiters() int32 { return cWaiters.Load() }

// Crowded reports whether a first waiter of one of the group's tasks would park in Go now.
func (g *Group) Crowded() bool { return g.crowded() }
