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
	"time"

	"github.com/pyworkers/pyworkers/internal/measure"
	"github.com/pyworkers/pyworkers/pool"
)

// Path is given to every pool these functions create (Options.Path).
var Path []string

// Figures are one pool's results. Zero means not measured.
type Figures struct {
	RoundTripP50us float64 `json:"roundtrip_p50_us"` // one tiny task at a time
	RoundTripP99us float64 `json:"roundtrip_p99_us"` //
	// Tiny tasks as fast as they go: TasksPerSec through the batching API (pyworkers' Map, which
	// hands a worker up to 32 calls at once; CPython's executor.map with chunksize 32, which only
	// ProcessPoolExecutor batches), TasksPerSecEach with one submit per task (Submit;
	// executor.submit), all submitted before the results are waited for in order.
	TasksPerSec      float64 `json:"tasks_per_s"`
	TasksPerSecEach  float64 `json:"tasks_per_s_each"`
	CPU1msPerSec     float64 `json:"cpu_1ms_tasks_per_s"` // ~1 ms CPU-bound tasks
	Speedup          float64 `json:"speedup"`             // CPU-bound calls: N workers against 1 (median of paired rounds)
	Payload1MBms     float64 `json:"payload_1mb_ms"`      // 1 MiB of bytes there and back
	MsToFirstResult  float64 `json:"ms_to_first_result"`  // new pool to the first result
	MiBPerIdleWorker float64 `json:"mib_per_idle_worker"` // resident memory of 9 idle workers against 1, per worker
	PythonCallMs     float64 `json:"python_call_ms"`      // a ~1 ms call timed inside one interpreter (PythonSpeed)
	// What pyworkers' Speedup is made of (medians of Pairs.Busy and Pairs.CallTime; not measured
	// for CPython's pools): Speedup ≈ workers × SpeedupBusy / SpeedupCallTime.
	SpeedupBusy     float64 `json:"speedup_workers_busy"`    // how busy the workers were while timed
	SpeedupCallTime float64 `json:"speedup_call_time_ratio"` // a call's time with N workers busy over with 1
	// The machine's own ceiling: N threads of a Go loop that touches no memory against 1
	// (NativeSpeedup; 0 when GOMAXPROCS is below N).
	NativeSpeedup     float64 `json:"native_speedup,omitempty"`
	Workers           int     `json:"workers"`
	SpeedupMeasuredOn int     `json:"speedup_workers"`
}

// Sizes of the workloads (benchfuncs.cpu(n) ≈ n/15 µs on the reference machine).
const (
	CPU1ms = 15_000
	CPU6ms = 90_000
)

// SpeedupCallsPerWorker is how many calls per worker the speed-up is measured with (all of them on
// the single worker), so that a pool can even out its workers as it would over any real batch
// or stream of calls: a batch ends with one worker idle while another finishes its last call,
// for up to a call's time, and more so when one worker's core runs slower (on a shared VM, one
// often does). With 2 calls each, the workers were busy 89–92 % of the time; with 8 calls of
// ~25 ms, 95–98 %; with 32 of ~6 ms, 98–99 %.
const SpeedupCallsPerWorker = 32

// Counts of repetitions; Quick is for `pyworkers bench --quick`.
type Counts struct {
	RoundTrips, Tiny, CPU1ms, Payloads int
	// SpeedupRounds pairs of SpeedupCall-sized calls (benchfuncs.cpu's n) measure the speed-up.
	SpeedupRounds, SpeedupCall int
	// LoopRounds rounds of LoopCalls ~1 ms calls measure Python's own speed (PythonSpeed).
	LoopRounds, LoopCalls int
}

