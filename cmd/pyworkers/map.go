package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/pool"
)

const mapUsage = `Usage: pyworkers map [-w N] [--timeout D] [--setup CODE] [--star] TARGET [INPUT]

Calls TARGET once per line of INPUT (JSON Lines; standard input when INPUT is omitted or "-")
on N own-GIL interpreters, and writes one JSON line per input line to standard output, in
input order:
  {"ok": RESULT}
  {"error": {"type": "ValueError", "message": "...", "traceback": "..."}}
TARGET is path/to/file.py:func or pkg.module:func. Each line's JSON value is the function's one
argument; with --star an array is spread into positional arguments and an object into keyword
arguments. Tuples come back as arrays; a result JSON cannot hold (bytes, NaN, ...) and a line
that is not JSON give an error line, not an abort. What the function prints goes to standard
error. Exit status: 0 when every line succeeded, 1 when some failed, 2 for a bad command line
or a TARGET that cannot be imported (said before any work starts), 130 after Ctrl-C (the lines
finished by then are written; a second Ctrl-C exits at once).

Examples:
  printf '1\n2\n3\n' | pyworkers map -w 2 testdata/demo/isqrt.py:isqrt_sum
  pyworkers map --star --timeout 5s mypkg.scoring:score requests.jsonl > results.jsonl
  pyworkers map --setup 'import json' json:dumps values.jsonl

Flags:
`

func cmdMap(ctx context.Context, args []string, std io3) (int, error) {
	fs := newFlags("map", mapUsage, std)
	workers := fs.IntP("workers", "w", runtime.NumCPU(), "number of interpreters")
	timeout := fs.Duration("timeout", 0, "stop a call after this long (e.g. 500ms); 0: no limit")
	setup := fs.String("setup", "", "Python code every worker runs before it takes work")
	star := fs.Bool("star", false, "spread an array line into positional arguments, an object into keyword arguments")
	progress := fs.String("progress", "auto", "progress on stderr: auto (when stderr is a terminal), always, never")
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return exitUsage, usagef("want TARGET [INPUT] (see pyworkers map --help)")
	}
	target := fs.Arg(0)
	if *workers < 1 {
		return exitUsage, usagef("-w must be at least 1, got %d", *workers)
	}
	showProgress, err := progressWanted(*progress, std.stderr)
	if err != nil {
		return exitUsage, err
	}
	if err := checkTargetSyntax(target); err != nil {
		return exitUsage, err
	}
	in := std.stdin
	if fs.NArg() == 2 && fs.Arg(1) != "-" {
		f, err := os.Open(fs.Arg(1))
		if err != nil {
			return exitUsage, usagef("cannot read INPUT: %v", err)
		}
		defer f.Close()
		in = f
	}

	cwd, _ := os.Getwd()
	p, err := pool.New(pool.Options{Workers: *workers, Setup: *setup, Path: []string{cwd}, Stdout: std.stderr, Stderr: std.stderr})
	if err != nil {
		return exitUsage, usageErrorWithTraceback("the workers could not start", err)
	}
	defer p.Close()
	if err := p.Check(ctx, target); err != nil {
		return exitUsage, usageErrorWithTraceback(fmt.Sprintf("cannot use target %s", target), err)
	}

	// Ctrl-C stops the reading and interrupts the calls running then (through the pool, so that
	// a call needs no watcher of its own unless it has a timeout).
	stop := context.AfterFunc(ctx, func() {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		p.CloseContext(done)
	})
	defer stop()
	m := &mapper{p: p, target: target, star: *star, timeout: *timeout, window: 16 * *workers}
	st, err := m.run(ctx, in, std.stdout, std.stderr, showProgress)
	fmt.Fprintf(std.stderr, "pyworkers map: %d lines, %d ok, %d failed in %.2fs\n", st.lines, st.ok, st.failed, st.elapsed.Seconds())
	switch {
	case err != nil:
		return exitFailed, err
	case ctx.Err() != nil:
		return exitInterrupt, nil
	case st.failed > 0:
		return exitFailed, nil
	}
	return exitOK, nil
}

