package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pyworkers/pyworkers/cpython"
)

const runUsage = `Usage: pyworkers run [-w N] [--timeout D] [--no-prefix] [--python PATH] SCRIPT.py [-- ARGS...]

Runs SCRIPT.py once in each of N fresh own-GIL interpreters, all at the same time. Inside,
pyworkers.worker_id() (0 ... N-1) and pyworkers.workers() (N) tell which one is running,
sys.argv is SCRIPT.py followed by ARGS, and the script's folder is on sys.path, as with
python SCRIPT.py; as there, a worker ends when the threads its code started have ended (the
timeout and Ctrl-C interrupt them too; a worker still running 5s after its interrupt, blocked
where no interrupt reaches, is given up and the run exits without it). An active virtual
environment's packages import (or
--python's). sys.stdin is empty. Each line a worker prints is prefixed "[k] ".
Exit status: 0 when every worker succeeded (a sys.exit that python would end with status 0
counts as success: sys.exit(), sys.exit(0)); 1 otherwise, with each failure's traceback (and
a sys.exit's status) on stderr; 2 for a bad command line; 130 after Ctrl-C (143 after SIGTERM).

Examples:
  pyworkers run -w 4 testdata/demo/isqrt.py
  pyworkers run -w 2 --timeout 30s job.py -- --input data.csv

Flags:
`

func cmdRun(ctx context.Context, args []string, std io3) (int, error) {
	defer exitWhenStuck(ctx)()
	stdout, stderr := std.stdout, std.stderr
	fs := newFlags("run", runUsage, std)
	fs.SetInterspersed(false) // what follows SCRIPT.py belongs to the script
	workers := fs.IntP("workers", "w", runtime.GOMAXPROCS(0), "number of interpreters; the default is the CPUs this process may use (a container's CPU limit)")
	timeout := fs.Duration("timeout", 0, "stop each worker after this long (e.g. 30s); one still running 5s later (blocked in a C call no interrupt reaches) is given up and the run exits without it; 0: no limit")
	noPrefix := fs.Bool("no-prefix", false, `do not prefix output lines with "[k] "`)
	python := pythonFlag(fs)
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return exitUsage, usagef("missing SCRIPT.py (see pyworkers run -h)")
	}
	script, scriptArgs := rest[0], rest[1:]
	if len(scriptArgs) > 0 && scriptArgs[0] == "--" {
		scriptArgs = scriptArgs[1:]
	}
	if err := checkWorkers(*workers); err != nil {
		return exitUsage, err
	}
	if *timeout < 0 {
		return exitUsage, usagef("--timeout must not be negative, got %v", *timeout)
	}
	if err := checkReadable(script); err != nil {
		return exitUsage, usagef("cannot read script %q: %v", script, err)
	}
	for _, a := range rest {
		if !utf8.ValidString(a) { // it could not cross as a str: every worker would fail on it
			return exitUsage, usagef("%q is not valid UTF-8: pyworkers passes the script's name and arguments as text", a)
		}
	}
	if err := startPython(*python, stderr); err != nil {
		return exitUsage, err
	}

	// A failure is reported when its worker ends, not after all of them: a long run shows it
	// at once, and Ctrl-C later does not hide it.
	var failed atomic.Int32
	sharedOut, sharedErr := &sharedOutput{w: stdout}, &sharedOutput{w: stderr}
	// A traceback is written once: N workers that fail alike (a SyntaxError) do not repeat it
	// N times; the others name the worker whose report has it.
	var tracebackMu sync.Mutex
	tracebacks := map[string]int{}
	report := func(k int, err error) {
		if err == nil || exitedOK(err) || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
			return // a success, or stopped by Ctrl-C rather than failing
		}
		failed.Add(1)
		// One Write: the other workers' output, which goes on meanwhile, does not split it.
		msg := fmt.Sprintf("worker %d failed: %v\n", k, err)
		switch {
		case errors.Is(err, errNotStopped):
			msg = fmt.Sprintf("worker %d did not stop at --timeout %v: %v\n", k, *timeout, err)
		case *timeout > 0 && errors.Is(err, context.DeadlineExceeded):
			msg = fmt.Sprintf("worker %d stopped at --timeout %v: %v\n", k, *timeout, err)
		}
		if pe := (*cpython.PythonError)(nil); errors.As(err, &pe) {
			if status, ok := pe.ExitStatus(); ok {
				msg = fmt.Sprintf("worker %d exited with status %d: %v\n", k, status, err)
			}
			tb := fmt.Sprintf("%+v\n", pe)
			tracebackMu.Lock()
			first, seen := tracebacks[tb]
			if !seen {
				tracebacks[tb] = k
			}
			tracebackMu.Unlock()
			if seen {
				tb = fmt.Sprintf("(the same traceback as worker %d's)\n", first)
			}
			msg += tb
		}
		sharedErr.whole(msg)
	}
	// The script's folder, as python SCRIPT.py puts it on sys.path (RunFile does so too): found
	// here, before any worker runs, as a script's os.chdir changes it for all of them.
	scriptDir, err := filepath.EvalSymlinks(script)
	if err == nil {
		scriptDir, err = filepath.Abs(filepath.Dir(scriptDir))
	}
	if err != nil {
		return exitUsage, usagef("cannot find the folder of script %q: %v", script, err)
	}
	var wg sync.WaitGroup
	var gaveUp atomic.Int32 // workers that did not stop stopGrace after their --timeout or Ctrl-C
	start := time.Now()
	for k := range *workers {
		wg.Go(func() {
			// Through the shared outputs in both modes: a report after a worker's unfinished line
			// starts on a line of its own.
			out, errw := io.Writer(sharedOut), io.Writer(sharedErr)
			if !*noPrefix {
				p := fmt.Sprintf("[%d] ", k)
				pout, perr := &prefixWriter{out: sharedOut, prefix: p}, &prefixWriter{out: sharedErr, prefix: p}
				defer perr.end() // after its report, which ends an unfinished line itself
				defer pout.end()
				out, errw = pout, perr
			}
			interp, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{
				Argv: append([]string{script}, scriptArgs...), WorkerID: k, Workers: *workers,
				// as python SCRIPT.py does: the folder, absolute (the script may chdir) and with
				// symbolic links resolved
				Stdout: out, Stderr: errw, Path: []string{scriptDir},
			})
			if err != nil {
				report(k, err)
				return
			}
			wctx := ctx
			if *timeout > 0 {
				var cancel context.CancelFunc
				wctx, cancel = context.WithTimeout(ctx, *timeout)
				defer cancel()
			}
			err = leaveIfStuck(wctx, func() error {
				err := interp.RunFile(wctx, script)
				// Its end waits for the threads its code started, as Python's exit does: the
				// timeout and Ctrl-C reach those too. Its output is written out before the report.
				if cerr := interp.CloseContext(wctx); err == nil && cerr != nil && ctx.Err() == nil {
					err = fmt.Errorf("its end (the threads it started, its atexit functions, its objects' finalizers) was still running at the timeout: %w", cerr)
				}
				return err
			})
			if errors.Is(err, errNotStopped) {
				gaveUp.Add(1) // the run ends without it
			}
			report(k, err)
		})
	}
	wg.Wait()
	wall := time.Since(start)
	var gaveUpErr error
	if gaveUp.Load() > 0 {
		gaveUpErr = errGaveUp // the process exits without waiting for those workers
	}

	if ctx.Err() != nil { // Ctrl-C: the workers were interrupted, not failing
		fmt.Fprintf(stderr, "pyworkers run: interrupted after %.2fs (%d failed before)\n", wall.Seconds(), failed.Load())
		return exitInterrupt, gaveUpErr
	}
	cpu := processCPU()
	fmt.Fprintf(stderr, "pyworkers run: %d of %d workers succeeded in %.2fs wall, %.2fs CPU (%.1f cores busy on average)\n",
		*workers-int(failed.Load()), *workers, wall.Seconds(), cpu.Seconds(), cpu.Seconds()/wall.Seconds())
	if failed.Load() > 0 {
		return exitFailed, gaveUpErr
	}
	return exitOK, nil
}

