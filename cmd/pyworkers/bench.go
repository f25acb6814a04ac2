package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"text/tabwriter"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
)

const benchUsage = `Usage: pyworkers bench [-w N] [--json] [--quick]

Measures standard workloads through pyworkers' pool and, in the same run, through CPython's
ThreadPoolExecutor, ProcessPoolExecutor and InterpreterPoolExecutor (with the python3.14 that
pyworkers runs on): tiny-task round trip and throughput (a submit per task, and through map in
chunks of 32: pyworkers' Map batches, of CPython's pools only ProcessPoolExecutor does), ~1 ms
CPU-bound tasks, the speed-up of CPU-bound tasks (32 per worker, ~6 ms each; ~1 ms with
--quick) on N workers against 1, 1 MiB payloads, pool start to first result (pyworkers starts
all N workers, CPython's pools one), and memory per idle worker (for ProcessPoolExecutor its
processes' proportional set sizes, shared pages counted once). Prints a table with each
figure's ratio to the best peer (--json for machines). Speed-ups are medians of paired timings;
beside them, the same calls in N separate python processes and N threads of a Go loop that
touches no memory show the most this machine gives, and pyworkers' own is taken apart: how busy
its workers were, and how much longer a call ran with N busy than with 1 (a machine that slows
down several busy cores). Last, the same ~1 ms call timed inside one interpreter, alternately
in pyworkers and in that python3.14: the peers run in that executable, which may run Python
faster or slower than the libpython pyworkers links, and the CPU-bound rows carry that
difference. --quick takes under two minutes on 2 cores.

Examples:
  pyworkers bench --quick
  pyworkers bench -w 4 --json > bench.json

Flags:
`

type benchReport struct {
	Workers   int                      `json:"workers"`
	Quick     bool                     `json:"quick"`
	Python    string                   `json:"python"`
	Pyworkers bench.Figures            `json:"pyworkers"`
	Peers     map[string]bench.Figures `json:"peers,omitempty"`
	PeersNote string                   `json:"peers_note,omitempty"`
	// PeersPythonPath is the executable the peers ran in (Peers[bench.OneInterpreter]: its speed).
	PeersPythonPath string `json:"peers_python_path,omitempty"`
}

