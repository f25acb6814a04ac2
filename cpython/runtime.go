package cpython

// #include <stdlib.h>
// #include "pyw.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Config configures the CPython runtime (Initialize). The zero value is the usual choice.
type Config struct {
	// Home is the Python home (the prefix holding lib/python3.14). Empty: the one the linked
	// libpython was built for, which is right for the provisioned toolchain and for installed
	// CPythons alike. Environment variables such as PYTHONHOME are ignored (isolated config).
	Home string
	// Executable is sys.executable in every interpreter: the python program that child
	// processes started from Python (multiprocessing, subprocess.run([sys.executable, ...]))
	// run. A virtual environment's python (VENV/bin/python) also makes every interpreter use
	// that environment, as running that python would: sys.prefix is the environment and its
	// site-packages, with their .pth files, are on sys.path. Empty: sys.executable is "" (no
	// python program is known), and no environment is used. The environment must have been
	// made by the CPython pyworkers is linked with (its python3.14 -m venv), since CPython takes
	// the standard library from the environment's home: Initialize refuses one made by another
	// installation or Python version, a path that names no executable file, one whose name does
	// not begin with "python", and one that is, or links to, a python named for another version
	// (python3.12). A relative path is made absolute.
	Executable string
	// Path is put at the front of sys.path in every interpreter (an entry already on sys.path
	// stays where it is).
	Path []string
	// Stdout and Stderr receive every interpreter's sys.stdout / sys.stderr unless its
	// InterpreterConfig says otherwise. nil means os.Stdout / os.Stderr.
	Stdout, Stderr io.Writer
}

// Info describes the running CPython.
type Info struct {
	Version string // "3.14.10"
	Full    string // sys.version
	Debug   bool   // a Py_DEBUG build (linked with -tags pydebug)
	Prefix  string // sys.prefix of the main interpreter
}

type runtimeState int

const (
	stateNew runtimeState = iota
	stateRunning
	stateFinalizing
	stateFinalized
	stateFailed
)

// The process-wide runtime. CPython can be started once per process.
var rt struct {
	mu       sync.Mutex
	state    runtimeState
	cfg      Config
	info     Info
	initErr  error
	live     map[*Interpreter]struct{}
	creating sync.WaitGroup // NewInterpreter calls between the state check and registration
	finalize chan struct{}  // closed to ask the runtime thread to finalize
	final    chan error     // its answer
	finished chan struct{}  // closed when Finalize is done (finalErr set): other callers wait on it
	finalErr error
}

var liveCount atomic.Int64

// finalizing is closed when Finalize begins (see Finalizing).
var (
	finalizing     = make(chan struct{})
	finalizingOnce sync.Once
)

// Finalizing is closed once Finalize has begun. Finalize waits for every interpreter to end:
// what keeps interpreters open for good closes them when it is closed (package pool closes its
// pools, whose workers would otherwise wait for work). Safe from any goroutine.
func Finalizing() <-chan struct{} { return finalizing }

// lifecycle bounds how many interpreters are created or ended at once. Creation is CPU-bound, so
// more than the cores buys nothing; and creating many at once has hit races inside CPython
// (python/cpython#123134), which the tests probe with 32 concurrent creations, repeatedly, on
// the release and debug builds. A channel, so that waiting for a turn obeys a context.
var lifecycle = make(chan struct{}, max(4, runtime.NumCPU()))

