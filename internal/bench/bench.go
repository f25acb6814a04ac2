// Package bench holds pyworkers' standard workloads, measured the same way by the pool
// benchmarks (go test -bench ./pool/) and by `pyworkers bench`, beside CPython's own pools
// (py/peers.py) on the same functions (py/benchfuncs.py). The folder Prepare returns must be on
// the interpreters' path (cpython.Config.Path, or Path below).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pyworkers/pyworkers/pool"
)

// Path is given to every pool these functions create (Options.Path).
var Path []string

// Figures are one pool's results. Zero means not measured.
type Figures struct {
	RoundTripP50us    float64 `json:"roundtrip_p50_us"`    // one tiny task at a time
	RoundTripP99us    float64 `json:"roundtrip_p99_us"`    //
	TasksPerSec       float64 `json:"tasks_per_s"`         // tiny tasks, as fast as they go
	CPU1msPerSec      float64 `json:"cpu_1ms_tasks_per_s"` // ~1 ms CPU-bound tasks
	Speedup           float64 `json:"speedup"`             // ~100 ms tasks: N workers against 1
	Payload1MBms      float64 `json:"payload_1mb_ms"`      // 1 MB bytes there and back
	MsToFirstResult   float64 `json:"ms_to_first_result"`  // new pool to the first result
	MiBPerIdleWorker  float64 `json:"mib_per_idle_worker"` // resident memory of 9 idle workers against 1, per worker
	Workers           int     `json:"workers"`
	SpeedupMeasuredOn int     `json:"speedup_workers"`
}

// Sizes of the workloads (benchfuncs.cpu(n) ≈ n/15 µs on the reference machine).
const (
	CPU1ms   = 15_000
	CPU100ms = 1_500_000
)

// Counts of repetitions; Quick is for `pyworkers bench --quick`.
type Counts struct {
	RoundTrips, Tiny, CPU1ms, Payloads int
}

var (
	Full  = Counts{RoundTrips: 5000, Tiny: 100_000, CPU1ms: 2000, Payloads: 200}
	Quick = Counts{RoundTrips: 1000, Tiny: 20_000, CPU1ms: 400, Payloads: 50}
)

// RoundTrip calls a no-op n times, one at a time, and returns the p50 and p99 latencies.
func RoundTrip(ctx context.Context, p *pool.Pool, n int) (p50, p99 time.Duration, err error) {
	lat := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := p.Call(ctx, "benchfuncs:noop"); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// Throughput runs n calls of target(args...) through Map and returns calls per second.
func Throughput(ctx context.Context, p *pool.Pool, n int, target string, args ...any) (float64, error) {
	inputs := func(yield func(any) bool) {
		for range n {
			if !yield(pool.Args(args)) {
				return
			}
		}
	}
	t0 := time.Now()
	for _, err := range p.Map(ctx, target, inputs) {
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// CPUTime runs tasks calls of benchfuncs.cpu(n) at once on a new pool of the given size and
// returns the wall time.
func CPUTime(ctx context.Context, workers, tasks, n int) (time.Duration, error) {
	p, err := pool.New(pool.Options{Workers: workers, Path: Path})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan error, tasks)
	t0 := time.Now()
	for range tasks {
		wg.Go(func() {
			if _, err := p.Call(ctx, "benchfuncs:cpu", n); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return time.Since(t0), <-errs
}

// Payload sends 1 MB of bytes to a worker and back n times; it returns the mean round trip.
func Payload(ctx context.Context, p *pool.Pool, n int) (time.Duration, error) {
	data := make([]byte, 1<<20)
	t0 := time.Now()
	for range n {
		if _, err := p.Call(ctx, "benchfuncs:echo", data); err != nil {
			return 0, err
		}
	}
	return time.Since(t0) / time.Duration(n), nil
}

// Startup creates a pool of the given size and calls a no-op: the time to the first result.
func Startup(ctx context.Context, workers int) (time.Duration, error) {
	t0 := time.Now()
	p, err := pool.New(pool.Options{Workers: workers, Path: Path})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if _, err := p.Call(ctx, "benchfuncs:noop"); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// IdleWorkerMiB measures this process's RSS with 9 idle workers against 1, per extra worker.
func IdleWorkerMiB(ctx context.Context) (float64, error) {
	measure := func(workers int) (int64, error) {
		p, err := pool.New(pool.Options{Workers: workers, Path: Path})
		if err != nil {
			return 0, err
		}
		defer p.Close()
		for range 4 * workers {
			if _, err := p.Call(ctx, "benchfuncs:noop"); err != nil {
				return 0, err
			}
		}
		runtime.GC()
		return RSS()
	}
	one, err := measure(1)
	if err != nil {
		return 0, err
	}
	nine, err := measure(9)
	if err != nil {
		return 0, err
	}
	return float64(nine-one) / 8 / (1 << 20), nil
}

// RSS is this process's resident set size in bytes.
func RSS() (int64, error) {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("reading RSS: %w", err)
	}
	pages, err := strconv.ParseInt(strings.Fields(string(data))[1], 10, 64)
	return pages * int64(os.Getpagesize()), err
}

// Pyworkers measures every workload through pyworkers' pool with the given number of workers.
// benchfuncs must be importable (its folder on the runtime's path).
func Pyworkers(ctx context.Context, workers int, c Counts) (Figures, error) {
	f := Figures{Workers: workers, SpeedupMeasuredOn: workers}
	start, err := Startup(ctx, workers)
	if err != nil {
		return f, err
	}
	f.MsToFirstResult = ms(start)
	p, err := pool.New(pool.Options{Workers: workers, Path: Path})
	if err != nil {
		return f, err
	}
	defer p.Close()
	p50, p99, err := RoundTrip(ctx, p, c.RoundTrips)
	if err != nil {
		return f, err
	}
	f.RoundTripP50us, f.RoundTripP99us = us(p50), us(p99)
	if f.TasksPerSec, err = Throughput(ctx, p, c.Tiny, "benchfuncs:noop"); err != nil {
		return f, err
	}
	if f.CPU1msPerSec, err = Throughput(ctx, p, c.CPU1ms, "benchfuncs:cpu", CPU1ms); err != nil {
		return f, err
	}
	pay, err := Payload(ctx, p, c.Payloads)
	if err != nil {
		return f, err
	}
	f.Payload1MBms = ms(pay)
	one, err := CPUTime(ctx, 1, 2*workers, CPU100ms)
	if err != nil {
		return f, err
	}
	many, err := CPUTime(ctx, workers, 2*workers, CPU100ms)
	if err != nil {
		return f, err
	}
	f.Speedup = one.Seconds() / many.Seconds()
	if f.MiBPerIdleWorker, err = IdleWorkerMiB(ctx); err != nil {
		return f, err
	}
	return f, nil
}

// Peers runs peers.py (from Prepare's folder) with python (a CPython 3.14) and returns the figures of
// ThreadPoolExecutor, ProcessPoolExecutor and InterpreterPoolExecutor.
func Peers(ctx context.Context, python, script string, workers int, quick bool) (map[string]Figures, error) {
	args := []string{script, "--workers", strconv.Itoa(workers)}
	if quick {
		args = append(args, "--quick")
	}
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s %s: %w", python, script, err)
	}
	var peers map[string]Figures
	if err := json.Unmarshal(out, &peers); err != nil {
		return nil, fmt.Errorf("reading %s's output: %w", script, err)
	}
	return peers, nil
}

// PeerNames in the order they are reported.
var PeerNames = []string{"ThreadPoolExecutor", "ProcessPoolExecutor", "InterpreterPoolExecutor"}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