func cmdBench(ctx context.Context, args []string, std io3) (int, error) {
	fs := newFlags("bench", benchUsage, std)
	workers := fs.IntP("workers", "w", max(2, min(runtime.GOMAXPROCS(0), 4)), "number of workers (at least 2: the speed-up is 2 or more against 1)")
	asJSON := fs.Bool("json", false, "write the figures as JSON")
	quick := fs.Bool("quick", false, "fewer repetitions (under two minutes)")
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	if fs.NArg() > 0 {
		return exitUsage, usagef("bench takes no arguments")
	}
	if *workers < 2 {
		return exitUsage, usagef("-w must be at least 2 to measure a speed-up, got %d", *workers)
	}
	if err := checkWorkers(*workers); err != nil {
		return exitUsage, err
	}
	dir, err := bench.Prepare()
	if err != nil {
		return exitFailed, err
	}
	defer os.RemoveAll(dir)
	if err := cpython.Initialize(cpython.Config{Path: []string{dir}}); err != nil {
		return exitFailed, err
	}
	info, err := cpython.RuntimeInfo()
	if err != nil {
		return exitFailed, err
	}
	counts := bench.Full
	if *quick {
		counts = bench.Quick
	}
	rep := benchReport{Workers: *workers, Quick: *quick, Python: info.Version + " (" + buildName(info) + ")"}
	fmt.Fprintf(std.stderr, "pyworkers bench: measuring pyworkers with %d workers...\n", *workers)
	// Calls are measured with context.Background, as the pool benchmarks measure them: a
	// cancellable context adds its own watchers to every call. Ctrl-C is seen when this ends.
	// failed is the exit for err: an interrupt (Ctrl-C also reaches the python children, which
	// then fail, maybe before this process has seen its own signal) is not a failure.
	failed := func(err error) (int, error) {
		if ctx.Err() != nil || endedBySIGINT(err) {
			return exitInterrupt, nil
		}
		return exitFailed, err
	}
	notice := context.AfterFunc(ctx, func() { // say so at once: the phase may take a minute
		fmt.Fprintln(std.stderr, "pyworkers bench: stopping when this measurement ends (interrupt again to exit now)")
	})
	rep.Pyworkers, err = bench.Pyworkers(context.Background(), *workers, counts)
	notice()
	if err != nil {
		return failed(err)
	}
	if ctx.Err() != nil {
		return exitInterrupt, nil
	}
	if python := bench.FindPython(info); python == "" {
		rep.PeersNote = "no " + bench.PythonName(info) + " found next to the linked CPython or on PATH: peers not measured"
	} else {
		fmt.Fprintf(std.stderr, "pyworkers bench: measuring CPython's pools with %s...\n", python)
		script := filepath.Join(dir, "peers.py")
		if rep.Peers, err = bench.Peers(ctx, python, script, *workers, *quick); err != nil {
			return failed(err)
		}
		ours, theirs, err := bench.PythonSpeed(ctx, python, script, counts.LoopRounds, counts.LoopCalls, bench.CPU1ms)
		if err != nil {
			return failed(err)
		}
		rep.Pyworkers.PythonCallMs = ours
		rep.Peers[bench.OneInterpreter] = bench.Figures{PythonCallMs: theirs}
		rep.PeersPythonPath = python
	}
	if ctx.Err() != nil {
		return exitInterrupt, nil
	}
	if *asJSON {
		enc := json.NewEncoder(std.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return exitOK, enc.Encode(rep)
	}
	printBenchTable(std, rep)
	return exitOK, nil
}

// endedBySIGINT tells whether err is a child process's end by SIGINT (CPython re-raises an
// unhandled KeyboardInterrupt as the signal).
func endedBySIGINT(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGINT
}

type benchMetric struct {
	name   string
	unit   string
	higher bool // higher is better
	get    func(bench.Figures) float64
}

var benchMetrics = []benchMetric{
	{"tiny-task round trip p50", "µs", false, func(f bench.Figures) float64 { return f.RoundTripP50us }},
	{"tiny-task round trip p99", "µs", false, func(f bench.Figures) float64 { return f.RoundTripP99us }},
	{"tiny tasks, a submit each", "tasks/s", true, func(f bench.Figures) float64 { return f.TasksPerSecEach }},
	{"tiny tasks, map in chunks of 32", "tasks/s", true, func(f bench.Figures) float64 { return f.TasksPerSec }},
	{"~1 ms CPU tasks, a submit each", "tasks/s", true, func(f bench.Figures) float64 { return f.CPU1msPerSec }},
	{"CPU-bound tasks: N workers vs 1", "×", true, func(f bench.Figures) float64 { return f.Speedup }},
	{"1 MiB payload round trip", "ms", false, func(f bench.Figures) float64 { return f.Payload1MBms }},
	{"pool start to first result", "ms", false, func(f bench.Figures) float64 { return f.MsToFirstResult }},
	{"RSS per idle worker", "MiB", false, func(f bench.Figures) float64 { return f.MiBPerIdleWorker }},
}

func printBenchTable(std io3, rep benchReport) {
	w := tabwriter.NewWriter(std.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(std.stdout, "pyworkers bench: %d workers, CPython %s%s\n\n", rep.Workers, rep.Python, map[bool]string{true: ", quick", false: ""}[rep.Quick])
	header := "workload\tunit\tpyworkers\t"
	for _, n := range bench.PeerNames {
		if _, ok := rep.Peers[n]; ok {
			header += n + "\t"
		}
	}
	fmt.Fprintln(w, header+"vs best peer\t")
	for _, m := range benchMetrics {
		ours := m.get(rep.Pyworkers)
		row := fmt.Sprintf("%s\t%s\t%s\t", m.name, m.unit, num(ours))
		best, have := 0.0, false
		for _, n := range bench.PeerNames {
			f, ok := rep.Peers[n]
			if !ok {
				continue
			}
			v := m.get(f)
			row += num(v) + "\t"
			if v <= 0 { // not measured, or noise around nothing (a thread's memory): no yardstick
				continue
			}
			if !have || (m.higher && v > best) || (!m.higher && v < best) {
				best, have = v, true
			}
		}
		ratio := "-"
		if have && best > 0 && ours > 0 {
			r := ours / best
			if !m.higher {
				r = best / ours
			}
			ratio = fmt.Sprintf("%.2fx %s", r, map[bool]string{true: "better", false: "worse"}[r >= 1])
		}
		fmt.Fprintln(w, row+ratio+"\t")
	}
	w.Flush()
	if f, ok := rep.Peers[bench.Separate]; ok {
		fmt.Fprintf(std.stdout, "\nFor reference, the same CPU-bound calls in %d separate python processes (nothing shared) against 1: %.2fx.\n", f.SpeedupMeasuredOn, f.Speedup)
	}
	if f := rep.Pyworkers; f.NativeSpeedup > 0 {
		fmt.Fprintf(std.stdout, "This machine's own ceiling, %d threads of a Go loop that touches no memory against 1: %.2fx.\n", f.SpeedupMeasuredOn, f.NativeSpeedup)
	}
	if f := rep.Pyworkers; f.SpeedupBusy > 0 && f.SpeedupCallTime > 0 {
		fmt.Fprintf(std.stdout, "pyworkers' speed-up taken apart: its %d workers were busy %.1f %% of the time; a call took %.2fx as long with %d running as with 1 (1.00 when this machine runs %d busy cores as fast as one).\n",
			f.SpeedupMeasuredOn, 100*f.SpeedupBusy, f.SpeedupCallTime, f.SpeedupMeasuredOn, f.SpeedupMeasuredOn)
	}
	if f, ok := rep.Peers[bench.OneInterpreter]; ok && f.PythonCallMs > 0 && rep.Pyworkers.PythonCallMs > 0 {
		r := rep.Pyworkers.PythonCallMs / f.PythonCallMs
		fmt.Fprintf(std.stdout, "\nPython itself, the same ~1 ms call inside one interpreter: %.2f ms in pyworkers, %.2f ms in %s.\n",
			rep.Pyworkers.PythonCallMs, f.PythonCallMs, rep.PeersPythonPath)
		if r > 1.1 || r < 1/1.1 {
			how, x := "slower", r
			if r < 1 {
				how, x = "faster", 1/r
			}
			fmt.Fprintf(std.stdout, "Python runs %.2fx %s on the libpython pyworkers links than in that executable (another build of CPython); the CPU-bound rows carry that difference.\n", x, how)
		}
	}
	if rep.PeersNote != "" {
		fmt.Fprintln(std.stdout, "\n"+rep.PeersNote)
	}
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
