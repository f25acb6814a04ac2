package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/pool"
)

const mapUsage = `Usage: pyworkers map [-w N] [--timeout D] [--setup CODE] [--star] [--progress WHEN] [--max-line-mib N] [--python PATH] TARGET [INPUT]

Calls TARGET once per line of INPUT (JSON Lines; standard input when INPUT is omitted or "-")
on N own-GIL interpreters, and writes one JSON line per input line to standard output, in
input order:
  {"ok": RESULT}
  {"error": {"type": "ValueError", "message": "...", "traceback": "..."}}
TARGET is path/to/file.py:func or pkg.module:func (from the active virtual environment too, or
the one whose python --python names); an async function is run to completion. Each line's JSON
value is the function's one argument; with --star an array is spread into positional arguments
and an object into keyword arguments. Lines and results go through Python's json module in the
workers: objects keep their key order both ways, 2.0 stays a float, tuples come back as arrays.
A result JSON cannot hold (bytes, NaN, ...), a line that is not JSON (NaN, 1e999, extra text
after the value, and a blank line included) and one longer than --max-line-mib give an error
line, not an abort. What the function prints goes to standard error, and so does what child
processes or C code write to standard output. A UTF-8 byte order mark before the first line is
skipped. At the end, map waits for the threads the calls started, their atexit functions and
the finalizers of what their modules hold, as Python's exit does, saying so after a second
(--timeout does not cut that wait, except for a call still running 2s after its --timeout,
blocked where no interrupt reaches: map exits without it, saying so; Ctrl-C interrupts them,
and what still runs 7s after the signal is left behind as the process exits, as is a write of
results to a reader who stopped reading, 5s later). Exit status: 0
when every line succeeded, 1 when some failed (or the workers could not start for want of
memory or threads), 2 for a bad command line, a --setup that raises or a TARGET that cannot
be imported (said before any work starts), 130 after Ctrl-C and 143 after SIGTERM (the results
up to the first line not finished are written, so that the output stays one line per input
line, in order; a second signal exits at once), 141 when the reader of the results went away
(| head).

Examples:
  printf '1\n2\n3\n' | pyworkers map -w 2 testdata/demo/isqrt.py:isqrt_sum
  pyworkers map --star --timeout 5s mypkg.scoring:score requests.jsonl > results.jsonl
  pyworkers map --setup 'import json' json:dumps values.jsonl

Flags:
`

