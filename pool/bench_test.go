package pool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/pool"
)

// The workloads are internal/bench's, which `pyworkers bench` runs too; benchPool makes a pool
// that can import them.

func benchPool(b *testing.B, opts pool.Options) *pool.Pool {
	opts.Path = bench.Path
	return newPool(b, opts)
}

// peersPython is the python that runs peers.py, found as pyworkers bench finds it (bench.FindPython:
// the linked CPython's own, python3.14d for a debug build); "" when there is none.
func peersPython(b *testing.B) string {
	info, err := cpython.RuntimeInfo()
	if err != nil {
		b.Fatal(err)
	}
	return bench.FindPython(info)
}

// BenchmarkRoundTrip: one tiny task at a time through a 2-worker pool (Call of a no-op), with
// context.Background and with a context that can be cancelled (as a request's would be).
func BenchmarkRoundTrip(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 2})
	cancellable, cancel := context.WithCancel(bg)
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"background", bg}, {"cancellable", cancellable}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			p50, p99, err := bench.RoundTrip(c.ctx, p, b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkThroughput: tiny tasks through a 2-worker pool, from Map (batched), from one
// goroutine's Submit per task (as BenchmarkPeers times CPython's pools: executor.submit), and
// from many goroutines calling Call.
func BenchmarkThroughput(b *testing.B) {
	rate := func(name string, measure func(p *pool.Pool, n int) (float64, error)) {
		b.Run(name, func(b *testing.B) {
			r, err := measure(benchPool(b, pool.Options{Workers: 2}), b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r, "tasks/s")
		})
	}
	rate("map", func(p *pool.Pool, n int) (float64, error) { return bench.Throughput(bg, p, n, "benchfuncs:noop") })
	rate("submit", func(p *pool.Pool, n int) (float64, error) { return bench.ThroughputEach(bg, p, n, "benchfuncs:noop") })
	rate("submit-cancellable", func(p *pool.Pool, n int) (float64, error) { // as a server's request context is
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		return bench.ThroughputEach(ctx, p, n, "benchfuncs:noop")
	})
	// goroutines, each making calls one after the other
	concurrent := func(name string, goroutines int, call func(p *pool.Pool) error) {
		b.Run(name, func(b *testing.B) {
			p := benchPool(b, pool.Options{Workers: 2})
			var wg sync.WaitGroup
			per := b.N/goroutines + 1
			b.ResetTimer()
			for range goroutines {
				wg.Go(func() {
					for range per {
						if err := call(p); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*goroutines)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
	concurrent("8-requests", 8, func(p *pool.Pool) error { // each task under a context of its own
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		f, err := p.Submit(ctx, "benchfuncs:noop")
		if err == nil {
			_, err = f.Wait(ctx)
		}
		return err
	})
	for _, callers := range []int{8, 64} {
		concurrent(strconv.Itoa(callers)+"-callers", callers, func(p *pool.Pool) error {
			_, err := p.Call(bg, "benchfuncs:noop")
			return err
		})
	}
}

// BenchmarkCallOverhead: 1 and 2 goroutines calling, 2 workers, calls of ~50 µs to ~1 ms; the
// metrics are the median time a Call took beyond the function's own run, timed inside Python
// (the hand-off both ways, argument and result conversion, and waking the caller), and calls/s.
func BenchmarkCallOverhead(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 2, Preload: []string{"benchfuncs"}})
	for _, callers := range []int{1, 2} {
		for _, n := range []int{750, 1500, 3000, 15000} { // benchfuncs.cpu(n) ≈ n/15 µs
			b.Run(fmt.Sprintf("%d-callers/%dus", callers, n/15), func(b *testing.B) {
				var mu sync.Mutex
				var over []float64
				per := b.N/callers + 1
				var wg sync.WaitGroup
				for range callers {
					wg.Go(func() {
						mine := make([]float64, 0, per)
						for range per {
							t0 := time.Now()
							v, err := p.Call(bg, "benchfuncs:loop", 1, n)
							if err != nil {
								b.Error(err)
								return
							}
							mine = append(mine, float64(time.Since(t0).Nanoseconds())/1e3-v.(float64)*1e6)
						}
						mu.Lock()
						over = append(over, mine...)
						mu.Unlock()
					})
				}
				wg.Wait()
				b.ReportMetric(bench.Median(over), "us-beyond-call")
				b.ReportMetric(float64(per*callers)/b.Elapsed().Seconds(), "calls/s")
			})
		}
	}
}

// BenchmarkCPUSpeedup: 64 CPU-bound calls (~6 ms each) on 1 worker against 2 warm workers,
// timed in ABBA pairs (bench.Speedup), two pairs per iteration; metrics: the median, lowest and
// highest ratio over all pairs, and the medians of what it is made of (see bench.Pairs): how
// busy the 2 workers were, and how much longer a call took while 2 ran than while 1 did.
// When python3.14 is on PATH, each iteration also times the same calls in 2 separate python
// processes against 1 (bench.SeparateSpeedup: what the machine gives at that moment to work
// that shares nothing) and reports pyworkers' ratio as a fraction of it. native-loop-2v1 is the
// same for 2 threads of a Go loop that touches no memory (bench.NativeSpeedup): the machine's
// own ceiling at that moment. Use -benchtime Nx.
func BenchmarkCPUSpeedup(b *testing.B) {
	python := peersPython(b)
	var all bench.Pairs
	var separate, fraction, native []float64
	for b.Loop() {
		pairs, err := bench.Speedup(bg, 2, 2, bench.CPU6ms)
		if err != nil {
			b.Fatal(err)
		}
		all.Ratio = append(all.Ratio, pairs.Ratio...)
		all.Busy = append(all.Busy, pairs.Busy...)
		all.CallTime = append(all.CallTime, pairs.CallTime...)
		if python != "" {
			c, err := bench.SeparateSpeedup(bg, python, filepath.Join(benchDir, "peers.py"), 2, 2, bench.CPU6ms)
			if err != nil {
				b.Fatal(err)
			}
			separate = append(separate, c)
			fraction = append(fraction, bench.Median(pairs.Ratio)/c)
		}
		c, err := bench.NativeSpeedup(2, 2, 6*time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		native = append(native, c)
	}
	b.ReportMetric(bench.Median(all.Ratio), "speedup-2v1")
	b.ReportMetric(slices.Min(all.Ratio), "lowest")
	b.ReportMetric(slices.Max(all.Ratio), "highest")
	b.ReportMetric(bench.Median(all.Busy), "workers-busy")
	b.ReportMetric(bench.Median(all.CallTime), "call-time-2v1")
	b.ReportMetric(bench.Median(native), "native-loop-2v1")
	if python != "" {
		b.ReportMetric(bench.Median(separate), "separate-processes-2v1")
		b.ReportMetric(bench.Median(fraction), "of-separate")
	}
}

// BenchmarkPythonSpeed: the same loop of 300 ~1 ms calls timed inside one pyworkers interpreter
// and inside python3.14, alternately (bench.PythonSpeed, 4 rounds per iteration): Python's own
// speed on the libpython pyworkers links and in the executable CPython's pools run in.
func BenchmarkPythonSpeed(b *testing.B) {
	python := peersPython(b)
	if python == "" {
		b.Skip("no python3.14 of the linked CPython, nor on PATH (run through scripts/with-python.sh)")
	}
	var ours, theirs []float64
	for b.Loop() {
		o, t, err := bench.PythonSpeed(bg, python, filepath.Join(benchDir, "peers.py"), 4, 300, bench.CPU1ms)
		if err != nil {
			b.Fatal(err)
		}
		ours, theirs = append(ours, o), append(theirs, t)
	}
	b.ReportMetric(bench.Median(ours), "pyworkers-ms/call")
	b.ReportMetric(bench.Median(theirs), "python3.14-ms/call")
	b.ReportMetric(bench.Median(ours)/bench.Median(theirs), "ratio")
}

// BenchmarkCancel: how long a running call takes to stop once its context is cancelled, by what
// it is doing then: spinning in pure Python, in time.sleep, awaiting in an async target, and
// awaiting a child task that never awaits (the loop cannot take the cancellation:
// KeyboardInterrupt after 50 ms). Call returns at once when its context ends; the call
// stops when the pool's only worker is free again: timed from cancel to the return of a
// no-op call queued behind it. Metrics: the median and the slowest iteration, in ms. Each call
// is cancelled 20 ms after it was handed over.
func BenchmarkCancel(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 1, Preload: []string{"asyncio", "benchfuncs", "pwtest"}})
	for _, c := range []struct {
		name, target string
		args         []any
	}{
		{"spin", "pwtest:spin", nil},
		{"time.sleep", "pwtest:sleep_then", []any{3600, nil}},
		{"await", "pwtest:async_sleep_then", []any{3600, nil}},
		{"await-loop-blocked", "pwtest:await_blocked", nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			var ms []float64
			for b.Loop() {
				ctx, cancel := context.WithCancel(bg)
				var at time.Time
				time.AfterFunc(20*time.Millisecond, func() { at = time.Now(); cancel() })
				_, err := p.Call(ctx, c.target, c.args...)
				if !errors.Is(err, context.Canceled) {
					b.Fatalf("%s: want a cancelled call, got %v", c.target, err)
				}
				if _, err := p.Call(bg, "benchfuncs:noop"); err != nil {
					b.Fatal(err)
				}
				ms = append(ms, float64(time.Since(at).Microseconds())/1000)
			}
			b.ReportMetric(bench.Median(ms), "ms-p50")
			b.ReportMetric(slices.Max(ms), "ms-max")
		})
	}
}

// BenchmarkPayload: 1 MiB of bytes to a worker and back (copied both ways).
func BenchmarkPayload(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 2})
	b.SetBytes(2 << 20)
	if _, err := bench.Payload(bg, p, b.N); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStartup: pool.New with 2 workers until the first result; the metric is the median of
// the iterations (it was the last one's alone, which a slow moment of the machine could make
// twice the others).
func BenchmarkStartup(b *testing.B) {
	var ms []float64
	for b.Loop() {
		d, err := bench.Startup(bg, 2)
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, float64(d.Microseconds())/1000)
	}
	b.ReportMetric(bench.Median(ms), "ms-to-first-result")
}

// BenchmarkIdleWorkerRSS: resident memory of 9 idle workers against 1, per extra worker. Each
// measurement runs in a fresh process (this test binary again, running only this benchmark):
// in a process that has already run other benchmarks, new workers reuse freed memory and would
// look cheaper than they are for a user's first pool.
func BenchmarkIdleWorkerRSS(b *testing.B) {
	if os.Getenv(rssChildEnv) != "" {
		mib, err := bench.IdleWorkerMiB(bg)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%s %g\n", rssChildEnv, mib)
		return
	}
	var all []float64
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkIdleWorkerRSS$", "-test.benchtime=1x")
		cmd.Env = append(os.Environ(), rssChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("the measuring process failed: %v\n%s", err, out)
		}
		_, rest, ok := strings.Cut(string(out), rssChildEnv+" ")
		var mib float64
		if ok {
			mib, err = strconv.ParseFloat(strings.Fields(rest + " ")[0], 64)
		}
		if !ok || err != nil {
			b.Fatalf("no figure in the measuring process's output:\n%s", out)
		}
		all = append(all, mib)
	}
	b.ReportMetric(bench.Median(all), "MiB/worker")
}

