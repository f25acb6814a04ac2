package bench

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// NativeSpeedup is the machine's own ceiling for Speedup: how much faster `workers` OS threads
// finish SpeedupCallsPerWorker×workers chunks of a pure-Go arithmetic loop (about call long
// each) than one thread finishes them all, in rounds ABBA pairs, median ratio. The loop shares
// nothing and touches no memory, so what keeps it under `workers`× is the machine alone: on a
// shared virtual machine two busy cores can each run slower than one (the host's clock or
// load), and a Python call, which does touch memory, is slowed as much or more.
func NativeSpeedup(workers, rounds int, call time.Duration) (float64, error) {
	if workers < 1 || rounds < 1 || call <= 0 {
		return 0, fmt.Errorf("bench: NativeSpeedup needs workers ≥ 1, rounds ≥ 1 and call > 0, got %d, %d and %v", workers, rounds, call)
	}
	if p := runtime.GOMAXPROCS(0); p < workers {
		return 0, fmt.Errorf("bench: NativeSpeedup with %d threads needs GOMAXPROCS ≥ %d, it is %d", workers, workers, p)
	}
	n := spinFor(call)
	chunks := SpeedupCallsPerWorker * workers
	var ratios []float64
	for r := range rounds {
		var wall [2]time.Duration
		for _, i := range abba(r) {
			threads := [2]int{1, workers}[i]
			wall[i] = spinWall(threads, chunks/threads, n)
		}
		ratios = append(ratios, wall[0].Seconds()/wall[1].Seconds())
	}
	return Median(ratios), nil
}

// spinWall runs share loops of n steps on each of threads OS threads; the wall time.
func spinWall(threads, share, n int) time.Duration {
	var wg sync.WaitGroup
	t0 := time.Now()
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // a thread of its own for the whole share, as a worker has
			defer runtime.UnlockOSThread()
			for range share {
				spinSink.Add(spin(n))
			}
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

// spinFor returns the number of spin steps that take about d on this machine.
func spinFor(d time.Duration) int {
	n := 1 << 16
	for {
		t0 := time.Now()
		spin(n)
		if el := time.Since(t0); el >= d/8 {
			return int(float64(n) * d.Seconds() / el.Seconds())
		}
		n *= 2
	}
}

// spinSink keeps the compiler from dropping spin's work.
var spinSink atomic.Uint64

// spin is a step of a 64-bit linear congruential generator with an xorshift, n times: registers
// only.
//
//go:noinline
func spin(n int) uint64 {
	x := uint64(n) | 1
	for range n {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 17
	}
	return x
}
