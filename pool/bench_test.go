package pool_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyworkers/pyworkers/internal/pwtest"
	"github.com/pyworkers/pyworkers/pool"
)

func rss(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skip("no /proc/self/statm")
	}
	pages, _ := strconv.ParseInt(strings.Fields(string(data))[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkRoundTrip: one tiny task at a time through a 2-worker pool (Call of a no-op).
func BenchmarkRoundTrip(b *testing.B) {
	p := newPool(b, pool.Options{Workers: 2})
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if _, err := p.Call(bg, "benchfuncs:noop"); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkThroughput: tiny tasks from many goroutines through a 2-worker pool.
func BenchmarkThroughput(b *testing.B) {
	for _, callers := range []int{8, 64} {
		b.Run(strconv.Itoa(callers)+"-callers", func(b *testing.B) {
			p := newPool(b, pool.Options{Workers: 2})
			var next sync.WaitGroup
			per := b.N/callers + 1
			b.ResetTimer()
			for range callers {
				next.Go(func() {
					for range per {
						if _, err := p.Call(bg, "benchfuncs:noop"); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			next.Wait()
			b.ReportMetric(float64(per*callers)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
	b.Run("map", func(b *testing.B) {
		p := newPool(b, pool.Options{Workers: 2})
		inputs := func(yield func(any) bool) {
			for range b.N {
				if !yield(pool.Args{}) {
					return
				}
			}
		}
		b.ResetTimer()
		for _, err := range p.Map(bg, "benchfuncs:noop", inputs) {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}

// BenchmarkCPUSpeedup: 8 CPU-bound tasks (~100 ms each) on 1 worker, then on 2.
func BenchmarkCPUSpeedup(b *testing.B) {
	run := func(workers int) time.Duration {
		p := newPool(b, pool.Options{Workers: workers})
		t0 := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := p.Call(bg, "benchfuncs:cpu", 1_500_000); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		return time.Since(t0)
	}
	var one, two time.Duration
	for b.Loop() {
		one += run(1)
		two += run(2)
	}
	b.ReportMetric(one.Seconds()/two.Seconds(), "speedup-2v1")
}

// BenchmarkStartup: pool.New with 2 workers until the first result.
func BenchmarkStartup(b *testing.B) {
	for b.Loop() {
		t0 := time.Now()
		p, err := pool.New(pool.Options{Workers: 2})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Call(bg, "benchfuncs:noop"); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "ms-to-first-result")
		p.Close()
	}
}

// BenchmarkIdleWorkerRSS: resident memory of 9 idle workers against 1, per extra worker.
func BenchmarkIdleWorkerRSS(b *testing.B) {
	measure := func(workers int) int64 {
		p := newPool(b, pool.Options{Workers: workers})
		for range 4 * workers { // every worker has run something
			if _, err := p.Call(context.Background(), "benchfuncs:noop"); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		r := rss(b)
		p.Close()
		return r
	}
	var perWorker float64
	for b.Loop() {
		one := measure(1)
		nine := measure(9)
		perWorker = float64(nine-one) / 8 / (1 << 20)
	}
	b.ReportMetric(perWorker, "MiB/worker")
}

// BenchmarkPeers runs CPython's own pools (ThreadPoolExecutor, ProcessPoolExecutor,
// InterpreterPoolExecutor) on the same workloads in the same run, with the provisioned
// python3.14 (testdata/bench/peers.py), and reports their figures beside pyworkers' own.
func BenchmarkPeers(b *testing.B) {
	python, err := exec.LookPath("python3.14")
	if err != nil {
		b.Skip("python3.14 is not on PATH (run through scripts/with-python.sh)")
	}
	var peers map[string]map[string]float64
	for b.Loop() {
		out, err := exec.Command(python, filepath.Join(pwtest.PythonDir, "..", "bench", "peers.py"), "--quick").Output()
		if err != nil {
			b.Fatalf("peers.py: %v", err)
		}
		if err := json.Unmarshal(out, &peers); err != nil {
			b.Fatalf("peers.py output: %v", err)
		}
	}
	for _, name := range []string{"ThreadPoolExecutor", "ProcessPoolExecutor", "InterpreterPoolExecutor"} {
		m := peers[name]
		b.Run(name, func(b *testing.B) {
			b.ReportMetric(m["roundtrip_p50_us"]*1000, "p50-ns")
			b.ReportMetric(m["roundtrip_p99_us"]*1000, "p99-ns")
			b.ReportMetric(m["tasks_per_s"], "tasks/s")
			b.ReportMetric(m["speedup_2v1"], "speedup-2v1")
			b.ReportMetric(m["ms_to_first_result"], "ms-to-first-result")
			b.ReportMetric(m["mib_per_idle_worker"], "MiB/worker")
		})
	}
}
