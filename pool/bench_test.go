package pool_test

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/pool"
)

// The workloads are internal/bench's, which `pyworkers bench` runs too; benchPool makes a pool
// that can import them.

func benchPool(b *testing.B, opts pool.Options) *pool.Pool {
	opts.Path = bench.Path
	return newPool(b, opts)
}

// BenchmarkRoundTrip: one tiny task at a time through a 2-worker pool (Call of a no-op).
func BenchmarkRoundTrip(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 2})
	b.ReportAllocs()
	p50, p99, err := bench.RoundTrip(bg, p, b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
}

// BenchmarkThroughput: tiny tasks through a 2-worker pool, from Map and from many goroutines.
func BenchmarkThroughput(b *testing.B) {
	b.Run("map", func(b *testing.B) {
		p := benchPool(b, pool.Options{Workers: 2})
		rate, err := bench.Throughput(bg, p, b.N, "benchfuncs:noop")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rate, "tasks/s")
	})
	for _, callers := range []int{8, 64} {
		b.Run(strconv.Itoa(callers)+"-callers", func(b *testing.B) {
			p := benchPool(b, pool.Options{Workers: 2})
			var wg sync.WaitGroup
			per := b.N/callers + 1
			b.ResetTimer()
			for range callers {
				wg.Go(func() {
					for range per {
						if _, err := p.Call(bg, "benchfuncs:noop"); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*callers)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkCPUSpeedup: 4 CPU-bound tasks (~100 ms each) on 1 worker, then on 2.
func BenchmarkCPUSpeedup(b *testing.B) {
	var one, two time.Duration
	for b.Loop() {
		t1, err := bench.CPUTime(bg, 1, 4, bench.CPU100ms)
		if err != nil {
			b.Fatal(err)
		}
		t2, err := bench.CPUTime(bg, 2, 4, bench.CPU100ms)
		if err != nil {
			b.Fatal(err)
		}
		one, two = one+t1, two+t2
	}
	b.ReportMetric(one.Seconds()/two.Seconds(), "speedup-2v1")
}

// BenchmarkPayload: 1 MB of bytes to a worker and back (copied both ways).
func BenchmarkPayload(b *testing.B) {
	p := benchPool(b, pool.Options{Workers: 2})
	b.SetBytes(2 << 20)
	if _, err := bench.Payload(bg, p, b.N); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStartup: pool.New with 2 workers until the first result.
func BenchmarkStartup(b *testing.B) {
	for b.Loop() {
		d, err := bench.Startup(bg, 2)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(d.Microseconds())/1000, "ms-to-first-result")
	}
}

// BenchmarkIdleWorkerRSS: resident memory of 9 idle workers against 1, per extra worker.
func BenchmarkIdleWorkerRSS(b *testing.B) {
	var mib float64
	for b.Loop() {
		var err error
		if mib, err = bench.IdleWorkerMiB(bg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(mib, "MiB/worker")
}

// BenchmarkPeers runs CPython's own pools (ThreadPoolExecutor, ProcessPoolExecutor,
// InterpreterPoolExecutor) on the same workloads in the same run, with the provisioned
// python3.14 (testdata/bench/peers.py), and reports their figures beside pyworkers' own.
func BenchmarkPeers(b *testing.B) {
	python, err := exec.LookPath("python3.14")
	if err != nil {
		b.Skip("python3.14 is not on PATH (run through scripts/with-python.sh)")
	}
	var peers map[string]bench.Figures
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
			b.ReportMetric(m.TasksPerSec, "tasks/s")
			b.ReportMetric(m.Speedup, "speedup-2v1")
			b.ReportMetric(m.MsToFirstResult, "ms-to-first-result")
			b.ReportMetric(m.MiBPerIdleWorker, "MiB/worker")
		})
	}
}