func cmdMap(ctx context.Context, args []string, std io3) (code int, err error) {
	defer exitWhenStuck(ctx)()
	fs := newFlags("map", mapUsage, std)
	workers := fs.IntP("workers", "w", runtime.GOMAXPROCS(0), "number of interpreters; the default is the CPUs this process may use (a container's CPU limit)")
	timeout := fs.Duration("timeout", 0, "stop a call after this long (e.g. 500ms), counted from when a worker is free for its line (after a SystemExit, from when the worker ended, so a replacement's start counts too); a line whose call ends only later (it caught the interrupt) gets TimeoutError all the same, and so does a call still running 2s later, left behind while a fresh worker goes on (map does not wait for it to exit; with as many left behind as there are workers, the next line waits for one of them to end); 0: no limit")
	setup := fs.String("setup", "", "Python code every worker runs before it takes work")
	star := fs.Bool("star", false, "spread an array line into positional arguments, an object into keyword arguments")
	progress := fs.String("progress", "auto", "progress on stderr: auto (when stderr is a terminal), always, never")
	maxLine := fs.Int("max-line-mib", defaultMaxLineMiB, "longest input line in MiB: a longer one is read to its end and gets an error line, so that input without line ends cannot take all memory")
	python := pythonFlag(fs)
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return exitUsage, usagef("want TARGET [INPUT] (see pyworkers map --help)")
	}
	target := fs.Arg(0)
	if err := checkWorkers(*workers); err != nil {
		return exitUsage, err
	}
	if *timeout < 0 {
		return exitUsage, usagef("--timeout must not be negative, got %v", *timeout)
	}
	if *maxLine < 1 || *maxLine > 2047 { // its bytes must fit an int on 32-bit machines too
		return exitUsage, usagef("--max-line-mib must be 1 to 2047, got %d", *maxLine)
	}
	showProgress, err := progressWanted(*progress, std.stderr)
	if err != nil {
		return exitUsage, err
	}
	if err := checkTargetSyntax(target); err != nil {
		return exitUsage, err
	}
	in, inName := std.stdin, "standard input"
	if fs.NArg() == 2 && fs.Arg(1) != "-" {
		f, err := openInput(ctx, fs.Arg(1))
		if ctx.Err() != nil {
			return exitInterrupt, nil
		}
		if err != nil {
			return exitUsage, usagef("cannot read INPUT: %v", err)
		}
		defer f.Close()
		in, inName = f, fs.Arg(1)
	}
	if f, ok := in.(*os.File); ok { // a directory on stdin: CPython would not even start
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return exitUsage, usagef("cannot read INPUT: %s is a directory", inName)
		}
	}
	results := privateStdout(std.stdout) // before any Python runs (a venv's .pth files run at start)
	rawResults := results
	if err := startPython(*python, std.stderr); err != nil {
		return exitUsage, err
	}

	cwd, _ := os.Getwd()
	var prog *progressLine
	workerOut := std.stderr
	if showProgress {
		prog = &progressLine{w: std.stderr}
		workerOut = prog.clearing(std.stderr) // a print is not glued to the progress text
		// results, not std.stdout: fd 1 is a copy of stderr now (privateStdout)
		if isTerminal(results) {
			results = prog.clearing(results) // nor are results shown on the same terminal
		}
	}
	// What the workers print may end without a newline: map's own lines start on their own.
	errOut := &sharedOutput{w: workerOut}
	p, err := pool.NewContext(ctx, pool.Options{Workers: *workers, Setup: *setup, Path: []string{cwd}, Stdout: errOut, Stderr: errOut, InterruptGrace: mapInterruptGrace})
	if err != nil {
		if ctx.Err() != nil { // Ctrl-C while --setup ran: it was interrupted
			return exitInterrupt, nil
		}
		if pe := (*cpython.PythonError)(nil); *setup == "" || !errors.As(err, &pe) {
			return exitFailed, fmt.Errorf("the workers could not start: %w", err) // not the command line's fault
		}
		return exitUsage, usageErrorWithTraceback("the workers could not start", err) // --setup raised
	}
	// At the end the workers' interpreters wait for the threads their calls started, as Python's
	// exit does; Ctrl-C interrupts those too (the AfterFunc below is gone by then).
	defer func() {
		if cerr := closeSaying(ctx, p, errOut); cerr != nil {
			err = errors.Join(err, cerr)
			if code == exitOK {
				code = exitFailed
			}
		}
	}()
	if err := p.Check(ctx, target); err != nil {
		if ctx.Err() != nil { // Ctrl-C while the workers imported the target, not a bad target
			return exitInterrupt, nil
		}
		return exitUsage, usageErrorWithTraceback(fmt.Sprintf("cannot use target %s", target), err)
	}

	// Ctrl-C stops the reading and interrupts the calls running then (through the pool, so that
	// a call needs no watcher of its own unless it has a timeout).
	closeNow := func() { p.CloseContext(ended) } // close, interrupting what still runs
	stop := context.AfterFunc(ctx, closeNow)
	defer stop()
	m := &mapper{p: p, target: target, star: *star, timeout: *timeout, window: 4 * *workers, maxLine: *maxLine << 20}
	if *timeout > 0 {
		// A line's deadline runs from its hand-off: hand a line over only when a worker is free
		// for it, so that no deadline runs out in the queue.
		m.free = make(chan struct{}, *workers)
	}
	m.sizer.Max = maxRun
	// No one reading the results any more (| head) stops the calls at once, not only at the
	// next write of a result, which a slow call or idle input can put off for long.
	m.readerGone = make(chan struct{})
	stopWatch := watchReaderGone(rawResults, func() {
		close(m.readerGone)
		exitIfStuck(exitBrokenPipe) // a call that does not stop must not keep map for good
		closeNow()
	})
	st, err := m.run(ctx, in, results, prog)
	stopWatch()
	stopped := ""
	if ctx.Err() != nil {
		stopped = ", interrupted"
	}
	errOut.whole(fmt.Sprintf("pyworkers map: %d lines, %d ok, %d failed in %.2fs%s\n", st.lines, st.ok, st.failed, st.elapsed.Seconds(), stopped))
	switch {
	case errors.Is(err, syscall.EPIPE):
		// No one reads the results any more (| head): stop the calls, quietly.
		closeNow()
		return exitBrokenPipe, nil
	case err != nil:
		// Results cannot be written (a full disk) or input read: the calls still running have
		// nowhere to go; interrupt them rather than wait (the deferred Close is then at once).
		closeNow()
		return exitFailed, err
	case ctx.Err() != nil:
		return exitInterrupt, nil
	case st.failed > 0:
		return exitFailed, nil
	}
	return exitOK, nil
}