func usageErrorWithTraceback(what string, err error) error {
	if pe := (*cpython.PythonError)(nil); errors.As(err, &pe) {
		return usagef("%s: %v\n%+v", what, err, pe)
	}
	return usagef("%s: %v", what, err)
}

// checkTargetSyntax catches the mistakes that need no interpreter.
func checkTargetSyntax(target string) error {
	i := strings.LastIndex(target, ":")
	if i <= 0 || i == len(target)-1 {
		return usagef("TARGET %q must look like path/to/file.py:function or package.module:function", target)
	}
	if mod := target[:i]; strings.HasSuffix(mod, ".py") || strings.Contains(mod, "/") {
		if st, err := os.Stat(mod); err != nil || st.IsDir() {
			return usagef("TARGET file %s: no such file", mod)
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
}

type mapStats struct {
	lines, ok, failed int
	elapsed           time.Duration
}

// entry is one input line on its way: its future, or the error it already has.
type entry struct {
	line   int
	future *pool.Future
	cancel context.CancelFunc
	err    error
}

// run reads lines and submits them in one goroutine, and waits for results in input order and
// writes them in this one; at most window lines are in flight, so memory stays flat.
func (m *mapper) run(ctx context.Context, in io.Reader, stdout, stderr io.Writer, progress bool) (mapStats, error) {
	start := time.Now()
	entries := make(chan entry, m.window)
	readErr := make(chan error, 1)
	go func() { readErr <- m.read(ctx, in, entries) }()

	out := bufio.NewWriterSize(stdout, 64<<10)
	flushEach := isTerminal(stdout)
	var st mapStats
	var lastProgress time.Time
	var buf bytes.Buffer
	stopped := false
	for e := range entries {
		if stopped {
			e.abandon()
			continue
		}
		var val any
		err := e.err
		if e.future != nil {
			val, err = e.future.Wait(context.Background())
			e.cancel()
		}
		if ctx.Err() != nil && err != nil && isCancellation(err) {
			// Ctrl-C: this line did not finish; what follows is not written either, so that
			// the output stays one line per input, in order.
			stopped = true
			continue
		}
		buf.Reset()
		if err == nil {
			err = writeOK(&buf, val)
		}
		if err != nil {
			buf.Reset()
			writeError(&buf, e.line, err, m.timeout)
			st.failed++
		} else {
			st.ok++
		}
		st.lines++
		out.Write(buf.Bytes())
		if flushEach {
			out.Flush()
		}
		if progress && time.Since(lastProgress) > 200*time.Millisecond {
			lastProgress = time.Now()
			el := time.Since(start).Seconds()
			fmt.Fprintf(stderr, "\r%d lines, %d failed, %.0f lines/s   ", st.lines, st.failed, float64(st.lines)/el)
		}
	}
	if progress {
		fmt.Fprint(stderr, "\r\033[K")
	}
	st.elapsed = time.Since(start)
	werr := out.Flush()
	if err := <-readErr; err != nil {
		return st, err
	}
	return st, werr
}

func (e entry) abandon() {
	if e.cancel != nil {
		e.cancel()
	}
}

// isCancellation: the call did not finish because of Ctrl-C (the pool closed under it).
func isCancellation(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, pool.ErrClosed) || errors.Is(err, cpython.ErrClosed)
}

// read turns input lines into submitted calls; a line that is not JSON becomes an error entry.
func (m *mapper) read(ctx context.Context, in io.Reader, entries chan<- entry) error {
	defer close(entries)
	r := bufio.NewReaderSize(in, 64<<10)
	for line := 1; ; line++ {
		if ctx.Err() != nil {
			return nil
		}
		text, err := r.ReadBytes('\n')
		if len(text) == 0 && err == io.EOF {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading input: %w", err)
		}
		text = bytes.TrimRight(text, "\r\n")
		if len(bytes.TrimSpace(text)) == 0 && err == io.EOF {
			return nil
		}
		entries <- m.submit(ctx, line, text)
		if err == io.EOF {
			return nil
		}
	}
}

func (m *mapper) submit(ctx context.Context, line int, text []byte) entry {
	args, err := m.args(text)
	if err != nil {
		return entry{line: line, err: &inputError{fmt.Sprintf("line %d: %v", line, err)}}
	}
	// Not ctx: Ctrl-C reaches the calls through the pool (see cmdMap).
	tctx, cancel := context.Background(), context.CancelFunc(func() {})
	if m.timeout > 0 {
		tctx, cancel = context.WithTimeout(tctx, m.timeout)
	}
	f, err := m.p.Submit(tctx, m.target, args...)
	if err != nil {
		cancel()
		return entry{line: line, err: err}
	}
	return entry{line: line, future: f, cancel: cancel}
}

type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

// args decodes one line into call arguments; numbers stay integers when they are.
func (m *mapper) args(text []byte) ([]any, error) {
	d := json.NewDecoder(bytes.NewReader(text))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if d.More() {
		return nil, errors.New("not JSON: more than one value on the line")
	}
	v = fromJSON(v)
	if m.star {
		switch x := v.(type) {
		case []any:
			return x, nil
		case map[string]any:
			return []any{cpython.Kwargs(x)}, nil
		}
		return nil, fmt.Errorf("--star needs an array or an object, got %s", jsonKind(v))
	}
	return []any{v}, nil
}

func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if n, err := x.Int64(); err == nil {
				return n
			}
			if b, ok := new(big.Int).SetString(s, 10); ok {
				return b
			}
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = fromJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = fromJSON(x[k])
		}
	}
	return v
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case int64, float64, *big.Int:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// writeOK writes {"ok": val}, or fails naming what JSON cannot hold.
func writeOK(buf *bytes.Buffer, val any) error {
	if err := jsonable(val, ""); err != nil {
		return err
	}
	buf.WriteString(`{"ok":`)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(val); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	buf.WriteString("}\n")
	return nil
}