// errNotStopped: a worker's script was interrupted (--timeout, Ctrl-C) and still ran stopGrace
// later.
var errNotStopped = fmt.Errorf("it was still running %v after its interrupt (blocked in a C call?): given up", stopGrace)

// leaveIfStuck runs f on a goroutine of its own and returns its error, unless f still runs
// stopGrace after ctx has ended: blocked where no interrupt reaches (a C call that does not
// return), it is left behind then, and the error wraps errNotStopped and ctx.Err().
func leaveIfStuck(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-afterStopped(ctx).Done():
		return fmt.Errorf("%w: %w", errNotStopped, ctx.Err())
	}
}

// afterStopped is a context that ends stopGrace after ctx ends (never, for a context that does
// not end).
func afterStopped(ctx context.Context) context.Context {
	c, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })
	return c
}

// checkReadable: path is a regular file this process may read (it exists, is no folder, pipe
// or device, and opens), said before any interpreter starts; the error says why not.
func checkReadable(path string) error {
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		return errors.New("it is a directory")
	}
	if err == nil && !st.Mode().IsRegular() {
		// each worker reads it: a pipe (<(...), /dev/stdin) would give the first one all of it
		// and a FIFO could keep the others waiting for good
		return errors.New("not a regular file (a pipe, a device): every worker reads it, so save it to a file first")
	}
	if err == nil {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			err = f.Close()
		}
	}
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return pe.Err // "no such file or directory", "permission denied": the path is said already
	}
	return err
}

// exitedOK: the script ended with a SystemExit that python itself would end with status 0 for
// (sys.exit(), sys.exit(0), sys.exit(None), sys.exit(False); not sys.exit("0")).
func exitedOK(err error) bool {
	var pe *cpython.PythonError
	if !errors.As(err, &pe) {
		return false
	}
	status, ok := pe.ExitStatus()
	return ok && status == 0
}

// processCPU is the user+system CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
