// Command pyworkers runs Python code in parallel in own-GIL CPython interpreters.
//
//	pyworkers run [-w N] [--timeout D] [--no-prefix] [--python PATH] SCRIPT.py [-- ARGS...]
//	pyworkers map [-w N] [--timeout D] [--setup CODE] [--star] [--progress WHEN] [--max-line-mib N] [--python PATH] TARGET [INPUT]
//	pyworkers bench [-w N] [--json] [--quick]
//	pyworkers doctor [--json] [--python PATH] [MODULE...]
//	pyworkers version
//
// map, run and doctor use the active virtual environment (VIRTUAL_ENV), or the one whose python
// --python names. Run `pyworkers help` or `pyworkers COMMAND --help` for details.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/pyworkers/pyworkers/cpython"
)

// Exit codes.
const (
	exitOK        = 0
	exitFailed    = 1   // some Python code failed
	exitUsage     = 2   // bad command line, missing file, target that cannot be imported
	exitInterrupt = 130 // stopped by Ctrl-C
)

// usageError is a mistake in the command line: reported once, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errGaveUp: the command left Python code behind that did not stop when interrupted (a
// blocking C call that never returns: no interrupt reaches it); the process exits without
// waiting for it, which CPython's finalization would do for good.
var errGaveUp = errors.New("some Python code did not stop when interrupted (a blocking C call?): exiting without waiting for it")

// stopGrace is how long interrupted code has to stop before it is given up: the pool's
// InterruptGrace, and a little more.
const stopGrace = mapInterruptGrace + 3*time.Second

// outputMu is held by a command while it writes a piece of its results that must go out
// whole (map: a batch of lines), so that exitIfStuck never cuts it.
var outputMu sync.Mutex

// firstSignal is the signal that stopped the command (nil: none yet).
var firstSignal atomic.Value

// exitWhenStuck arranges for the process to exit, as interrupted, stopGrace after ctx ends (the
// first signal) if it has not ended by then; map and run, whose Python code a signal
// interrupts, call it (code that does not stop must not keep the process for good); the
// returned func disarms it. A command that gives up on code itself does so stopGrace after
// its interrupt: this comes 2 s later, as a last resort.
func exitWhenStuck(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { exitIfStuck(signalExit(firstSignal.Load())) })
}

// exitIfStuck exits the process with code stopGrace + 2 s from now, unless it has ended by
// then, and not in the middle of results being written (outputMu) unless their writing has
// been blocked for stopGrace more: a reader that stopped reading (| a pager left open) must
// not keep the process for good either.
func exitIfStuck(code int) {
	const wait = stopGrace + 2*time.Second
	time.AfterFunc(wait, func() {
		why := "what still runs (Python code that no interrupt reaches, such as a blocking C call?)"
		if !lockWithin(&outputMu, stopGrace) {
			why = "the results' reader, which has stopped reading them (their last lines may be cut)"
		}
		fmt.Fprintf(os.Stderr, "pyworkers: still running %v after being stopped: exiting without waiting for %s\n", wait, why)
		os.Exit(code)
	})
}

// lockWithin locks mu unless that takes longer than d (then it stays locked by a goroutine
// that waits for it: only for a process about to exit).
func lockWithin(mu *sync.Mutex, d time.Duration) bool {
	locked := make(chan struct{})
	go func() {
		mu.Lock()
		close(locked)
	}()
	select {
	case <-locked:
		return true
	case <-time.After(d):
		return false
	}
}

const usage = `pyworkers runs Python code in parallel, one own-GIL CPython interpreter per worker.

Usage:
  pyworkers run [-w N] [--timeout D] [--no-prefix] [--python PATH] SCRIPT.py [-- ARGS...]
        run SCRIPT.py once in each of N interpreters at the same time
  pyworkers map [-w N] [--timeout D] [--setup CODE] [--star] [--progress WHEN] [--max-line-mib N] [--python PATH] TARGET [INPUT]
        call TARGET (file.py:func or pkg.module:func) once per JSON line of INPUT (or stdin),
        writing one JSON result line per input, in input order
  pyworkers bench [-w N] [--json] [--quick]
        measure pyworkers and CPython's own pools on the same workloads
  pyworkers doctor [--json] [--python PATH] [MODULE...]
        show the CPython in use and whether MODULEs import in an own-GIL interpreter
  pyworkers version
        print pyworkers' and CPython's versions

Run "pyworkers COMMAND --help" (or "pyworkers help COMMAND") for a command's flags and examples.
`

// commands are the words run dispatches on.
var commands = map[string]bool{"run": true, "map": true, "bench": true, "doctor": true, "version": true}

type io3 struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	// The first Ctrl-C stops cleanly (commands finish what they can and write it out); a
	// second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM)
	if !signal.Ignored(os.Interrupt) { // a shell's background job: Ctrl-C is for the foreground
		signal.Notify(sigs, os.Interrupt)
	}
	go func() {
		firstSignal.Store(<-sigs)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "pyworkers: interrupted again: exiting now")
		os.Exit(signalExit(firstSignal.Load()))
	}()
	var profile *os.File
	if path := os.Getenv("PYWORKERS_CPUPROFILE"); path != "" { // for pyworkers' own developers
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			profile = f
		}
	}
	code := run(ctx, os.Args[1:], io3{os.Stdin, os.Stdout, os.Stderr})
	if code == exitInterrupt {
		code = signalExit(firstSignal.Load())
	}
	if profile != nil {
		pprof.StopCPUProfile()
		profile.Close()
	}
	os.Exit(code)
}