func usageErrorWithTraceback(what string, err error) error {
	pe := (*cpython.PythonError)(nil)
	if !errors.As(err, &pe) || !hasMoreThanItsLastLine(pe) {
		return usagef("%s: %v", what, err)
	}
	if tb := strings.TrimRight(pe.Traceback, "\n"); !strings.Contains(tb, "\n") && err.Error() == pe.Error() {
		// no frames, but more than the message: AttributeError's "Did you mean: 'dumps'?"
		return usagef("%s: %s", what, tb)
	}
	return usagef("%s: %v\n%+v", what, err, pe)
}

// hasMoreThanItsLastLine: pe's traceback says more than "Type: message" (frames, a
// SyntaxError's caret lines), which the error's own line says already.
func hasMoreThanItsLastLine(pe *cpython.PythonError) bool {
	tb := strings.TrimRight(pe.Traceback, "\n")
	return tb != "" && tb != pe.Type && tb != pe.Type+": "+strings.TrimRight(pe.Message, "\n")
}

// checkTargetSyntax catches the mistakes that need no interpreter.
func checkTargetSyntax(target string) error {
	i := strings.LastIndex(target, ":")
	if i <= 0 || i == len(target)-1 {
		return usagef("TARGET %q must look like path/to/file.py:function or package.module:function", target)
	}
	if mod := target[:i]; strings.HasSuffix(mod, ".py") || strings.Contains(mod, "/") {
		if err := checkReadable(mod); err != nil {
			return usagef("TARGET file %s: %v", mod, err)
		}
	}
	return nil
}

func progressWanted(mode string, stderr io.Writer) (bool, error) {
	switch mode {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		return isTerminal(stderr), nil
	}
	return false, usagef("--progress must be auto, always or never, not %q", mode)
}

type mapper struct {
	p       *pool.Pool
	target  string
	star    bool
	timeout time.Duration
	window  int
	maxLine int // bytes (--max-line-mib; 0: defaultMaxLineMiB)
	// runMax is how many lines may go to a worker as one batch, set by the writer from sizer
	// (the time batches run on the workers): batching pays for tiny calls, and costs slow ones
	// parallelism.
	runMax atomic.Int32
	sizer  pool.BatchSizer // the writer's only
	free   chan struct{}   // with a timeout: one token per line running (at most one per worker)
	// readerGone is closed when the reader of the results has gone away (watchReaderGone).
	readerGone chan struct{}
}

// mapInterruptGrace is the pool's InterruptGrace: a call still running this long after its
// --timeout interrupt costs its worker, and a fresh one takes the line after it.
const mapInterruptGrace = 2 * time.Second

// pastDeadline is the outcome of a line whose call ended only after its --timeout, with a
// result or an error of its own (cause): it ended as the deadline came, or went on past its
// interrupt (it caught KeyboardInterrupt, or sat in a blocking C call and returned before the
// interrupt was raised). Either way the line timed out.
type pastDeadline struct{ cause error }

func (e *pastDeadline) Error() string {
	return "its call ended only after the deadline: " + context.DeadlineExceeded.Error()
}

func (e *pastDeadline) Unwrap() error { return context.DeadlineExceeded }

// errGivenUp is the outcome of a line whose call had not stopped mapInterruptGrace after its
// --timeout: the pool gave its worker up (a fresh one took its place), and map does not wait
// for it either (a blocking C call may never return).
var errGivenUp = fmt.Errorf("its call did not stop at its interrupt: its worker was given up: %w", context.DeadlineExceeded)

type mapStats struct {
	lines, ok, failed int
	elapsed           time.Duration
}