const rssChildEnv = "PYWORKERS_RSS_CHILD"

// BenchmarkPeers runs CPython's own pools (ThreadPoolExecutor, ProcessPoolExecutor,
// InterpreterPoolExecutor) on the same workloads in the same run, with the provisioned
// python3.14 (internal/bench/py/peers.py), and reports their figures beside pyworkers' own.
func BenchmarkPeers(b *testing.B) {
	python := peersPython(b)
	if python == "" {
		b.Skip("no python3.14 of the linked CPython, nor on PATH (run through scripts/with-python.sh)")
	}
	var peers map[string]bench.Figures
	var err error
	for b.Loop() {
		peers, err = bench.Peers(bg, python, filepath.Join(benchDir, "peers.py"), 2, true)
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, name := range bench.PeerNames {
		m := peers[name]
		b.Run(name, func(b *testing.B) {
			b.ReportMetric(m.RoundTripP50us*1000, "p50-ns")
			b.ReportMetric(m.RoundTripP99us*1000, "p99-ns")
			b.ReportMetric(m.TasksPerSecEach, "tasks/s-each")
			b.ReportMetric(m.TasksPerSec, "tasks/s-map")
			b.ReportMetric(m.Speedup, "speedup-2v1")
			b.ReportMetric(m.MsToFirstResult, "ms-to-first-result")
			b.ReportMetric(m.MiBPerIdleWorker, "MiB/worker")
		})
	}
	b.Run(bench.Separate, func(b *testing.B) { b.ReportMetric(peers[bench.Separate].Speedup, "speedup-2v1") })
}