// resultError is a result that JSON cannot hold.
type resultError struct{ msg string }

func (e *resultError) Error() string { return e.msg }

func jsonable(v any, path string) error {
	where := func() string {
		if path == "" {
			return "the result"
		}
		return "the result at " + path
	}
	switch x := v.(type) {
	case nil, bool, int64, *big.Int, string:
		return nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return &resultError{fmt.Sprintf("%s is %v, which JSON cannot hold", where(), x)}
		}
		return nil
	case []byte:
		return &resultError{fmt.Sprintf("%s is bytes, which JSON cannot hold (decode it, or return base64 text)", where())}
	case *cpython.Buffer:
		x.Release()
		return &resultError{fmt.Sprintf("%s is a pyworkers.Buffer, which JSON cannot hold", where())}
	case cpython.Tuple:
		return jsonable([]any(x), path)
	case []any:
		for i, e := range x {
			if err := jsonable(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for k, e := range x {
			if err := jsonable(e, fmt.Sprintf("%s[%q]", path, k)); err != nil {
				return err
			}
		}
		return nil
	}
	return &resultError{fmt.Sprintf("%s has Go type %T, which JSON cannot hold", where(), v)}
}

type errorLine struct {
	Error struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		Traceback string `json:"traceback,omitempty"`
	} `json:"error"`
}

func writeError(buf *bytes.Buffer, line int, err error, timeout time.Duration) {
	var el errorLine
	e := &el.Error
	var pe *cpython.PythonError
	var ce *cpython.ConversionError
	var ie *inputError
	var re *resultError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		e.Type, e.Message = "TimeoutError", fmt.Sprintf("no result within %v", timeout)
		if errors.As(err, &pe) {
			e.Traceback = pe.Traceback
		}
	case errors.As(err, &pe):
		e.Type, e.Message, e.Traceback = pe.Type, pe.Message, pe.Traceback
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
		e.Type, e.Message = "Error", err.Error()
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	enc.Encode(el)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