// add counts o's lines in s.
func (s *mapStats) add(o mapStats) {
	s.lines, s.ok, s.failed = s.lines+o.lines, s.ok+o.ok, s.failed+o.failed
}

// entry is a run of input lines on their way: the lines that are not JSON have their error
// already, the others are calls of one batch (one hand-off to a worker for the lot).
type entry struct {
	first  int // the input line number of the run's first line
	lines  int
	errs   map[int]error // index in the run -> input error
	batch  *pool.BatchFuture
	cancel context.CancelFunc
	err    error       // the batch could not be submitted
	timing *lineTiming // with --timeout
}

// lineTiming says, once settled is closed, whether a --timeout line's call had still not ended
// mapInterruptGrace after its deadline (givenUp: the pool gave its worker up).
type lineTiming struct {
	settled chan struct{}
	givenUp bool
}

func (e entry) abandon() {
	if e.cancel != nil {
		e.cancel()
	}
}

// results gives one outcome per line of the run; lines whose calls have not ended when giveUp
// ends get run's errNotStopped, a cancellation (not written, as an interrupted line is not, so
// that map goes on to its summary).
func (e entry) results(giveUp context.Context) []pool.Result {
	out := make([]pool.Result, e.lines)
	var br []pool.Result
	wait := giveUp
	if e.timing != nil {
		select {
		case <-e.timing.settled: // the batch is done, or its worker was given up
			if e.timing.givenUp {
				wait = ended // not for a call that did not stop: it may never
			}
		case <-giveUp.Done(): // stopped, and the call has not stopped since: the wait below ends at once
		}
	}
	if e.batch != nil {
		var err error
		if br, err = e.batch.Wait(wait); err != nil {
			e.err = err // the pool closed (Ctrl-C): br has the lines that finished, if it ran
			if wait.Err() != nil && errors.Is(err, wait.Err()) {
				e.err = errGivenUp
				if wait == giveUp {
					e.err = fmt.Errorf("%w: %w", errNotStopped, context.Canceled)
				}
			}
		}
	}
	// Told by the pool from when the call ended on its worker, not from when this goroutine or
	// the one that watched the line went on: a busy machine would make outcomes in time late.
	late := e.timing != nil && (e.timing.givenUp || e.batch.Late())
	k := 0
	for i := range out {
		switch {
		case e.errs[i] != nil:
			out[i].Err = e.errs[i]
		case br != nil:
			out[i] = br[k]
			if late && !errors.Is(out[i].Err, context.DeadlineExceeded) {
				out[i] = pool.Result{Err: &pastDeadline{out[i].Err}}
			}
			k++
		default:
			out[i].Err = e.err
		}
	}
	return out
}

// run reads lines and submits them in one goroutine, and waits for results in input order and
// writes them in this one; at most window runs are in flight, so memory stays flat. prog, when
// not nil, shows progress.
func (m *mapper) run(ctx context.Context, in io.Reader, stdout io.Writer, prog *progressLine) (st mapStats, err error) {
	start := time.Now()
	defer func() {
		prog.clear()
		st.elapsed = time.Since(start)
	}()
	entries := make(chan entry, m.window)
	readErr := make(chan error, 1)
	go func() { readErr <- m.read(ctx, in, entries) }()

	// Once stopped (Ctrl-C), a call that still has not stopped stopGrace later (a blocking C
	// call no interrupt reaches) is not waited for: its lines get errNotStopped and the
	// summary is written, before the last resort (exitWhenStuck) ends the process.
	giveUp := afterStopped(ctx)
	out := bufio.NewWriterSize(stdout, 64<<10)
	var lastProgress time.Time
	buf := newLineBuf()
	stopped := false
	for !stopped {
		var e entry
		var ok bool
		select {
		case e, ok = <-entries: // what is there first, also after Ctrl-C: finished lines are written
		default:
			select {
			case e, ok = <-entries:
			case <-ctx.Done():
				// Ctrl-C while the input is idle: do not wait for more input (the reader may sit
				// in a read of a terminal or a pipe); what was written is whole lines already.
				stopped = true
				continue
			case <-m.readerGone: // nor when no one reads the results
				return st, fmt.Errorf("writing results: %w", syscall.EPIPE)
			}
		}
		if !ok {
			break
		}
		results := e.results(giveUp)
		e.abandon()
		if e.batch != nil {
			m.sizer.Observe(e.batch)
			m.runMax.Store(int32(m.sizer.Size()))
		}
		done, cut, err := m.write(ctx, out, buf, e.first, results)
		if err != nil {
			return st, fmt.Errorf("writing results: %w", err) // no one reads them: stop
		}
		stopped = cut
		st.add(done)
		if prog != nil && time.Since(lastProgress) > 200*time.Millisecond {
			lastProgress = time.Now()
			el := time.Since(start).Seconds()
			prog.show(fmt.Sprintf("%d lines, %d failed, %.0f lines/s", st.lines, st.failed, float64(st.lines)/el))
		}
	}
	werr := out.Flush()
	if stopped {
		return st, werr // the reader may be blocked on input: it goes with the process
	}
	if err := <-readErr; err != nil {
		return st, err
	}
	return st, werr
}