func lockLifecycle(ctx context.Context) error {
	if err := ctx.Err(); err != nil { // the select below could still take a free slot
		return err
	}
	select {
	case lifecycle <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func unlockLifecycle() { <-lifecycle }

// Initialize starts CPython for this process with cfg. Calling it is optional: NewInterpreter
// starts the runtime with a zero Config when needed. It returns ErrInitialized if the runtime
// already runs, ErrFinalized after Finalize. Safe from any goroutine.
func Initialize(cfg Config) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch rt.state {
	case stateRunning:
		return ErrInitialized
	case stateFinalizing, stateFinalized:
		return ErrFinalized
	case stateFailed:
		return rt.initErr
	}
	return startLocked(cfg)
}

func startLocked(cfg Config) error {
	if cfg.Executable != "" {
		abs, err := filepath.Abs(cfg.Executable) // sys.executable must not depend on the working directory
		if err != nil {
			return fmt.Errorf("cpython: Config.Executable: %w", err)
		}
		cfg.Executable = abs
	}
	if err := checkExecutable(cfg.Executable); err != nil {
		return err // the caller's to fix: the runtime stays unstarted
	}
	rt.cfg = cfg
	rt.cfg.Path = append([]string(nil), cfg.Path...)
	if rt.cfg.Stdout == nil {
		rt.cfg.Stdout = os.Stdout
	}
	if rt.cfg.Stderr == nil {
		rt.cfg.Stderr = os.Stderr
	}
	rt.live = make(map[*Interpreter]struct{})
	rt.finalize = make(chan struct{})
	rt.final = make(chan error, 1)
	started := make(chan error, 1)
	go runtimeThread(cfg.Home, cfg.Executable, started)
	if err := <-started; err != nil {
		rt.state = stateFailed
		rt.initErr = err
		return err
	}
	rt.state = stateRunning
	return nil
}

// checkExecutable refuses a Config.Executable that is not an executable file, not named as a
// python is (sys.executable: subprocess and multiprocessing run it), named for another Python
// version (itself or what its link leads to), or that belongs to a virtual environment of
// another Python version (CPython would start, but find none of its packages).
func checkExecutable(exe string) error {
	if exe == "" {
		return nil
	}
	st, err := os.Stat(exe)
	switch {
	case err != nil:
	case st.IsDir():
		err = fmt.Errorf("%s is a directory", exe)
	case st.Mode()&0o111 == 0:
		// a script or a data file given by mistake: child processes could not run it
		err = fmt.Errorf("%s is not an executable file", exe)
	case !strings.HasPrefix(filepath.Base(exe), "python"):
		err = fmt.Errorf("%s is not a python executable (its name does not begin with \"python\")", exe)
	default:
		real, rerr := filepath.EvalSymlinks(exe)
		for _, name := range []string{filepath.Base(exe), filepath.Base(real)} {
			if v := pythonNameVersion.FindStringSubmatch(name); rerr == nil && v != nil && v[1] != "3.14" {
				err = fmt.Errorf("%s is Python %s (%s); pyworkers runs CPython 3.14", exe, v[1], real)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("cpython: Config.Executable: %w", err)
	}
	// As CPython looks for it: pyvenv.cfg beside the executable or one folder up.
	for _, cfgPath := range []string{filepath.Join(filepath.Dir(exe), "pyvenv.cfg"), filepath.Join(filepath.Dir(filepath.Dir(exe)), "pyvenv.cfg")} {
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			key, val, ok := strings.Cut(line, "=")
			key, val = strings.TrimSpace(key), strings.TrimSpace(val)
			if ok && (key == "version" || key == "version_info") && val != "3.14" && !strings.HasPrefix(val, "3.14.") {
				return fmt.Errorf("cpython: Config.Executable: %s belongs to a Python %s environment (%s); pyworkers runs CPython 3.14", exe, val, cfgPath)
			}
			if ok && key == "home" {
				if err := checkVenvHome(exe, val); err != nil {
					return err
				}
			}
		}
		break
	}
	return nil
}

// pythonNameVersion finds the version in an executable's name: python3.12, python3.14d.
var pythonNameVersion = regexp.MustCompile(`^python(\d+\.\d+)`)

// checkVenvHome refuses a virtual environment made by another CPython installation than the
// one linked in: CPython takes the standard library from the environment's home, and another
// build's would be loaded into this libpython (a debug build would not even find its own).
// The linked libpython must live under the home's parent (home /usr/bin: /usr/lib/...).
func checkVenvHome(exe, home string) error {
	var buf [4096]C.char
	if C.pyw_libpython_path(&buf[0], C.size_t(len(buf))) != 0 {
		return nil
	}
	lib := C.GoString(&buf[0])
	if !strings.Contains(filepath.Base(lib), "libpython") {
		return nil // linked in statically: nothing to compare with
	}
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	base := real(filepath.Dir(real(home)))
	if strings.HasPrefix(real(lib), base+string(filepath.Separator)) {
		return nil
	}
	return fmt.Errorf("cpython: Config.Executable: %s belongs to an environment made by the python in %s, another CPython than the one pyworkers is linked with (%s); make the environment with that CPython's python3.14 -m venv", exe, home, lib)
}

// startHint is what to look at when CPython would not start with error msg.
func startHint(msg string) string {
	if strings.Contains(msg, "init_sys_streams") { // "<stdin> is a directory, cannot continue"
		return "CPython makes its sys.stdin, sys.stdout and sys.stderr of this process's file descriptors 0, 1 and 2: none may be a directory"
	}
	return "check that the CPython 3.14 of scripts/build-python.sh is the one linked, or set Config.Home"
}

// runtimeThread owns the main interpreter: it initializes CPython, parks with the GIL released
// until Finalize, then finalizes on the same OS thread, as CPython requires.
func runtimeThread(home, executable string, started chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
	chome := C.CString(home)
	defer C.free(unsafe.Pointer(chome))
	cexe := C.CString(executable)
	defer C.free(unsafe.Pointer(cexe))
	boot := C.CString(bootstrapSource)
	defer C.free(unsafe.Pointer(boot))
	var errbuf [512]C.char
	main := C.pyw_runtime_init(chome, cexe, boot, &errbuf[0], C.size_t(len(errbuf)))
	if main == nil {
		msg := C.GoString(&errbuf[0])
		started <- fmt.Errorf("cpython: cannot start CPython: %s (%s)", msg, startHint(msg))
		return
	}
	var version, prefix [512]C.char
	var debug C.int
	C.pyw_runtime_info(main, &version[0], C.size_t(len(version)), &prefix[0], C.size_t(len(prefix)), &debug)
	full := C.GoString(&version[0])
	rt.info = Info{Version: strings.Fields(full + " ?")[0], Full: full, Debug: debug != 0, Prefix: C.GoString(&prefix[0])}
	started <- nil
	<-rt.finalize
	if rc := C.pyw_runtime_finalize(main); rc != 0 {
		rt.final <- errors.New("cpython: Py_FinalizeEx reported an error (buffered data could not be flushed)")
		return
	}
	rt.final <- nil
}

// ensureRunning starts the runtime with a zero Config if needed and registers one pending
// creation, which the caller must end with rt.creating.Done().
func ensureRunning() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch rt.state {
	case stateNew:
		if err := startLocked(Config{}); err != nil {
			return err
		}
	case stateFinalizing, stateFinalized:
		return ErrFinalized
	case stateFailed:
		return rt.initErr
	}
	rt.creating.Add(1)
	return nil
}

// RuntimeInfo describes the running CPython, starting it (zero Config) if needed.
func RuntimeInfo() (Info, error) {
	if err := ensureRunning(); err != nil {
		return Info{}, err
	}
	rt.creating.Done()
	return rt.info, nil
}

// LiveInterpreters is the number of interpreters created and not yet ended, process-wide.
func LiveInterpreters() int { return int(liveCount.Load()) }

// Finalize closes every interpreter still open (waiting for running work; when ctx ends first,
// running Python code is interrupted) and then finalizes CPython. Afterwards NewInterpreter,
// Initialize and RuntimeInfo return ErrFinalized, and the methods of interpreters made before
// return ErrClosed. Pools (package pool) still open are closed too (see Finalizing): their
// queued tasks fail with pool.ErrClosed. Calling it again, or before any use, is harmless: a
// call made while another runs returns when that one has finished, with its outcome, and its
// own ctx interrupts running code too. Safe from any goroutine except an interpreter's own
// thread (inside Do).
func Finalize(ctx context.Context) error {
	finalizingOnce.Do(func() { close(finalizing) })
	rt.mu.Lock()
	switch rt.state {
	case stateNew, stateFailed:
		rt.state = stateFinalized
		rt.mu.Unlock()
		return nil
	case stateFinalizing, stateFinalized:
		done := rt.finished
		rt.mu.Unlock()
		if done == nil { // finalized before it ever ran
			return nil
		}
		// A concurrent Finalize: return when the runtime is gone, with its outcome; this ctx
		// interrupts the interpreters still open as the first's does.
		select {
		case <-done:
		case <-ctx.Done():
			var wg sync.WaitGroup
			for _, i := range liveInterpreters() {
				wg.Go(func() { i.CloseContext(ctx) })
			}
			wg.Wait()
			<-done
		}
		return rt.finalErr
	}
	rt.state = stateFinalizing
	rt.finished = make(chan struct{})
	rt.mu.Unlock()

	rt.creating.Wait() // interpreters being created now will be in rt.live
	var wg sync.WaitGroup
	for _, i := range liveInterpreters() {
		wg.Go(func() { i.CloseContext(ctx) })
	}
	wg.Wait()

	close(rt.finalize)
	err := <-rt.final
	rt.mu.Lock()
	rt.state = stateFinalized
	rt.finalErr = err
	rt.mu.Unlock()
	close(rt.finished)
	return err
}

// liveInterpreters lists the interpreters created and not yet ended.
func liveInterpreters() []*Interpreter {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	live := make([]*Interpreter, 0, len(rt.live))
	for i := range rt.live {
		live = append(live, i)
	}
	return live
}

func register(i *Interpreter) {
	rt.mu.Lock()
	rt.live[i] = struct{}{}
	rt.mu.Unlock()
	liveCount.Add(1)
}

func unregister(i *Interpreter) {
	rt.mu.Lock()
	delete(rt.live, i)
	rt.mu.Unlock()
	liveCount.Add(-1)
}