// signalExit is the exit status after a signal, as shells report it: 128 + its number (130
// for Ctrl-C, 143 for SIGTERM).
func signalExit(sig any) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitInterrupt
}

func run(ctx context.Context, args []string, std io3) int {
	if len(args) == 0 {
		fmt.Fprint(std.stderr, usage)
		return exitUsage
	}
	var code int
	var err error
	switch args[0] {
	case "run":
		code, err = cmdRun(ctx, args[1:], std)
	case "map":
		code, err = cmdMap(ctx, args[1:], std)
	case "bench":
		code, err = cmdBench(ctx, args[1:], std)
	case "doctor":
		code, err = cmdDoctor(ctx, args[1:], std)
	case "version", "--version":
		code, err = cmdVersion(args[1:], std)
	case "help", "-h", "--help":
		if len(args) > 1 && commands[args[1]] {
			return run(ctx, []string{args[1], "--help"}, std) // pyworkers help map
		}
		if len(args) > 1 {
			fmt.Fprintf(std.stderr, "pyworkers: no help for %q: not a command\n\n%s", args[1], usage)
			return exitUsage
		}
		fmt.Fprint(std.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(std.stderr, "pyworkers: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	// With code given up on (errGaveUp), CPython's finalization would wait for it for good: the
	// process ends without it (what the command wrote is out already).
	if !errors.Is(err, errGaveUp) {
		if ferr := cpython.Finalize(context.Background()); ferr != nil && err == nil {
			err = ferr
		}
	}
	if err != nil {
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			fmt.Fprintf(std.stderr, "pyworkers %s: %v\n", args[0], ue)
			return exitUsage
		}
		fmt.Fprintf(std.stderr, "pyworkers %s: %v\n", args[0], err)
		if code == exitOK {
			code = exitFailed
		}
	}
	if ctx.Err() != nil && code == exitOK {
		code = exitInterrupt
	}
	return code
}

// newFlags makes a command's flag set: GNU-style long flags, errors returned (not printed
// twice), --help printing the command's own usage text.
func newFlags(name, help string, std io3) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(std.stderr)
	fs.Usage = func() {
		fmt.Fprint(std.stdout, help)
		fs.SetOutput(std.stdout)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; it returns done=true when --help was shown.
func parse(fs *pflag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return true, nil
		}
		return false, usagef("%v (see pyworkers %s --help)", err, fs.Name())
	}
	return false, nil
}

// pythonFlag adds --python, shared by the commands that run user code (map, run, doctor).
func pythonFlag(fs *pflag.FlagSet) *string {
	return fs.String("python", "", "a python executable whose environment the workers use, as that python would: a virtual environment's bin/python puts its packages on sys.path (default: $VIRTUAL_ENV/bin/python when a virtual environment is active); it is also sys.executable")
}

// startPython starts CPython with --python's executable, or the active virtual environment's
// python; with neither, the runtime starts with the first interpreter, with no environment. An
// active environment that cannot be used (another Python's) is left out with a warning on
// stderr: it may be active for other work; a --python that cannot be used is an error.
func startPython(python string, stderr io.Writer) error {
	exe, venv := python, os.Getenv("VIRTUAL_ENV")
	if exe == "" && venv != "" {
		exe = filepath.Join(venv, "bin", "python")
	}
	if exe == "" {
		return nil
	}
	err := cpython.Initialize(cpython.Config{Executable: exe})
	if err == nil {
		return nil
	}
	why := strings.TrimPrefix(err.Error(), "cpython: Config.Executable: ")
	if python != "" {
		return usagef("--python %s: %s", python, why)
	}
	fmt.Fprintf(stderr, "pyworkers: not using the active virtual environment %s: %s\n", venv, why)
	return nil
}

// version is set at build time with -ldflags "-X main.version=..."; "dev" otherwise.
var version = "dev"

const versionUsage = `Usage: pyworkers version

Prints pyworkers' version and the CPython it runs on.

Examples:
  pyworkers version
  scripts/with-python.sh bin/pyworkers version   # with the provisioned CPython root

`

func cmdVersion(args []string, std io3) (int, error) {
	fs := newFlags("version", versionUsage, std)
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	if fs.NArg() > 0 {
		return exitUsage, usagef("version takes no arguments")
	}
	info, err := cpython.RuntimeInfo()
	if err != nil {
		return exitFailed, err
	}
	return writeReport(std.stdout, fmt.Appendf(nil, "pyworkers %s\nCPython %s (%s build, prefix %s)\n", version, info.Version, buildName(info), info.Prefix))
}

func buildName(info cpython.Info) string {
	if info.Debug {
		return "debug"
	}
	return "release"
}