// write writes the lines of a batch (its first is input line first) and flushes them: a reader
// downstream (| jq, | head) sees results as they come, and it costs one write per batch of up
// to 64 lines. After Ctrl-C it stops (cut) at the first line that did not finish, so that the
// output stays one line per input, in order. done counts the lines written. The batch goes out
// whole under outputMu: a process that exits as stuck does not cut it.
func (m *mapper) write(ctx context.Context, out *bufio.Writer, buf *lineBuf, first int, results []pool.Result) (done mapStats, cut bool, err error) {
	outputMu.Lock()
	defer outputMu.Unlock()
	for k, r := range results {
		if ctx.Err() != nil && r.Err != nil && isCancellation(r.Err) {
			cut = true
			break
		}
		buf.Reset()
		err := r.Err
		if err == nil {
			err = writeOK(buf, r.Value, first+k)
		}
		failed := err != nil
		if failed {
			buf.Reset()
			writeError(buf, err, m.timeout)
		}
		if _, err := out.Write(buf.Bytes()); err != nil {
			return done, cut, err
		}
		done.lines++
		if failed {
			done.failed++
		} else {
			done.ok++
		}
	}
	return done, cut, out.Flush()
}

// closeSaying is p.CloseContext(ctx), which waits for the threads the calls started, the
// atexit functions they registered and the finalizers of what their modules hold, as Python's
// exit does; when that takes more than a second, stderr says so, rather than leave the user to
// wonder why map has not exited. It gives up (errGaveUp) on workers the pool gave up on (a
// call that did not stop at its --timeout: GivenUp) that have still not ended stopGrace after
// every other worker has: interrupted again and again, they are blocked where no interrupt
// reaches.
func closeSaying(ctx context.Context, p *pool.Pool, stderr *sharedOutput) error {
	t := time.AfterFunc(time.Second, func() {
		msg := "pyworkers map: waiting for the workers to end (threads the calls started, atexit functions, finalizers), as Python's exit does (Ctrl-C interrupts them)"
		if n := p.Stats().Groups[0].GivenUp; n > 0 {
			msg += fmt.Sprintf("; %d of them given up on, their calls blocked where no interrupt reaches (a C call that does not return): not waited for beyond %v", n, stopGrace)
		}
		stderr.whole(msg + "\n")
	})
	defer t.Stop()
	closed := make(chan struct{})
	go func() {
		p.CloseContext(ctx)
		close(closed)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var onlyGivenUp time.Time // since when only workers given up on are left
	for {
		select {
		case <-closed:
			return nil
		case <-tick.C:
		}
		if s := p.Stats().Groups[0]; s.Workers > 0 || s.GivenUp == 0 || s.Ending > s.GivenUp {
			onlyGivenUp = time.Time{}
		} else if onlyGivenUp.IsZero() {
			onlyGivenUp = time.Now()
		} else if time.Since(onlyGivenUp) > stopGrace {
			return errGaveUp
		}
	}
}

// openInput opens path, which can wait for good (a FIFO that no one writes to yet): Ctrl-C or
// SIGTERM ends the wait, and the open is left behind (the process is about to end).
func openInput(ctx context.Context, path string) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	c := make(chan opened, 1)
	go func() {
		f, err := os.Open(path)
		c <- opened{f, err}
	}()
	select {
	case o := <-c:
		return o.f, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ended is a context that has ended: CloseContext with it interrupts at once, and Wait with it
// does not wait.
var ended = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// isCancellation: the call did not finish because of Ctrl-C (the pool closed under it).
func isCancellation(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, pool.ErrClosed) || errors.Is(err, cpython.ErrClosed)
}

// maxWorkers bounds -w: each worker holds an OS thread, and Go ends a process at 10,000.
const maxWorkers = 4096

// checkWorkers is the usage error for a -w (map's, run's) out of range, or nil.
func checkWorkers(n int) error {
	switch {
	case n < 1:
		return usagef("-w must be at least 1, got %d", n)
	case n > maxWorkers:
		return usagef("-w %d: at most %d (each worker holds an OS thread, and Go allows a process 10,000)", n, maxWorkers)
	}
	return nil
}

// maxRun is the most lines sent to a worker as one batch.
const maxRun = 64

// read turns input lines into submitted batches: the lines already read into the buffer (up to
// runMax) go together, so a fast input is batched and a slow one is not kept waiting. With
// --timeout every line is its own batch, so that each has its own deadline.
func (m *mapper) read(ctx context.Context, in io.Reader, entries chan<- entry) error {
	maxLine := m.maxLine
	if maxLine <= 0 {
		maxLine = defaultMaxLineMiB << 20
	}
	defer close(entries)
	r := bufio.NewReaderSize(in, 256<<10)
	line := 0
	for {
		runMax := int(m.runMax.Load())
		if m.timeout > 0 || runMax < 1 {
			runMax = 1
		}
		var items [][]any
		e := entry{first: line + 1}
		eof := false
		var rerr error // a read error ends the input after the lines read before it
		for e.lines < runMax {
			if ctx.Err() != nil {
				return nil
			}
			text, tooLong, err := readLine(r, maxLine)
			if err != nil && err != io.EOF {
				rerr = fmt.Errorf("reading input after line %d: %w", line, err)
				break // text, a line it cut short, is not one
			}
			eof = err == io.EOF
			text = bytes.TrimRight(text, "\r\n")
			if line == 0 { // a byte order mark, as editors on Windows write, is not part of the JSON
				text = bytes.TrimPrefix(text, []byte("\ufeff"))
				if bytes.HasPrefix(text, []byte{0xff, 0xfe}) || bytes.HasPrefix(text, []byte{0xfe, 0xff}) {
					// PowerShell's > writes UTF-16: split at its line ends, it would make lines
					// of junk, more than there are
					rerr = errors.New("the input is UTF-16 (it starts with a UTF-16 byte order mark): convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
					break
				}
			}
			if eof && len(text) == 0 && !tooLong {
				break // the end of the last line, not a line (one of blanks is: it gets an error)
			}
			line++
			var aerr error
			if tooLong {
				aerr = fmt.Errorf("longer than %d MiB (--max-line-mib), skipped", maxLine>>20)
			} else {
				aerr = checkLine(text)
			}
			if aerr != nil {
				if e.errs == nil {
					e.errs = map[int]error{}
				}
				e.errs[e.lines] = &inputError{fmt.Sprintf("line %d: %v", line, aerr)}
			} else {
				items = append(items, []any{m.target, m.star, string(text)})
			}
			e.lines++
			if eof || r.Buffered() == 0 {
				break // send what there is rather than wait for more input
			}
		}
		if e.lines > 0 {
			if len(items) > 0 && !m.submit(ctx, &e, items) {
				return nil // Ctrl-C while waiting for a free worker
			}
			entries <- e
		}
		if eof || rerr != nil {
			return rerr
		}
	}
}

// submit hands items to the workers as e's batch; false when ctx ended first. Not under ctx:
// Ctrl-C reaches the calls through the pool (see cmdMap). With --timeout the batch (one line)
// has its deadline and is handed over only when a worker is free for it (m.free).
func (m *mapper) submit(ctx context.Context, e *entry, items [][]any) bool {
	if m.timeout <= 0 {
		e.batch, e.err = m.p.SubmitBatch(context.Background(), jsonLine, items)
		return true
	}
	select {
	case m.free <- struct{}{}: // a worker is free for this line
	case <-ctx.Done():
		return false
	}
	tctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	e.cancel = cancel
	if e.batch, e.err = m.p.SubmitBatch(tctx, jsonLine, items); e.err != nil {
		<-m.free
		return true
	}
	timing := &lineTiming{settled: make(chan struct{})}
	e.timing = timing
	go func(b *pool.BatchFuture) {
		// Its worker is free again when the batch is done, or mapInterruptGrace after the
		// deadline, when the pool has put a fresh worker in the place of one whose call did not
		// stop (the batch's outcome comes when that call ends).
		deadline, _ := tctx.Deadline()
		wctx, wcancel := context.WithDeadline(context.Background(), deadline.Add(mapInterruptGrace))
		_, err := b.Wait(wctx)
		timing.givenUp = wctx.Err() != nil && errors.Is(err, wctx.Err())
		wcancel()
		close(timing.settled)
		if timing.givenUp {
			m.awaitSlot(ctx, b)
		}
		<-m.free
	}(e.batch)
	return true
}

// awaitSlot waits, after b's worker was given up, until the pool has a worker in that worker's
// place: at once, unless as many of its workers are given up as map has (calls blocked in C),
// when the pool fills the slot only once one of them ends (see pool's InterruptGrace), or b
// itself has ended, or map is stopped. The next line's deadline would otherwise run out in the
// queue, before any worker took it.
//
// The pool gives the worker up on its own timer, at about the moment the line settled: the
// count is looked at for a quarter of a second before a slot is taken to be there.
func (m *mapper) awaitSlot(ctx context.Context, b *pool.BatchFuture) {
	look := time.Now().Add(250 * time.Millisecond)
	for m.p.Stats().Groups[0].GivenUp > cap(m.free) || time.Now().Before(look) {
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := b.Wait(wctx)
		cancel()
		if ctx.Err() != nil || err == nil || !errors.Is(err, wctx.Err()) {
			return
		}
	}
}

type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

// jsonLine is the worker side of map: it decodes a line with Python's json module, calls the
// target and encodes the result (bootstrap.py's json_line), so that a line means in Python
// what it means to Python's json: objects keep their key order, 2.0 stays a float, a string
// may hold a lone surrogate escape. Its items are (target, star, line).
const jsonLine = "pyworkers:_json_line"

// defaultMaxLineMiB is --max-line-mib's default: JSON lines are rarely near it, and one line
// costs a few times its size while it crosses and is parsed.
const defaultMaxLineMiB = 256

// readLine reads one line, with its line end if it has one, as ReadBytes('\n') does, but keeps
// no more than max bytes of it: a longer line is read to its end and dropped (tooLong), so that
// one huge line (input with no line ends, /dev/zero) cannot take all memory.
func readLine(r *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, err := r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > max+2 { // the line end ("\r\n") does not count
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if err != bufio.ErrBufferFull {
			if !tooLong && len(bytes.TrimRight(line, "\r\n")) > max {
				tooLong, line = true, nil
			}
			return line, tooLong, err
		}
	}
}

// checkLine is what a line must be before it goes to a worker: text, and not empty.
func checkLine(text []byte) error {
	if len(bytes.Trim(text, " \t\r\n")) == 0 { // JSON's white space: a no-break space is text
		return errors.New("an empty line, not JSON")
	}
	if !utf8.Valid(text) {
		return errors.New("not JSON: not valid UTF-8") // it could not cross as a str
	}
	if k := bytes.IndexByte(text, 0); k >= 0 { // JSON has none, not even in a string
		return fmt.Errorf("not JSON: a NUL byte at byte %d", k+1)
	}
	return nil
}

// lineBuf holds one output line at a time, with its JSON encoder made once.
type lineBuf struct {
	bytes.Buffer
	enc *json.Encoder
}

func newLineBuf() *lineBuf {
	lb := &lineBuf{}
	lb.enc = json.NewEncoder(&lb.Buffer)
	lb.enc.SetEscapeHTML(false)
	return lb
}

// writeOK writes {"ok": RESULT} for json_line's outcome of the line numbered line: the
// result's JSON text, or (kind, message) for a line that is not JSON (1) or a result JSON
// cannot hold (2), which is the error returned.
func writeOK(buf *lineBuf, v any, line int) error {
	switch x := v.(type) {
	case string:
		buf.WriteString(`{"ok":`)
		buf.WriteString(x)
		buf.WriteString("}\n")
		return nil
	case cpython.Tuple:
		if len(x) == 2 {
			msg, _ := x[1].(string)
			switch x[0] {
			case int64(1):
				return &inputError{fmt.Sprintf("line %d: %s", line, msg)}
			case int64(2):
				return &resultError{msg}
			}
		}
	}
	return fmt.Errorf("pyworkers map: unexpected outcome %T from the worker", v)
}

// resultError is a result that JSON cannot hold.
type resultError struct{ msg string }

func (e *resultError) Error() string { return e.msg }

// errorJSON is how the CLI reports an error in JSON (map's lines, doctor's report): a Python
// exception's type, message and traceback, or "Error" and the error's text.
type errorJSON struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
}

func errorJSONOf(err error) errorJSON {
	if pe := (*cpython.PythonError)(nil); errors.As(err, &pe) {
		return errorJSON{pe.Type, pe.Message, pe.Traceback}
	}
	return errorJSON{"Error", err.Error(), ""}
}

type errorLine struct {
	Error errorJSON `json:"error"`
}

func writeError(buf *lineBuf, err error, timeout time.Duration) {
	var el errorLine
	e := &el.Error
	var pe *cpython.PythonError
	var ce *cpython.ConversionError
	var ie *inputError
	var re *resultError
	var pd *pastDeadline
	switch {
	case errors.As(err, &pd):
		e.Type, e.Message = "TimeoutError", fmt.Sprintf("no result within %v (the call ended only after that)", timeout)
		if errors.As(pd.cause, &pe) {
			e.Message = fmt.Sprintf("no result within %v (the call ended only after that, with %s: %s)", timeout, pe.Type, pe.Message)
			e.Traceback = pe.Traceback
		}
	case errors.Is(err, errGivenUp):
		e.Type, e.Message = "TimeoutError", fmt.Sprintf("no result within %v (the call did not stop at its interrupt: its worker was given up)", timeout)
	case errors.Is(err, context.DeadlineExceeded):
		e.Type, e.Message = "TimeoutError", fmt.Sprintf("no result within %v", timeout)
		if errors.As(err, &pe) {
			e.Traceback = pe.Traceback
		}
	case errors.As(err, &ce):
		where := "the " + ce.What
		if ce.Path != "" {
			where += " at " + ce.Path
		}
		e.Type, e.Message = "TypeError", where+": "+ce.Reason
	case errors.As(err, &ie):
		e.Type, e.Message = "InputError", ie.msg
	case errors.As(err, &re):
		e.Type, e.Message = "TypeError", re.msg
	default:
		*e = errorJSONOf(err) // a Python exception, or pyworkers' own error
	}
	buf.enc.Encode(el)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine is map's progress on stderr: one line, rewritten in place, that is cleared
// before anything else reaches the terminal (what workers print, results shown on the same
// terminal) so that nothing is glued to it. Its methods may be called from any goroutine; those
// of a nil *progressLine do nothing.
type progressLine struct {
	mu    sync.Mutex
	w     io.Writer
	shown bool
	// midLine: what was written last (a worker's output) did not end its line; the progress
	// stays hidden until it does, as redrawing it would erase that text from the terminal.
	midLine bool
}

const clearLine = "\r\033[K"

func (p *progressLine) show(text string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.midLine {
		return
	}
	io.WriteString(p.w, clearLine+text)
	p.shown = true
}

func (p *progressLine) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

func (p *progressLine) clearLocked() {
	if p.shown {
		io.WriteString(p.w, clearLine)
		p.shown = false
	}
}

// clearing wraps w, a writer to the same terminal: each Write clears the progress line first.
func (p *progressLine) clearing(w io.Writer) io.Writer { return &clearingWriter{p, w} }

type clearingWriter struct {
	p *progressLine
	w io.Writer
}

func (c *clearingWriter) Write(b []byte) (int, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.clearLocked()
	if len(b) > 0 {
		c.p.midLine = b[len(b)-1] != '\n'
	}
	return c.w.Write(b)
}