var (
	Full  = Counts{RoundTrips: 5000, Tiny: 100_000, CPU1ms: 2000, Payloads: 200, SpeedupRounds: 10, SpeedupCall: CPU6ms, LoopRounds: 4, LoopCalls: 300}
	Quick = Counts{RoundTrips: 1000, Tiny: 20_000, CPU1ms: 400, Payloads: 50, SpeedupRounds: 8, SpeedupCall: CPU1ms, LoopRounds: 2, LoopCalls: 100}
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
	p50, p99 = measure.Percentiles(lat)
	return p50, p99, nil
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

// ThroughputEach runs n calls of target(args...), each handed over with its own Submit, then
// waits for them in order, as peers.py times CPython's pools with executor.submit: the cost of
// a call with no batching. It returns calls per second.
func ThroughputEach(ctx context.Context, p *pool.Pool, n int, target string, args ...any) (float64, error) {
	futures := make([]*pool.Future, n)
	t0 := time.Now()
	for k := range futures {
		f, err := p.Submit(ctx, target, args...)
		if err != nil {
			return 0, err
		}
		futures[k] = f
	}
	for _, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// Pairs is what Speedup measured: one entry per ABBA pair in each slice, in order.
type Pairs struct {
	// Ratio is the wall time of one worker over that of the many: the speed-up.
	Ratio []float64
	// Busy is how busy the many workers were: their time in calls over workers × wall time.
	// Below 1 when a worker waited for a call, or had no call left while another finished its
	// last (at the end of the batch; more so when one worker's core runs slower).
	Busy []float64
	// CallTime is the mean time of a call while the many workers ran over that while one did:
	// how much slower the machine runs each of several busy cores (1: not at all). Ratio =
	// workers × Busy / CallTime, to within the single worker's idle moments.
	CallTime []float64
}

// Speedup measures how much faster `workers` workers finish SpeedupCallsPerWorker×workers calls
// of benchfuncs.cpu(n) than one worker does. Both pools are made and warmed before any clock starts. It runs rounds
// pairs of timings in ABBA order (one, many; many, one; ...): the CPU speed of a shared virtual
// machine drifts over seconds, and timing the single worker only before the many (as a plain
// before/after would) folds that drift into the result. The speed-up is Median(pairs.Ratio).
func Speedup(ctx context.Context, workers, rounds, n int) (Pairs, error) {
	var out Pairs
	if workers < 1 || rounds < 1 {
		return out, fmt.Errorf("bench: Speedup needs workers ≥ 1 and rounds ≥ 1, got %d and %d", workers, rounds)
	}
	var pools [2]*pool.Pool
	for i, size := range []int{1, workers} {
		var err error
		opts := pool.Options{Workers: size, Path: Path, Preload: []string{"benchfuncs"}} // imported before any timing
		if pools[i], err = pool.New(opts); err != nil {
			return out, err
		}
		defer pools[i].Close()
		if _, err := cpuWall(ctx, pools[i], size, 1); err != nil { // and called once
			return out, err
		}
	}
	for r := range rounds {
		var wall, busy [2]time.Duration
		for _, i := range abba(r) {
			before := busyTime(pools[i])
			var err error
			if wall[i], err = cpuWall(ctx, pools[i], SpeedupCallsPerWorker*workers, n); err != nil {
				return out, err
			}
			busy[i] = busyTime(pools[i]) - before
		}
		out.Ratio = append(out.Ratio, wall[0].Seconds()/wall[1].Seconds())
		out.Busy = append(out.Busy, busy[1].Seconds()/(float64(workers)*wall[1].Seconds()))
		out.CallTime = append(out.CallTime, busy[1].Seconds()/busy[0].Seconds())
	}
	return out, nil
}

// busyTime is the time p's workers have spent in calls so far.
func busyTime(p *pool.Pool) time.Duration {
	var d time.Duration
	for _, g := range p.Stats().Groups {
		for _, w := range g.PerWorker {
			d += w.Busy
		}
	}
	return d
}

// cpuWall submits tasks calls of benchfuncs.cpu(n) at once to p, waits for them in order and
// returns the wall time: as a Go program runs a batch, and as peers.py's executor.map does.
func cpuWall(ctx context.Context, p *pool.Pool, tasks, n int) (time.Duration, error) {
	futures := make([]*pool.Future, tasks)
	t0 := time.Now()
	for k := range futures {
		var err error
		if futures[k], err = p.Submit(ctx, "benchfuncs:cpu", n); err != nil {
			return 0, err
		}
	}
	for _, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

// Median of xs (xs is not changed); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Payload sends 1 MiB of bytes to a worker and back n times; it returns the mean round trip.
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
	rssWith := func(workers int) (int64, error) {
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
		return measure.RSS(0)
	}
	one, err := rssWith(1)
	if err != nil {
		return 0, err
	}
	nine, err := rssWith(9)
	if err != nil {
		return 0, err
	}
	return float64(nine-one) / 8 / (1 << 20), nil
}

// Pyworkers measures every workload through pyworkers' pool with the given number of workers.
// benchfuncs must be importable (its folder on the runtime's path).
func Pyworkers(ctx context.Context, workers int, c Counts) (Figures, error) {
	f := Figures{Workers: workers, SpeedupMeasuredOn: workers}
	var err error
	// Memory first, while the process is fresh: later workers reuse what earlier ones freed.
	if f.MiBPerIdleWorker, err = IdleWorkerMiB(ctx); err != nil {
		return f, err
	}
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
	if f.TasksPerSecEach, err = ThroughputEach(ctx, p, c.Tiny, "benchfuncs:noop"); err != nil {
		return f, err
	}
	if f.TasksPerSec, err = Throughput(ctx, p, c.Tiny, "benchfuncs:noop_arg", nil); err != nil {
		return f, err
	}
	if f.CPU1msPerSec, err = ThroughputEach(ctx, p, c.CPU1ms, "benchfuncs:cpu", CPU1ms); err != nil {
		return f, err
	}
	pay, err := Payload(ctx, p, c.Payloads)
	if err != nil {
		return f, err
	}
	f.Payload1MBms = ms(pay)
	pairs, err := Speedup(ctx, workers, c.SpeedupRounds, c.SpeedupCall)
	if err != nil {
		return f, err
	}
	f.Speedup = Median(pairs.Ratio)
	f.SpeedupBusy, f.SpeedupCallTime = Median(pairs.Busy), Median(pairs.CallTime)
	if workers <= runtime.GOMAXPROCS(0) { // as long a loop as a call (benchfuncs.cpu(n) ≈ n/15 µs)
		call := time.Duration(c.SpeedupCall) * time.Millisecond / CPU1ms
		if f.NativeSpeedup, err = NativeSpeedup(workers, c.SpeedupRounds, call); err != nil {
			return f, err
		}
	}
	return f, nil
}

// Peers runs peers.py (from Prepare's folder) with python (a CPython 3.14) and returns the figures of
// ThreadPoolExecutor, ProcessPoolExecutor and InterpreterPoolExecutor.
func Peers(ctx context.Context, python, script string, workers int, quick bool) (map[string]Figures, error) {
	args := []string{"--workers", strconv.Itoa(workers)}
	if quick {
		args = append(args, "--quick")
	}
	return runPeers(ctx, python, script, args...)
}

// SeparateSpeedup times the same calls (benchfuncs.cpu(n)) in workers separate, warm python
// processes against one, in rounds pairs as Speedup does, and returns the median ratio: what
// this machine gives at the moment with nothing shared (see Separate).
func SeparateSpeedup(ctx context.Context, python, script string, workers, rounds, n int) (float64, error) {
	out, err := runPeers(ctx, python, script, "--workers", strconv.Itoa(workers),
		"--only-separate", strconv.Itoa(rounds), "--call", strconv.Itoa(n))
	if err != nil {
		return 0, err
	}
	return out[Separate].Speedup, nil
}

func runPeers(ctx context.Context, python, script string, args ...string) (map[string]Figures, error) {
	args = append(args, "--calls-per-worker", strconv.Itoa(SpeedupCallsPerWorker)) // like for like
	cmd := exec.CommandContext(ctx, python, append([]string{script}, args...)...)
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

// OneInterpreter is the entry of peers.py --only-loop: Python's own speed in that executable.
const OneInterpreter = "one interpreter"

// PythonSpeed times the same loop, calls calls of benchfuncs.cpu(n), inside one pyworkers
// interpreter and inside python (a python3.14 executable, running peers.py --only-loop),
// alternately in ABBA order, rounds times each, and returns the median time per call of each:
// how fast Python itself runs on the libpython pyworkers links and in that executable. The two
// can differ: Debian's python3.14 executable is linked statically from a separate, faster
// build than its shared libpython (see the README's "Measured").
func PythonSpeed(ctx context.Context, python, script string, rounds, calls, n int) (ours, theirs float64, err error) {
	if rounds < 1 || calls < 1 {
		return 0, 0, fmt.Errorf("bench: PythonSpeed needs rounds ≥ 1 and calls ≥ 1, got %d and %d", rounds, calls)
	}
	p, err := pool.New(pool.Options{Workers: 1, Path: Path})
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	inPool := func(k int) (float64, error) {
		v, err := p.Call(ctx, "benchfuncs:loop", k, n)
		if err != nil {
			return 0, err
		}
		secs, ok := v.(float64)
		if !ok {
			return 0, fmt.Errorf("bench: benchfuncs.loop returned %T, not float", v)
		}
		return secs / float64(k) * 1e3, nil
	}
	if _, err := inPool(1); err != nil { // warm, as peers.py warms its side
		return 0, 0, err
	}
	inPython := func(k int) (float64, error) {
		out, err := runPeers(ctx, python, script, "--only-loop", strconv.Itoa(k), "--call", strconv.Itoa(n))
		if err != nil {
			return 0, err
		}
		v := out[OneInterpreter].PythonCallMs
		if v <= 0 {
			return 0, fmt.Errorf("bench: %s --only-loop gave no time per call", script)
		}
		return v, nil
	}
	sides := [2]func(int) (float64, error){inPool, inPython}
	var ms [2][]float64
	for r := range rounds {
		for _, i := range abba(r) {
			v, err := sides[i](calls)
			if err != nil {
				return 0, 0, err
			}
			ms[i] = append(ms[i], v)
		}
	}
	return Median(ms[0]), Median(ms[1]), nil
}

// abba is the order of the two sides in round r: 0 then 1, then 1 then 0, and so on, so that a
// drift of the machine's speed weighs on both alike.
func abba(r int) [2]int {
	if r%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// Separate is Peers' entry that only holds a Speedup: the same CPU-bound calls run in independent
// python processes with nothing shared, timed as Speedup times pyworkers. It is not a peer but
// the reference: what the machine gives at the moment to work that shares nothing.
const Separate = "separate processes"

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
