package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

// binary is the pyworkers command built once for these tests.
var binary string

func TestMain(m *testing.M) {
	os.Unsetenv("VIRTUAL_ENV") // the tests' pyworkers use no environment but those they make
	dir, err := os.MkdirTemp("", "pyworkers-cli-test")
	if err == nil {
		binary = filepath.Join(dir, "pyworkers")
		args := append(append([]string{"build", "-o", binary}, raceFlag...), pydebugTag...)
		out, berr := exec.Command("go", append(args, ".")...).CombinedOutput()
		if berr != nil {
			err = fmt.Errorf("%v\n%s", berr, out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building pyworkers:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func pyworkers(t *testing.T, args ...string) result {
	t.Helper()
	return pyworkersIn(t, "", args...)
}

func script(t *testing.T, src string) string {
	p := filepath.Join(t.TempDir(), "script.py")
	require.NoError(t, os.WriteFile(p, []byte(src), 0o644))
	return p
}

// version names pyworkers, the CPython it links, and which build of it.
func TestVersion(t *testing.T) {
	r := pyworkers(t, "version")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "pyworkers ")
	assert.Contains(t, r.stdout, "CPython 3.14.")
	want := "release build"
	if pydebugTag != nil {
		want = "debug build"
	}
	assert.Contains(t, r.stdout, want)
}

func TestRunEveryWorkerOnce(t *testing.T) {
	p := script(t, "import sys, pyworkers\nprint('worker', pyworkers.worker_id(), 'of', pyworkers.workers(), sys.argv[1:])\n")
	r := pyworkers(t, "run", "-w", "3", p, "--", "a", "b")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	assert.ElementsMatch(t, []string{
		"[0] worker 0 of 3 ['a', 'b']",
		"[1] worker 1 of 3 ['a', 'b']",
		"[2] worker 2 of 3 ['a', 'b']",
	}, lines)
	assert.Contains(t, r.stderr, "3 of 3 workers succeeded")

	r = pyworkers(t, "run", "-w", "2", "--no-prefix", p)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "worker 1 of 2 []\n")
	assert.NotContains(t, r.stdout, "[1]")
}

// A line a worker leaves unfinished (a flush mid-line, its last line) is not glued to another
// worker's output or to a failure's report: each starts on a line of its own, and the rest of
// the unfinished line comes with its prefix again. The workers take turns through files.
func TestRunKeepsEachWorkersLinesApart(t *testing.T) {
	p := script(t, `
import os, sys, time, pyworkers
def wait_for(name):
    while not os.path.exists(os.path.join(sys.argv[1], name)):
        time.sleep(0.005)
def mark(name):
    open(os.path.join(sys.argv[1], name), "w").close()
if pyworkers.worker_id() == 0:
    print("loading...", end="", flush=True)
    mark("a")
    wait_for("b")
    print(" done")
    print("bye", end="")
else:
    wait_for("a")
    print("worker 1 line")
    print("tail", end="", flush=True)
    sys.stderr.write("warn")
    sys.stderr.flush()
    mark("b")
    raise ValueError("worker one fails")
`)
	r := pyworkers(t, "run", "-w", "2", p, "--", t.TempDir())
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Equal(t, "[0] loading...\n[1] worker 1 line\n[1] tail\n[0]  done\n[0] bye\n", r.stdout)
	assert.Contains(t, r.stderr, "[1] warn\nworker 1 failed: ValueError: worker one fails\n")

	// without prefixes the workers' output is as they wrote it, but the report is not glued to it
	r = pyworkers(t, "run", "-w", "2", "--no-prefix", p, "--", t.TempDir())
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Contains(t, r.stderr, "warn\nworker 1 failed: ValueError: worker one fails\n")
}

// Workers that fail alike (a SyntaxError in the script) write the traceback once.
func TestRunWritesATracebackOnce(t *testing.T) {
	p := script(t, "print('ok')\ndef f(:\n")
	r := pyworkers(t, "run", "-w", "3", p)
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Equal(t, 3, strings.Count(r.stderr, "failed: SyntaxError"), r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, p+`", line 2`), r.stderr)
	assert.Equal(t, 2, strings.Count(r.stderr, "(the same traceback as worker "), r.stderr)
}

func TestRunFailureShowsTracebackAndExits1(t *testing.T) {
	p := script(t, "import pyworkers\nif pyworkers.worker_id() == 1:\n    raise ValueError('worker one fails')\nprint('ok')\n")
	r := pyworkers(t, "run", "-w", "2", p)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "[0] ok")
	assert.Contains(t, r.stderr, "worker 1 failed: ValueError: worker one fails")
	assert.Contains(t, r.stderr, "Traceback (most recent call last):")
	assert.Contains(t, r.stderr, p+`", line 3`)
}

// As with python SCRIPT.py: the script's folder is on sys.path, sys.exit(0) is success, and a
// line longer than the output buffer keeps its one prefix (one worker: two workers' lines that
// long may interleave, as two processes' would).
func TestRunLikePython(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "helper.py"), []byte("WORD = 'beside'\n"), 0o644))
	job := filepath.Join(dir, "job.py")
	require.NoError(t, os.WriteFile(job, []byte("import sys, helper\nprint(helper.WORD)\nsys.exit(0)\n"), 0o644))
	r := pyworkers(t, "run", "-w", "2", job)
	require.Equal(t, 0, r.code, r.stderr)
	assert.ElementsMatch(t, []string{"[0] beside", "[1] beside"}, strings.Split(strings.TrimSpace(r.stdout), "\n"))

	long := script(t, "print('x' * 100_000)\nprint('after')\n")
	r = pyworkers(t, "run", "-w", "1", long)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "[0] "+strings.Repeat("x", 100_000)+"\n[0] after\n", r.stdout)

	for _, exit := range []string{"sys.exit()", "sys.exit(None)", "sys.exit(False)", "raise SystemExit"} {
		r = pyworkers(t, "run", "-w", "1", script(t, "import sys\n"+exit+"\n"))
		assert.Equal(t, 0, r.code, "%s: %s", exit, r.stderr)
	}
	for exit, status := range map[string]string{"sys.exit(3)": "3", "sys.exit('0')": "1", "sys.exit(256 + 7)": "7", "sys.exit(256)": ""} {
		r = pyworkers(t, "run", "-w", "1", script(t, "import sys\n"+exit+"\n"))
		if status == "" {
			assert.Equal(t, 0, r.code, "%s: python ends with status 0 too: %s", exit, r.stderr)
			continue
		}
		assert.Equal(t, 1, r.code, "%s: another exit status is a failure", exit)
		assert.Contains(t, r.stderr, "worker 0 exited with status "+status+": SystemExit: ", exit)
	}
}

func TestRunTimeoutStopsAHungScript(t *testing.T) {
	p := script(t, "while True:\n    pass\n")
	r := pyworkers(t, "run", "-w", "2", "--timeout", "200ms", p)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "worker 0 stopped at --timeout 200ms: ")
	assert.Contains(t, r.stderr, "context deadline exceeded")
	assert.Contains(t, r.stderr, "0 of 2 workers succeeded")
}

// Standard input that is a directory: CPython cannot start with it (its sys.stdin is made of
// file descriptor 0 first), and the error says so rather than blame the build; map, whose
// input it is, says so before anything starts.
func TestStdinThatIsADirectory(t *testing.T) {
	p := script(t, "def f(x):\n    return x\n")
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"run", "-w", "1", p}, 1, "none may be a directory"},
		{[]string{"map", p + ":f"}, 2, "cannot read INPUT: standard input is a directory"},
	} {
		dir, err := os.Open(t.TempDir())
		require.NoError(t, err)
		cmd := exec.Command(binary, c.args...)
		cmd.Stdin = dir
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err = cmd.Run()
		dir.Close()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", c.args, errb.String())
		assert.Equal(t, c.code, ee.ExitCode(), "%v: %s", c.args, errb.String())
		assert.Contains(t, errb.String(), c.says, c.args)
		assert.NotContains(t, errb.String(), "build-python.sh", c.args)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	ok := script(t, "pass\n") // a script that runs: each case fails on its flag alone
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{}, "Usage"},
		{[]string{"no-such-command"}, "no-such-command"},
		{[]string{"run"}, "missing SCRIPT.py"},
		{[]string{"run", "/no/such/script.py"}, "no such file"},
		{[]string{"run", t.TempDir()}, "is a directory"},
		{[]string{"run", os.DevNull}, "not a regular file"}, // as <(...) and /dev/stdin: each worker reads it
		{[]string{"run", ok, "--", "caf\xe9"}, `"caf\xe9" is not valid UTF-8`},
		{[]string{"run", "-w", "0", ok}, "-w must be at least 1"},
		{[]string{"run", "--no-such-flag", ok}, "unknown flag"},
		{[]string{"run", "--timeout", "-1s", ok}, "--timeout must not be negative"},
		{[]string{"bench", "-w", "1"}, "at least 2"},
		{[]string{"bench", "-w", "5000"}, "at most 4096"},
		{[]string{"bench", "extra"}, "no arguments"},
		{[]string{"bench", "--bogus"}, "unknown flag"},
		{[]string{"version", "extra"}, "no arguments"},
		{[]string{"doctor", "--bogus"}, "unknown flag"},
	} {
		r := pyworkers(t, c.args...)
		assert.Equal(t, 2, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.says, "%v", c.args)
		assert.Empty(t, r.stdout, "%v", c.args)
	}
	// as many workers as Go allows threads would end the process: refused before any starts
	for _, cmd := range []string{"run", "map"} {
		r := pyworkers(t, cmd, "-w", "5000", script(t, "def f(x):\n    return x\n")+map[string]string{"run": "", "map": ":f"}[cmd])
		assert.Equal(t, 2, r.code, "%s: %s", cmd, r.stderr)
		assert.Contains(t, r.stderr, "at most 4096", cmd)
	}
}

// pyworkersIn runs pyworkers with stdin as its standard input.
func pyworkersIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return pyworkersEnv(t, nil, stdin, args...)
}

// pyworkersEnv runs pyworkers with env added to the tests' environment.
func pyworkersEnv(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{out.String(), errb.String(), code}
}

// jsonLines checks that every line of out is one JSON object and returns them.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "line %q", l)
		lines = append(lines, m)
	}
	return lines
}

const mapScript = `
import sys, time
def f(x):
    print("printing to stdout", x)
    print("and to stderr", x, file=sys.stderr)
    if x == 3:
        raise ValueError("three")
    if x == 4:
        return {1, 2}
    if x == 5:
        return b"bytes"
    if x == 6:
        return (1, [2.5, None], {"a": True})
    return x * 2
def kw(a, b=0):
    return a - b
def hang(x):
    while True:
        pass
def slow(x):
    time.sleep(0.05)
    return x
`

func TestMapWritesOneJSONLinePerInputInOrder(t *testing.T) {
	p := script(t, mapScript)
	r := pyworkersIn(t, "1\n2\n3\n4\n5\n6\nnot json\n7\n", "map", "-w", "2", p+":f")
	assert.Equal(t, 1, r.code, r.stderr)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 8)
	assert.Equal(t, map[string]any{"ok": 2.0}, lines[0])
	assert.Equal(t, map[string]any{"ok": 4.0}, lines[1])
	e := lines[2]["error"].(map[string]any)
	assert.Equal(t, "ValueError", e["type"])
	assert.Equal(t, "three", e["message"])
	assert.Contains(t, e["traceback"], "Traceback (most recent call last)")
	assert.Contains(t, lines[3]["error"].(map[string]any)["message"], "'set'")
	assert.Contains(t, lines[4]["error"].(map[string]any)["message"], "bytes")
	assert.Equal(t, map[string]any{"ok": []any{1.0, []any{2.5, nil}, map[string]any{"a": true}}}, lines[5])
	assert.Equal(t, "InputError", lines[6]["error"].(map[string]any)["type"])
	assert.Equal(t, map[string]any{"ok": 14.0}, lines[7])
	assert.Contains(t, r.stderr, "printing to stdout 1", "prints go to stderr")
	assert.Contains(t, r.stderr, "8 lines, 4 ok, 4 failed")

	r = pyworkersIn(t, "1\n2\n", "map", p+":f")
	assert.Equal(t, 0, r.code, r.stderr)

	// --star, from a file argument
	in := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(in, []byte("[5, 2]\n{\"a\": 10, \"b\": 3}\n7\n"), 0o644))
	r = pyworkers(t, "map", "--star", p+":kw", in)
	assert.Equal(t, 1, r.code)
	lines = jsonLines(t, r.stdout)
	require.Len(t, lines, 3)
	assert.Equal(t, map[string]any{"ok": 3.0}, lines[0])
	assert.Equal(t, map[string]any{"ok": 7.0}, lines[1])
	assert.Equal(t, "InputError", lines[2]["error"].(map[string]any)["type"])

	// a module target, big integers kept exact
	r = pyworkersIn(t, "123456789012345678901234567890\n", "map", "json:dumps")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "{\"ok\":\"123456789012345678901234567890\"}\n", r.stdout)
}

func TestMapTimeoutStopsAHungCall(t *testing.T) {
	p := script(t, mapScript)
	r := pyworkersIn(t, "1\n", "map", "--timeout", "200ms", p+":hang")
	assert.Equal(t, 1, r.code)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 1)
	assert.Equal(t, "TimeoutError", lines[0]["error"].(map[string]any)["type"])
}

// A call that goes on past its interrupt and ends only after the deadline is no result within
// --timeout: one that catches KeyboardInterrupt, and one in a blocking C call
// (a socket's recv) that returns before the interrupt is raised. And the line after one that
// does not stop runs on a fresh worker once the pool has given the old one up
// (mapInterruptGrace), not when the call ends.
func TestMapTimeoutWhenTheCallGoesOnPastItsInterrupt(t *testing.T) {
	p := script(t, `
import socket, sys, time
def deaf(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.02)
        except KeyboardInterrupt:
            pass
    return time.monotonic()
def in_recv(x):
    a, b = socket.socketpair()
    a.settimeout(1)
    try:
        a.recv(1)
    except TimeoutError:
        pass
    return x
def deaf_or_now(x):
    if x == 0:
        return time.monotonic()
    print("deaf ended at", deaf(x), file=sys.stderr)
def fails_in_cleanup(x):
    try:
        time.sleep(x)
    except KeyboardInterrupt:
        raise ValueError("cleanup failed")
`)
	for _, target := range []string{"deaf", "in_recv"} {
		r := pyworkersIn(t, "0.8\n", "map", "-w", "1", "--timeout", "200ms", p+":"+target)
		assert.Equal(t, 1, r.code, "%s: %s", target, r.stderr)
		lines := jsonLines(t, r.stdout)
		require.Len(t, lines, 1, target)
		e, _ := lines[0]["error"].(map[string]any)
		require.NotNil(t, e, "%s: %v", target, lines[0])
		assert.Equal(t, "TimeoutError", e["type"], target)
		assert.Equal(t, "no result within 200ms (the call ended only after that)", e["message"], target)
	}
	// one that ends with an error of its own after the deadline timed out all the same (it was
	// reported as that error): TimeoutError, with that error's traceback
	r := pyworkersIn(t, "3\n", "map", "-w", "1", "--timeout", "200ms", p+":fails_in_cleanup")
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 1, r.stderr)
	e := lines[0]["error"].(map[string]any)
	assert.Equal(t, "TimeoutError", e["type"])
	assert.Equal(t, "no result within 200ms (the call ended only after that, with ValueError: cleanup failed)", e["message"])
	assert.Contains(t, e["traceback"], "raise ValueError(\"cleanup failed\")")
	// -w 1: the second line runs on the replacement while the first call still runs (both
	// read the same monotonic clock)
	r = pyworkersIn(t, "4\n0\n", "map", "-w", "1", "--timeout", "200ms", p+":deaf_or_now")
	lines = jsonLines(t, r.stdout)
	require.Len(t, lines, 2, r.stderr)
	assert.Equal(t, "TimeoutError", lines[0]["error"].(map[string]any)["type"])
	began, ok := lines[1]["ok"].(float64)
	require.True(t, ok, "%v", lines[1])
	var ended float64
	i := strings.Index(r.stderr, "deaf ended at")
	require.GreaterOrEqual(t, i, 0, r.stderr)
	_, err := fmt.Sscanf(r.stderr[i:], "deaf ended at %g", &ended)
	require.NoError(t, err, r.stderr)
	assert.Less(t, began, ended, "the second line waited for the first call's end")
}

func TestMapUsageErrorsBeforeAnyWork(t *testing.T) {
	p := script(t, mapScript)
	bad := script(t, "def f(x:\n    return x\n")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"map"}, "TARGET"},
		{[]string{"map", "nocolon"}, "must look like"},
		{[]string{"map", "/no/such/file.py:f"}, "no such file"},
		{[]string{"map", dirNamed(t, "pkg.py") + ":f"}, "is a directory"},
		{[]string{"map", "--setup", "raise ValueError('no model')", p + ":f"}, "no model"},
		{[]string{"map", p + ":no_such_function"}, "AttributeError"},
		{[]string{"map", "json:dumpz"}, "AttributeError: module 'json' has no attribute 'dumpz'. Did you mean: 'dump"},
		{[]string{"map", "no_such_module_anywhere:f"}, "ModuleNotFoundError"},
		{[]string{"map", bad + ":f"}, "SyntaxError"},
		{[]string{"map", p + ":f", "/no/such/input.jsonl"}, "cannot read INPUT"},
		{[]string{"map", "--bogus", p + ":f"}, "unknown flag"},
		{[]string{"map", "--progress", "sometimes", p + ":f"}, "--progress"},
		{[]string{"map", "--timeout", "-5s", p + ":f"}, "--timeout"},
		{[]string{"map", "--max-line-mib", "0", p + ":f"}, "--max-line-mib"},
		{[]string{"map", "-w", "100000", p + ":f"}, "at most"},
		{[]string{"map", p + ":f", t.TempDir()}, "is a directory"},
	} {
		r := pyworkersIn(t, "1\n", c.args...)
		assert.Equal(t, 2, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.says, "%v", c.args)
		assert.Empty(t, r.stdout, "%v", c.args)
		assert.Equal(t, 1, strings.Count(r.stderr, "pyworkers map:"), "said once: %s", r.stderr)
		if strings.HasPrefix(c.says, "AttributeError") { // a traceback of no frames: its line alone, not again
			assert.Equal(t, 1, strings.Count(r.stderr, "AttributeError"), "said once: %s", r.stderr)
		}
	}
}

// dirNamed makes a directory named name (a name that looks like a file's) in a new temporary one.
func dirNamed(t *testing.T, name string) string {
	d := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.Mkdir(d, 0o755))
	return d
}

// A line longer than --max-line-mib is read to its end and dropped, with an error line of its
// own, so that input without line ends cannot take all memory; the lines after it run.
func TestMapRefusesALineTooLong(t *testing.T) {
	in := "1\n\"" + strings.Repeat("a", 3<<19) + "\"\n2\n" + strings.Repeat("b", 2<<20) // the last with no line end
	r := pyworkersIn(t, in, "map", "--max-line-mib", "1", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 4)
	assert.Equal(t, "1", lines[0]["ok"])
	assert.Equal(t, "2", lines[2]["ok"])
	for _, k := range []int{1, 3} {
		e := lines[k]["error"].(map[string]any)
		assert.Equal(t, "InputError", e["type"])
		assert.Equal(t, fmt.Sprintf("line %d: longer than 1 MiB (--max-line-mib), skipped", k+1), e["message"])
	}
}

// A byte order mark before the first line (Notepad, PowerShell) is not taken for its JSON.
func TestMapSkipsAByteOrderMark(t *testing.T) {
	r := pyworkersIn(t, "\ufeff[1]\n\ufeff2\n", "map", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 2)
	assert.Equal(t, "[1]", lines[0]["ok"])
	assert.Contains(t, lines[1]["error"].(map[string]any)["message"], "line 2", "only the input's first line may start with one")

	// UTF-16 (PowerShell's >) is refused as a whole, not split into more lines of junk than it has
	for _, bom := range []string{"\xff\xfe1\x00\r\x00\n\x002\x00\r\x00\n\x00", "\xfe\xff\x001\x00\r\x00\n\x002\x00\r\x00\n"} {
		r = pyworkersIn(t, bom, "map", "json:dumps")
		assert.Equal(t, 1, r.code, r.stderr)
		assert.Empty(t, r.stdout)
		assert.Contains(t, r.stderr, "the input is UTF-16")
	}
}

// Input that is not what it seems is an error line of its own, never a silent substitute.
func TestMapInputErrors(t *testing.T) {
	r := pyworkersIn(t, "1\n\n\"caf\xe9\"\n1e999\n2\n[1,2]]\nNaN\n"+strings.Repeat("[", 100000)+"\n3\n\"a\tb\"\n", "map", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 10)
	assert.Equal(t, "1", lines[0]["ok"])
	for k, says := range map[int]string{1: "empty line", 2: "UTF-8", 3: "out of range", 5: "Extra data",
		6: "NaN is not a JSON value", 7: "nested too deeply", 9: "Invalid control character at column 3"} {
		e, ok := lines[k]["error"].(map[string]any)
		require.True(t, ok, "line %d: %v", k, lines[k])
		assert.Equal(t, "InputError", e["type"], "line %d", k)
		assert.Contains(t, e["message"], fmt.Sprintf("line %d: ", k+1))
		assert.Contains(t, e["message"], says, "line %d", k)
	}
	assert.Equal(t, "2", lines[4]["ok"])
	assert.Equal(t, "3", lines[8]["ok"])

	// a NUL byte is named (JSON has none, not even in a string)
	r = pyworkersIn(t, "\"a\x00b\"\n", "map", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines = jsonLines(t, r.stdout)
	require.Len(t, lines, 1)
	assert.Equal(t, "line 1: not JSON: a NUL byte at byte 3", lines[0]["error"].(map[string]any)["message"])

	// blanks at the very end, with no newline after them, are a line too
	r = pyworkersIn(t, "1\n \t", "map", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines = jsonLines(t, r.stdout)
	require.Len(t, lines, 2)
	assert.Contains(t, lines[1]["error"].(map[string]any)["message"], "line 2: an empty line")

	// a no-break space is no JSON white space: not JSON, but no empty line either
	r = pyworkersIn(t, "\u00a0\n", "map", "json:dumps")
	assert.Equal(t, 1, r.code, r.stderr)
	lines = jsonLines(t, r.stdout)
	require.Len(t, lines, 1)
	e := lines[0]["error"].(map[string]any)
	assert.Equal(t, "InputError", e["type"])
	assert.NotContains(t, e["message"], "empty line")
}

// A line means in Python what it means to Python's json module, both ways: an object keeps its
// key order (into the function, and out of it), 2.0 stays a float, a lone surrogate escape
// stays one, and a result's own key order is kept.
func TestMapIsPythonsJSON(t *testing.T) {
	p := script(t, `
def keys(d):
    return list(d)
def back(x):
    return x
def build(n):
    return {"z": n, "a": [n / 2, n // 2], "m": None}
`)
	var in strings.Builder
	for range 50 {
		in.WriteString(`{"b": 1, "a": 2, "c": 3}` + "\n")
	}
	r := pyworkersIn(t, in.String(), "map", "-w", "2", p+":keys")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, strings.Repeat(`{"ok":["b","a","c"]}`+"\n", 50), r.stdout, "the order of the line's keys")

	r = pyworkersIn(t, "2.0\n\"\\ud800x\"\n{\"y\": 1, \"x\": [1.5e300, -0.0]}\n", "map", p+":back")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"ok":2.0}`+"\n"+`{"ok":"\ud800x"}`+"\n"+`{"ok":{"y":1,"x":[1.5e+300,-0.0]}}`+"\n", r.stdout)

	r = pyworkersIn(t, "7\n", "map", p+":build")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"ok":{"z":7,"a":[3.5,3],"m":null}}`+"\n", r.stdout, "the result's key order")
}

// A line's --timeout starts when a worker is free for it: lines that wait for a worker do not
// time out meanwhile.
func TestMapTimeoutCountsFromAFreeWorker(t *testing.T) {
	p := script(t, "import time\ndef nap(x):\n    time.sleep(0.4)\n    return x\n")
	// the third line would wait 0.8 s and then run 0.4 s, past 1 s, were its deadline running
	r := pyworkersIn(t, "1\n2\n3\n4\n", "map", "-w", "1", "--timeout", "1s", p+":nap")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	assert.Len(t, jsonLines(t, r.stdout), 4)
}

// startMapOfNumbers starts pyworkers map with args, its input the lines 0 ... n-1.
func startMapOfNumbers(t *testing.T, n int, args ...string) (cmd *exec.Cmd, out, errb *pwtest.SyncBuffer) {
	t.Helper()
	var in strings.Builder
	for k := range n {
		fmt.Fprintf(&in, "%d\n", k)
	}
	cmd = exec.Command(binary, append([]string{"map"}, args...)...)
	cmd.Stdin = strings.NewReader(in.String())
	out, errb = new(pwtest.SyncBuffer), new(pwtest.SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, errb
	require.NoError(t, cmd.Start())
	return cmd, out, errb
}

// Ctrl-C: what finished is written as complete lines, in order, and the exit status is 130.
func TestMapInterruptedWritesCompleteLines(t *testing.T) {
	p := script(t, mapScript)
	cmd, out, errb := startMapOfNumbers(t, 2000, "-w", "2", p+":slow")
	time.Sleep(700 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, errb.String())
	assert.Equal(t, 130, ee.ExitCode(), errb.String())
	assert.True(t, strings.HasSuffix(out.String(), "\n"), "ends with a whole line")
	lines := jsonLines(t, out.String())
	assert.NotEmpty(t, lines)
	assert.Less(t, len(lines), 2000)
	for k, l := range lines {
		assert.Equal(t, float64(k), l["ok"], "line %d in order", k)
	}
	assert.Regexp(t, fmt.Sprintf(`pyworkers map: %d lines, %d ok, 0 failed in [0-9.]+s, interrupted\n`, len(lines), len(lines)), errb.String())
}

func TestDoctor(t *testing.T) {
	r := pyworkers(t, "doctor", "json", "_testsinglephase", "no_such_module_xyz")
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Contains(t, r.stdout, "CPython 3.14.")
	assert.Regexp(t, `json\s+ok`, r.stdout)
	assert.Contains(t, r.stdout, "extension module _testsinglephase does not support own-GIL interpreters")
	assert.Contains(t, r.stdout, "ModuleNotFoundError")

	r = pyworkers(t, "doctor", "--json", "json", "decimal")
	assert.Equal(t, 0, r.code, r.stderr)
	var rep struct {
		Python  struct{ Version, Build string }
		Modules []struct {
			Name string
			OK   bool
		}
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.True(t, strings.HasPrefix(rep.Python.Version, "3.14."))
	require.Len(t, rep.Modules, 2)
	assert.True(t, rep.Modules[0].OK && rep.Modules[1].OK)

	// what a module prints on import goes to stderr: stdout stays the JSON report
	r = pyworkers(t, "doctor", "--json", "this")
	assert.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	assert.Contains(t, r.stderr, "Beautiful is better than ugly.")

	r = pyworkers(t, "doctor", "not a module")
	assert.Equal(t, 2, r.code)

	// no module asked: an empty list, which a consumer can loop over, not null
	r = pyworkers(t, "doctor", "--json")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"modules": []`)

	// nor does what a module writes to file descriptor 1 natively
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "noisy.py"), []byte("import os\nos.system('echo from-a-shell')\nos.write(1, b'fd-1\\n')\n"), 0o644))
	cmd := exec.Command(binary, "doctor", "--json", "noisy")
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	require.NoError(t, cmd.Run(), e.String())
	require.NoError(t, json.Unmarshal(o.Bytes(), &rep), o.String())
	assert.Contains(t, e.String(), "from-a-shell\nfd-1\n")

	// the report's text as it is, not HTML-escaped (<module> in a traceback)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "angry.py"), []byte("raise ValueError('a <b> & c')\n"), 0o644))
	cmd = exec.Command(binary, "doctor", "--json", "angry")
	cmd.Dir = dir
	o.Reset()
	cmd.Stdout = &o
	require.Error(t, cmd.Run())
	assert.Contains(t, o.String(), "a <b> & c")
}

// Ctrl-C during doctor's check of a module writes the report so far, that module interrupted:
// also when its import is blocked where no interrupt reaches (a read of a pipe no one writes).
func TestDoctorInterrupted(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "slow.py"), []byte("import sys, time\nprint('importing', file=sys.stderr, flush=True)\ntime.sleep(60)\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stuck.py"), []byte("import os, sys\nr, w = os.pipe()\nprint('importing', file=sys.stderr, flush=True)\nos.read(r, 1)\n"), 0o644))
	for _, m := range []string{"slow", "stuck"} {
		cmd := exec.Command(binary, "doctor", "--json", "json", m, "decimal")
		cmd.Dir = dir
		out, errb, code := interruptOnceSaid(t, cmd, "importing")
		assert.Equal(t, 130, code, errb.String())
		var rep struct {
			Modules []struct {
				Name  string
				OK    bool
				Error *struct{ Type string }
			}
		}
		require.NoError(t, json.Unmarshal([]byte(out.String()), &rep), "%s: %s", m, out.String())
		require.Len(t, rep.Modules, 2, "json, then %s: decimal was not checked", m)
		assert.True(t, rep.Modules[0].OK)
		assert.Equal(t, m, rep.Modules[1].Name)
		require.NotNil(t, rep.Modules[1].Error)
		assert.Equal(t, "KeyboardInterrupt", rep.Modules[1].Error.Type)
	}
}

// doctor --json whose reader has gone (| true) ends quietly with the status a shell gives a
// process ended by SIGPIPE, as map does, not with an error about the pipe.
func TestDoctorJSONNoOneReads(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, r.Close())
	cmd := exec.Command(binary, "doctor", "--json", "json")
	cmd.Stdout = w
	var e bytes.Buffer
	cmd.Stderr = &e
	require.NoError(t, cmd.Start())
	w.Close()
	assert.Equal(t, 141, exitCodeWithin(t, cmd, 30*time.Second, "doctor did not end"), e.String())
	assert.NotContains(t, e.String(), "broken pipe")
}

func TestHelpForEveryCommand(t *testing.T) {
	for _, c := range []string{"run", "map", "bench", "doctor", "version"} {
		r := pyworkers(t, c, "--help")
		assert.Equal(t, 0, r.code, c)
		assert.Contains(t, r.stdout, "Usage: pyworkers "+c, c)
	}
	r := pyworkers(t, "help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "pyworkers map")
	r = pyworkers(t, "help", "map") // as git and go have it
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "Usage: pyworkers map")
	r = pyworkers(t, "help", "mapp")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `no help for "mapp"`)
}

func TestBenchQuickJSON(t *testing.T) {
	if pydebugTag != nil {
		t.Skip("under Py_DEBUG every workload runs several times slower; the race lane runs this")
	}
	r := pyworkers(t, "bench", "--quick", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep struct {
		Workers   int
		Pyworkers map[string]float64
		Peers     map[string]map[string]float64
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	for _, k := range []string{"roundtrip_p50_us", "tasks_per_s", "tasks_per_s_each", "cpu_1ms_tasks_per_s", "speedup", "payload_1mb_ms", "ms_to_first_result"} {
		assert.Positive(t, rep.Pyworkers[k], k)
	}
	assert.Len(t, rep.Peers, 5)
	assert.Positive(t, rep.Peers["separate processes"]["speedup"])
	busy := rep.Pyworkers["speedup_workers_busy"] // a share of the time: sane, not a speed target
	assert.Greater(t, busy, 0.3)
	assert.LessOrEqual(t, busy, 1.01)
	assert.Positive(t, rep.Pyworkers["speedup_call_time_ratio"])
	if runtime.GOMAXPROCS(0) >= rep.Workers { // the child has the same CPUs
		assert.Positive(t, rep.Pyworkers["native_speedup"])
	}
	assert.Positive(t, rep.Pyworkers["python_call_ms"])
	assert.Positive(t, rep.Peers["one interpreter"]["python_call_ms"])
	for _, peer := range []string{"ThreadPoolExecutor", "ProcessPoolExecutor", "InterpreterPoolExecutor"} {
		for _, k := range []string{"tasks_per_s", "tasks_per_s_each", "mib_per_idle_worker"} {
			_, ok := rep.Peers[peer][k]
			assert.True(t, ok, "%s: %s", peer, k)
		}
		assert.Positive(t, rep.Peers[peer]["tasks_per_s_each"], peer)
	}
}

// Ctrl-C from a terminal reaches the whole process group: while bench measures CPython's pools,
// its python child fails too, and bench exits 130 as interrupted, not 1 with that failure.
// Ctrl-C while pyworkers itself is measured: bench says at once that it stops after this part,
// then does (exit 130).
func TestBenchInterruptedWhileMeasuringPyworkers(t *testing.T) {
	cmd := exec.Command(binary, "bench", "--quick")
	var errb pwtest.SyncBuffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "measuring pyworkers") },
		time.Minute, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "stopping when this measurement ends") },
		10*time.Second, 10*time.Millisecond, "no word of the interrupt: %s", errb.String())
	assert.Equal(t, 130, exitCodeWithin(t, cmd, 3*time.Minute, "bench did not stop on Ctrl-C"))
}

func TestBenchInterruptedWhileMeasuringPeers(t *testing.T) {
	if pydebugTag != nil {
		t.Skip("under Py_DEBUG every workload runs several times slower; the race lane runs this")
	}
	cmd := exec.Command(binary, "bench", "--quick")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	peers := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		seen := false
		for sc.Scan() {
			if !seen && strings.Contains(sc.Text(), "measuring CPython's pools") {
				seen = true
				close(peers)
			}
		}
	}()
	select {
	case <-peers:
	case <-time.After(3 * time.Minute):
		t.Fatal("bench never reached CPython's pools")
	}
	time.Sleep(300 * time.Millisecond) // the python child is running
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))
	assert.Equal(t, 130, exitCodeWithin(t, cmd, 30*time.Second, "bench did not stop on Ctrl-C"))
}

// exitCodeWithin waits for cmd's exit, killing it and failing the test after timeout.
func exitCodeWithin(t *testing.T, cmd *exec.Cmd, timeout time.Duration, why string) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatal(why)
	}
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	return ee.ExitCode()
}

// Ctrl-C while the input is idle (a terminal, `tail -f`): map stops at once, it does not wait
// for more input.
func TestMapInterruptedWhileInputIsIdle(t *testing.T) {
	p := script(t, mapScript)
	for _, c := range []struct {
		sig  os.Signal
		code int // as shells report a signal: 128 + its number
	}{{os.Interrupt, 130}, {syscall.SIGTERM, 143}} {
		cmd := exec.Command(binary, "map", p+":f")
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		var out, errb pwtest.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Start())
		defer stdin.Close()
		_, err = stdin.Write([]byte("1\n2\n"))
		require.NoError(t, err)
		// the two lines are written as they finish, then map waits for more input
		require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") == 2 }, time.Minute, 10*time.Millisecond)
		require.NoError(t, cmd.Process.Signal(c.sig))
		code := exitCodeWithin(t, cmd, 10*time.Second, "map did not stop on a signal while its input was idle")
		assert.Equal(t, c.code, code, "%v: %s", c.sig, errb.String())
		assert.Equal(t, "{\"ok\":2}\n{\"ok\":4}\n", out.String(), "%v", c.sig)
	}
}

// map's json is the stdlib's, whatever json.py sits in the folder map runs in; numbers have
// no digit limit in JSON, nor here.
func TestMapJSONIsTheStdlibsWithoutLimits(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "json.py"), []byte("raise RuntimeError('the wrong json')\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t.py"), []byte("def f(x):\n    return x\ndef big(x):\n    return 10**5000 + x\n"), 0o644))
	digits := strings.Repeat("7", 5000)
	for _, c := range []struct{ target, in, out string }{
		{"t.py:f", `{"a": [1, 2.5]}`, `{"ok":{"a":[1,2.5]}}`},
		{"t.py:f", digits, `{"ok":` + digits + `}`},
		{"t.py:big", "1", `{"ok":1` + strings.Repeat("0", 4999) + `1}`},
	} {
		cmd := exec.Command(binary, "map", c.target)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(c.in + "\n")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Run(), errb.String())
		assert.Equal(t, c.out+"\n", out.String(), "%s", c.target)
	}
}

// With --timeout, calls blocked where no interrupt reaches (an open of a FIFO no one writes)
// are left behind, each keeping its interpreter: with as many left as there are workers, the
// next line waits for one of them to end, rather than time out in the queue with no worker.
func TestMapTimeoutWaitsForAWorkerWhenCallsAreLeftBehind(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	p := script(t, fmt.Sprintf("def f(x):\n    if x == 3:\n        return 'ran'\n    with open(%q, 'rb') as f:\n        return f.read(1)\n", fifo))
	cmd := exec.Command(binary, "map", "-w", "1", "--timeout", "300ms", p+":f")
	cmd.Stdin = strings.NewReader("1\n2\n3\n")
	var out, errb pwtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	// lines 1 and 2 given up at 2.3 s and ~4.7 s; the slot then waits for one of them
	time.Sleep(6 * time.Second)
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // the blocked opens return: their calls end
	require.NoError(t, err)
	require.NoError(t, w.Close())
	assert.Equal(t, 1, exitCodeWithin(t, cmd, time.Minute, "map did not end"), errb.String())
	lines := jsonLines(t, out.String())
	require.Len(t, lines, 3, errb.String())
	for k := range 2 {
		assert.Equal(t, "TimeoutError", lines[k]["error"].(map[string]any)["type"], "line %d", k+1)
	}
	assert.Equal(t, "ran", lines[2]["ok"], "line 3 ran once a worker was free for it: %v\n%s", lines, errb.String())
}

// interruptOnceSaid starts cmd, sends it SIGINT once its stderr says says, and returns its
// output and exit code.
func interruptOnceSaid(t *testing.T, cmd *exec.Cmd, says string) (out, errb *pwtest.SyncBuffer, code int) {
	out, errb = new(pwtest.SyncBuffer), new(pwtest.SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, errb
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), says) }, time.Minute, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	return out, errb, exitCodeWithin(t, cmd, time.Minute, "it did not exit after Ctrl-C")
}

// Ctrl-C with a call blocked where no interrupt reaches (a read of a pipe no one writes): map
// writes its summary (the line, interrupted, is not written) before the last resort ends it.
func TestMapInterruptedWithACallThatDoesNotStop(t *testing.T) {
	p := script(t, "import os, sys\ndef f(x):\n    r, w = os.pipe()\n    print('blocked', file=sys.stderr, flush=True)\n    os.read(r, 1)\n")
	cmd := exec.Command(binary, "map", "-w", "1", p+":f")
	cmd.Stdin = strings.NewReader("1\n")
	out, errb, code := interruptOnceSaid(t, cmd, "blocked")
	assert.Equal(t, 130, code, errb.String())
	assert.Empty(t, out.String())
	assert.Regexp(t, `pyworkers map: 0 lines, 0 ok, 0 failed in [0-9.]+s, interrupted\n`, errb.String())
	assert.Contains(t, errb.String(), "exiting without waiting")
}

// Ctrl-C keeps the lines that finished in the batch of a line still running: every line
// before the slow one is written.
func TestMapInterruptedKeepsTheFinishedLinesOfABatch(t *testing.T) {
	p := script(t, "import sys, time\ndef f(x):\n    if x == 1500:\n        print('slow line', file=sys.stderr, flush=True)\n        time.sleep(100)\n    return x\n")
	cmd, out, errb := startMapOfNumbers(t, 2000, "-w", "1", p+":f")
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "slow line") }, time.Minute, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	assert.Equal(t, 130, exitCodeWithin(t, cmd, 10*time.Second, "map did not stop on Ctrl-C"), errb.String())
	lines := jsonLines(t, out.String())
	require.Equal(t, 1500, len(lines), "the lines before the slow one")
	for k, l := range lines {
		require.Equal(t, float64(k), l["ok"], "line %d", k)
	}
}

// Ctrl-C reaches Python that runs before any line: --setup, and a call that never returns.
func TestMapInterruptReachesSetupAndHungCalls(t *testing.T) {
	p := script(t, mapScript)
	for _, args := range [][]string{
		{"map", "--setup", "import sys, time\nprint('setting up', file=sys.stderr)\ntime.sleep(60)", "json:dumps"},
		{"map", "--setup", "import sys\nprint('setting up', file=sys.stderr)\nwhile True: pass", "json:dumps"},
		{"map", "-w", "2", p + ":hang"},
	} {
		cmd := exec.Command(binary, args...)
		cmd.Stdin = strings.NewReader("1\n2\n")
		var out, errb pwtest.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Start())
		if strings.HasSuffix(args[len(args)-1], ":hang") {
			time.Sleep(time.Second) // the calls run
		} else {
			require.Eventually(t, func() bool { return strings.Contains(errb.String(), "setting up") }, time.Minute, 10*time.Millisecond)
		}
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		code := exitCodeWithin(t, cmd, 10*time.Second, fmt.Sprintf("%q did not stop on Ctrl-C", args))
		assert.Equal(t, 130, code, "%q: %s", args, errb.String())
		assert.Empty(t, out.String(), "%q", args)
	}
}

// Code that never stops (a C call no interrupt reaches) does not keep map or run for good: at
// --timeout its map line is a TimeoutError once the pool has given its worker up, the other
// lines go on, and the process exits without waiting for that worker (which CPython's
// finalization would do for good); run reports the worker as not stopped; map exits when its
// reader has gone, and both after a signal. Each waited for that call for good.
func TestCodeThatNeverStopsIsGivenUp(t *testing.T) {
	p := script(t, `
import socket, pyworkers
def forever(x):
    if x == 0:
        a, b = socket.socketpair()
        a.recv(1)
    return x
if __name__ == "__main__" and pyworkers.worker_id() == 0:
    forever(0)
`)
	start := func(stdin string, args ...string) (*exec.Cmd, *pwtest.SyncBuffer, *pwtest.SyncBuffer) {
		cmd := exec.Command(binary, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, errb := new(pwtest.SyncBuffer), new(pwtest.SyncBuffer)
		cmd.Stdout, cmd.Stderr = out, errb
		require.NoError(t, cmd.Start())
		return cmd, out, errb
	}
	cmd, out, errb := start("0\n1\n2\n", "map", "-w", "2", "--timeout", "500ms", p+":forever")
	assert.Equal(t, 1, exitCodeWithin(t, cmd, time.Minute, "map --timeout waited for a call that never returns"), errb.String())
	lines := jsonLines(t, out.String())
	require.Len(t, lines, 3, errb.String())
	assert.Equal(t, "no result within 500ms (the call did not stop at its interrupt: its worker was given up)", lines[0]["error"].(map[string]any)["message"])
	assert.Equal(t, []map[string]any{{"ok": 1.0}, {"ok": 2.0}}, lines[1:])
	assert.Contains(t, errb.String(), "exiting without waiting for it")

	cmd, _, errb = start("", "run", "-w", "2", "--timeout", "500ms", p)
	assert.Equal(t, 1, exitCodeWithin(t, cmd, time.Minute, "run --timeout waited for a script that never returns"), errb.String())
	assert.Contains(t, errb.String(), "worker 0 did not stop at --timeout 500ms")
	assert.Contains(t, errb.String(), "1 of 2 workers succeeded")

	cmd, stdin, stdout, errb := startMapPiped(t, "-w", "2", p+":forever")
	_, err := io.WriteString(stdin, "1\n0\n")
	require.NoError(t, err)
	require.NoError(t, stdin.Close())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "{\"ok\":1}\n", line)
	require.NoError(t, stdout.Close())
	assert.Equal(t, 141, exitCodeWithin(t, cmd, time.Minute, "map waited for a call that never returns after its reader went"), errb.String())

	for _, args := range [][]string{{"map", "-w", "2", p + ":forever"}, {"run", "-w", "2", p}} {
		cmd, _, errb = start("0\n1\n", args...)
		time.Sleep(time.Second) // the call runs
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, 143, exitCodeWithin(t, cmd, time.Minute, fmt.Sprintf("%q waited after SIGTERM for a call that never returns", args)), errb.String())
		assert.Contains(t, errb.String(), "exiting without waiting for", "%q", args)
	}
}

// map gives up only on a call that did not stop: lines whose call raised SystemExit with
// --timeout are SystemExit (some were written as timed out, at random), and at the end a
// replaced worker's thread that ends on its own, after more than the give-up time, is waited
// for, as Python's exit does (it was left behind as stuck).
func TestMapGivesUpOnlyOnCallsThatDidNotStop(t *testing.T) {
	p := script(t, `
import socket, sys, threading
def exits(x):
    sys.exit(3)
def slow_thread_then_exit(x):
    def wait():
        a, b = socket.socketpair()
        a.settimeout(6)  # a C call: no interrupt stops it; it ends on its own
        try:
            a.recv(1)
        except TimeoutError:
            pass
        print("thread ended", file=sys.stderr)
    threading.Thread(target=wait).start()
    sys.exit(0)
`)
	r := pyworkersIn(t, strings.Repeat("1\n", 30), "map", "-w", "2", "--timeout", "5s", p+":exits")
	assert.Equal(t, 1, r.code, r.stderr)
	lines := jsonLines(t, r.stdout)
	require.Len(t, lines, 30, r.stderr)
	for k, l := range lines {
		assert.Equal(t, "SystemExit", l["error"].(map[string]any)["type"], "line %d", k+1)
	}

	r = pyworkersIn(t, "0\n", "map", "-w", "1", p+":slow_thread_then_exit")
	assert.Contains(t, r.stderr, "thread ended")
	assert.NotContains(t, r.stderr, "exiting without waiting")
}

// A signal ends map while it waits to open its INPUT (a FIFO no one writes to yet): the wait
// went on for good.
func TestMapInterruptedWhileOpeningItsInput(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "input")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	cmd := exec.Command(binary, "map", "json:dumps", fifo)
	var errb pwtest.SyncBuffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	time.Sleep(500 * time.Millisecond) // in its open
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 143, exitCodeWithin(t, cmd, time.Minute, "map waited to open its input after SIGTERM"), errb.String())
	assert.Empty(t, errb.String(), "nothing was left running")
}

// After a signal, map exits also while its results' reader has stopped reading (a pager left
// open): its write of a batch blocked, and the exit waited for that write for good.
func TestMapExitsAfterASignalWhenNoOneReadsItsResults(t *testing.T) {
	cmd, stdin, stdout, errb := startMapPiped(t, "-w", "2", "json:dumps")
	defer stdout.Close()
	line := `"` + strings.Repeat("a", 16<<10) + `"` + "\n"
	go func() { // map reads no more once its results wait: this write waits too
		io.WriteString(stdin, strings.Repeat(line, 100)) // 1.6 MB of results: the pipe holds 64 KiB
		stdin.Close()
	}()
	time.Sleep(time.Second) // map blocks in its write
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 143, exitCodeWithin(t, cmd, time.Minute, "map waited for its reader after SIGTERM"), errb.String())
	assert.Contains(t, errb.String(), "exiting without waiting for the results' reader")
}

// run reports a worker's failure when it happens: Ctrl-C afterwards does not hide it.
func TestRunReportsFailuresAsTheyHappen(t *testing.T) {
	p := script(t, "import pyworkers, time\nif pyworkers.worker_id() == 1:\n    raise ValueError('boom')\ntime.sleep(60)\n")
	cmd := exec.Command(binary, "run", "-w", "2", p)
	var out, errb pwtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "ValueError: boom") }, 20*time.Second, 10*time.Millisecond,
		"worker 1's failure is reported while worker 0 still runs (it sleeps 60 s)")
	assert.Contains(t, errb.String(), "worker 1 failed")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	code := exitCodeWithin(t, cmd, 10*time.Second, "run did not stop on Ctrl-C")
	assert.Equal(t, 130, code, errb.String())
	assert.Contains(t, errb.String(), "(1 failed before)")
	assert.NotContains(t, errb.String(), "worker 0 failed", "interrupted by Ctrl-C, not failing")
}

// A virtual environment's packages import in the workers when it is active (VIRTUAL_ENV) or
// named with --python, in map, run and doctor; one of another Python version is refused.
func TestPythonEnvironment(t *testing.T) {
	r := pyworkers(t, "doctor", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep struct {
		Python struct{ Build, Prefix string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	python := filepath.Join(rep.Python.Prefix, "bin", bench.PythonName(cpython.Info{Debug: rep.Python.Build == "debug"}))
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no python of the linked CPython to make a virtual environment with: %v", err)
	}
	venv, site := pwtest.Venv(t, python)
	require.NoError(t, os.WriteFile(filepath.Join(site, "in_venv.py"), []byte("def twice(x):\n    return 2 * x\n"), 0o644))

	active := []string{"VIRTUAL_ENV=" + venv}
	r = pyworkersEnv(t, active, "21\n", "map", "in_venv:twice")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"ok":42}`+"\n", r.stdout)
	r = pyworkersEnv(t, nil, "21\n", "map", "--python", filepath.Join(venv, "bin", "python"), "in_venv:twice")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"ok":42}`+"\n", r.stdout)
	r = pyworkersEnv(t, nil, "21\n", "map", "in_venv:twice")
	assert.Equal(t, 2, r.code, "no environment: the module is not there")
	assert.Contains(t, r.stderr, "No module named 'in_venv'")

	p := script(t, "import in_venv, sys\nprint(in_venv.twice(2), sys.prefix == sys.exec_prefix, sys.executable)\n")
	r = pyworkersEnv(t, active, "", "run", "-w", "2", "--no-prefix", p)
	assert.Equal(t, 0, r.code, r.stderr)
	want := fmt.Sprintf("4 True %s\n", filepath.Join(venv, "bin", "python"))
	assert.Equal(t, want+want, r.stdout)

	r = pyworkersEnv(t, active, "", "doctor", "in_venv")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "prefix "+venv)
	assert.Regexp(t, `in_venv\s+ok`, r.stdout)

	old := pwtest.FakeVenv(t, "home = /usr/bin\nversion = 3.12.3\n", python)
	// an active environment of another Python is left out, with a warning; --python's is refused
	r = pyworkersEnv(t, []string{"VIRTUAL_ENV=" + old}, "21\n", "map", "operator:neg")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"ok":-21}`+"\n", r.stdout)
	assert.Contains(t, r.stderr, "pyworkers: not using the active virtual environment "+old+": "+old+
		"/bin/python belongs to a Python 3.12.3 environment ("+old+"/pyvenv.cfg); pyworkers runs CPython 3.14\n")
	r = pyworkersEnv(t, nil, "1\n", "map", "--python", filepath.Join(old, "bin", "python"), "operator:neg")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "pyworkers map: --python "+old+"/bin/python: "+old+"/bin/python belongs to a Python 3.12.3 environment")
	r = pyworkersEnv(t, nil, "", "doctor", "--python", filepath.Join(old, "nothing"))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "pyworkers doctor: --python "+filepath.Join(old, "nothing")+": stat ")
}

// map's standard output holds its JSON lines and nothing else: what the function writes to
// file descriptor 1 past sys.stdout (a child process, os.write) goes to stderr, as prints do.
func TestMapStdoutIsOnlyJSON(t *testing.T) {
	p := script(t, `import os, subprocess
def f(x):
    print("printed", x)
    os.system("echo from-a-shell")
    subprocess.run(["echo", "from-subprocess"])
    os.write(1, b"written-to-fd-1\n")
    return x
`)
	r := pyworkersIn(t, "1\n2\n", "map", "-w", "2", p+":f")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "{\"ok\":1}\n{\"ok\":2}\n", r.stdout)
	for _, s := range []string{"printed ", "from-a-shell", "from-subprocess", "written-to-fd-1"} {
		assert.Equal(t, 2, strings.Count(r.stderr, s), "%q once per line on stderr:\n%s", s, r.stderr)
	}
}

// When the reader of map's results goes away (| head), map stops its calls and exits with the
// status a shell gives a process ended by SIGPIPE, however much input is left.
func TestMapStopsWhenNoOneReads(t *testing.T) {
	p := script(t, mapScript)
	cmd, stdin, stdout, errb := startMapPiped(t, "-w", "2", p+":f")
	go func() { // endless input: map must not wait for its end
		defer stdin.Close()
		for k := 0; ; k++ {
			if _, err := fmt.Fprintf(stdin, "%d\n", k); err != nil {
				return
			}
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "{\"ok\":0}\n", line)
	require.NoError(t, stdout.Close())
	assert.Equal(t, 141, exitCodeWithin(t, cmd, 30*time.Second, "map went on with no one reading its results"), errb.String())
}

// startMapPiped starts pyworkers map with args, its input and results through pipes.
func startMapPiped(t *testing.T, args ...string) (cmd *exec.Cmd, stdin io.WriteCloser, stdout io.ReadCloser, errb *pwtest.SyncBuffer) {
	t.Helper()
	cmd = exec.Command(binary, append([]string{"map"}, args...)...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err = cmd.StdoutPipe()
	require.NoError(t, err)
	errb = new(pwtest.SyncBuffer)
	cmd.Stderr = errb
	require.NoError(t, cmd.Start())
	return cmd, stdin, stdout, errb
}

// What the calls print without a newline at the end does not swallow map's summary line.
func TestMapSummaryOnALineOfItsOwn(t *testing.T) {
	p := script(t, "import sys\ndef f(x):\n    print('partial', end='', file=sys.stderr)\n    return x\n")
	r := pyworkersIn(t, "1\n2\n", "map", "-w", "1", p+":f")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "partialpartial\npyworkers map: 2 lines, 2 ok")
}

// ... also when it has nothing to write for long: a slow call runs, or the input is idle (its
// writer keeps it open). map notices the reader's end itself, not at its next write.
func TestMapStopsWhenNoOneReadsWhileItHasNothingToWrite(t *testing.T) {
	p := script(t, "import time\ndef nap(x):\n    time.sleep(x)\n    return x\n")
	for _, input := range []string{"0\n120\n", "0\n"} {
		cmd, stdin, stdout, errb := startMapPiped(t, "-w", "2", p+":nap")
		_, err := io.WriteString(stdin, input) // and no more, nor its end
		require.NoError(t, err)
		line, err := bufio.NewReader(stdout).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "{\"ok\":0}\n", line)
		require.NoError(t, stdout.Close())
		assert.Equal(t, 141, exitCodeWithin(t, cmd, 30*time.Second, "map waited for a result or input no one would read"), "%q: %s", input, errb.String())
		stdin.Close()
	}
}

// Output that cannot be written (a full disk: /dev/full) fails the command, saying why, and
// map's summary counts only the lines that got out.
func TestOutputThatCannotBeWrittenFails(t *testing.T) {
	p := script(t, "def f(x):\n    return x\nprint('hello')\n")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"map", "-w", "1", p + ":f"}, "pyworkers map: 0 lines, 0 ok"},
		{[]string{"version"}, "no space left on device"},
		{[]string{"doctor", "json"}, "no space left on device"},
		{[]string{"doctor", "--json", "json"}, "no space left on device"},
		{[]string{"run", "-w", "1", p}, "OSError: [Errno 28] pyworkers: the Go writer for this stream failed: "},
	} {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		require.NoError(t, err)
		cmd := exec.Command(binary, c.args...)
		cmd.Stdin = strings.NewReader("1\n2\n")
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &errb
		err = cmd.Run()
		full.Close()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", c.args, errb.String())
		assert.Equal(t, 1, ee.ExitCode(), "%v: %s", c.args, errb.String())
		assert.Contains(t, errb.String(), "no space left on device", c.args)
		assert.Contains(t, errb.String(), c.says, c.args)
	}
}

// Python's exit waits for the threads a script started; so does a worker's end in run, map and
// doctor, and --timeout and Ctrl-C reach those threads too (one Ctrl-C is enough). map, whose
// summary is out by then, says what it waits for after a second.
func TestTimeoutAndCtrlCReachThreadsTheCodeStarted(t *testing.T) {
	const spin = "import threading, time\n" +
		"def forever():\n    while True:\n        time.sleep(0.05)\n" +
		"threading.Thread(target=forever).start()\n"
	p := script(t, spin+"print('started', flush=True)\n")
	cmd := exec.Command(binary, "run", "-w", "1", "--timeout", "1s", p)
	var out, errb pwtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	assert.Equal(t, 1, exitCodeWithin(t, cmd, time.Minute, "run --timeout did not stop the script's thread"), errb.String())
	assert.Contains(t, errb.String(), "still running at the timeout")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "spins.py"), []byte(spin), 0o644))
	mapFn := filepath.Join(dir, "fn.py")
	require.NoError(t, os.WriteFile(mapFn, []byte("def f(x):\n    import spins\n    return x\n"), 0o644))
	for _, c := range []struct {
		args  []string
		stdin string
		ready func(out, errb string) bool
	}{
		{[]string{"run", "-w", "1", p}, "", func(out, _ string) bool { return strings.Contains(out, "started") }},
		{[]string{"map", "-w", "1", mapFn + ":f"}, "1\n", func(out, errb string) bool {
			return strings.Contains(out, `{"ok":1}`) && strings.Contains(errb, "pyworkers map: 1 lines, 1 ok, 0 failed") &&
				strings.HasSuffix(errb, "pyworkers map: waiting for the workers to end (threads the calls started, atexit functions, finalizers), as Python's exit does (Ctrl-C interrupts them)\n")
		}},
		{[]string{"doctor", "spins"}, "", nil},
	} {
		cmd := exec.Command(binary, c.args...)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(c.stdin)
		var out, errb pwtest.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Start())
		if c.ready != nil {
			require.Eventually(t, func() bool { return c.ready(out.String(), errb.String()) }, time.Minute, 10*time.Millisecond,
				"%q: %s", c.args, errb.String())
		}
		time.Sleep(500 * time.Millisecond) // the work is done: the thread keeps the worker
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		code := exitCodeWithin(t, cmd, 30*time.Second, fmt.Sprintf("%q: one Ctrl-C did not stop the thread", c.args))
		assert.Equal(t, 130, code, "%q: %s", c.args, errb.String())
	}
}

// A finalizer that never returns, of an object a script left in its globals or a map target's
// module holds, runs in the worker's end, which run's --timeout and map's Ctrl-C interrupt
// (CPython's own end of an interpreter would hang).
func TestTimeoutAndCtrlCReachAStuckFinalizer(t *testing.T) {
	const stuck = "class Stuck:\n    def __del__(self):\n        while True:\n            pass\nx = Stuck()\n"
	cmd := exec.Command(binary, "run", "-w", "1", "--timeout", "1s", script(t, stuck))
	var errb pwtest.SyncBuffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	assert.Equal(t, 1, exitCodeWithin(t, cmd, time.Minute, "run --timeout did not stop the finalizer"), errb.String())
	assert.Contains(t, errb.String(), "Exception ignored while calling deallocator <function Stuck.__del__")
	assert.Contains(t, errb.String(), "its objects' finalizers) was still running at the timeout")

	fn := script(t, stuck+"def f(v):\n    return v\n")
	cmd = exec.Command(binary, "map", "-w", "1", fn+":f")
	cmd.Stdin = strings.NewReader("1\n")
	var out, errm pwtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errm
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return strings.Contains(errm.String(), "waiting for the workers to end") },
		time.Minute, 10*time.Millisecond, "%s", errm.String())
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	assert.Equal(t, 130, exitCodeWithin(t, cmd, 30*time.Second, "one Ctrl-C did not stop map's stuck finalizer"), errm.String())
	assert.Equal(t, "{\"ok\":1}\n", out.String())
}

// run puts the script's folder on sys.path as Python does: absolute, so that a script that
// changes directory still imports its neighbours.
func TestRunScriptFolderIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "helper.py"), []byte("WORD = 'beside'\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "job.py"), []byte("import os\nos.chdir('/')\nimport helper\nprint(helper.WORD)\n"), 0o644))
	cmd := exec.Command(binary, "run", "-w", "1", "--no-prefix", "job.py")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "beside\n")
}

// The progress line (--progress, on a terminal by default) is cleared before what workers print
// and before the summary: nothing is written on the end of it.
func TestMapProgressIsNotGluedToOtherOutput(t *testing.T) {
	p := script(t, "import time\ndef f(x):\n    time.sleep(0.02)\n    print('hello', x)\n    return x\n")
	var in strings.Builder
	for k := range 100 {
		fmt.Fprintf(&in, "%d\n", k)
	}
	r := pyworkersIn(t, in.String(), "map", "-w", "1", "--progress", "always", p+":f")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, " lines/s", "progress was shown")
	hellos := 0
	for _, line := range strings.Split(r.stderr, "\n") {
		shown := line[strings.LastIndex(line, "\r")+1:] // what a terminal shows of the line
		shown = strings.TrimPrefix(shown, "\033[K")
		if strings.Contains(line, "hello") {
			hellos++
			assert.Regexp(t, `^hello \d+$`, shown)
		}
		if strings.Contains(line, "pyworkers map:") {
			assert.Regexp(t, `^pyworkers map: 100 lines`, shown)
		}
	}
	assert.Equal(t, 100, hellos)
}

// With the results going to a file and stderr a terminal, writing results does not erase the
// progress line: only what reaches the terminal clears it.
func TestMapProgressStaysWhileResultsGoToAFile(t *testing.T) {
	p := script(t, "import time\ndef f(x):\n    time.sleep(0.03)\n    return x\n")
	master, tty := openPTY(t)
	cmd := exec.Command(binary, "map", "-w", "1", p+":f") // --progress auto: stderr is a terminal
	cmd.Stdin = strings.NewReader(strings.Repeat("1\n", 30))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, tty
	require.NoError(t, cmd.Start())
	tty.Close() // the child has its copy: the master reads EIO once the child is gone
	shown := make(chan string)
	go func() {
		b, _ := io.ReadAll(master)
		shown <- string(b)
	}()
	require.NoError(t, cmd.Wait())
	stderr := <-shown
	require.Contains(t, stderr, " lines/s", "progress was shown")
	assert.Equal(t, 30, strings.Count(out.String(), "\n"))
	// Each redraw clears the line and writes the progress in one go, and the summary follows a
	// clear: a clear just before a redraw would be one that a write of results made.
	assert.NotContains(t, stderr, "\r\033[K\r\033[K")
	assert.Contains(t, stderr, "\r\033[Kpyworkers map: 30 lines")
}

// openPTY opens a pseudo-terminal: its master, and the terminal a child may write to.
func openPTY(t *testing.T) (master, tty *os.File) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { master.Close() })
	unlock := 0
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlocking the pseudo-terminal: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("naming the pseudo-terminal: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	return master, tty
}

// A worker's output that does not end its line (written out at its call's end) is not erased by
// the progress line: the progress waits for the line end.
func TestMapProgressDoesNotEraseAPartialLine(t *testing.T) {
	p := script(t, "import time\ndef f(x):\n    time.sleep(0.25)\n    print('part', x, end=' ')\n    return x\n")
	r := pyworkersIn(t, "0\n1\n2\n3\n", "map", "-w", "1", "--progress", "always", p+":f")
	require.Equal(t, 0, r.code, r.stderr)
	var shown strings.Builder // what a terminal shows
	for _, line := range strings.Split(r.stderr, "\n") {
		shown.WriteString(strings.TrimPrefix(line[strings.LastIndex(line, "\r")+1:], "\033[K") + "\n")
	}
	assert.Contains(t, shown.String(), "part 0 part 1 part 2 part 3 ", r.stderr)
}

// A shell starts a background job with SIGINT ignored: the Ctrl-C meant for the foreground
// does not stop it.
func TestMapInBackgroundIgnoresCtrlC(t *testing.T) {
	p := script(t, mapScript)
	var in strings.Builder
	for k := range 20 {
		fmt.Fprintf(&in, "%d\n", k)
	}
	cmd := exec.Command("sh", "-c", `trap "" INT; exec "$0" "$@"`, binary, "map", "-w", "2", p+":slow")
	cmd.Stdin = strings.NewReader(in.String())
	var out, errb pwtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	assert.Equal(t, 0, exitCodeWithin(t, cmd, time.Minute, "map did not finish"), errb.String())
	assert.Len(t, jsonLines(t, out.String()), 20)
}

// A value whose copy or send runs out of memory raises MemoryError, not the TypeError of a value
// that cannot cross: code that handles running out of memory sees it as such. Under a limit on
// the process's address space (2 GB), which the race detector's shadow memory would exceed.
func TestOutOfMemoryInAConversionIsMemoryError(t *testing.T) {
	if len(raceFlag) > 0 {
		t.Skip("the race detector reserves more address space than the limit this test sets")
	}
	src := script(t, `
import pyworkers
big = b"x" * (64 * 1024 * 1024)
for what, f in [("copy", lambda: pyworkers._copy([big] * 64)),
                ("send", lambda: pyworkers.Channel.create().send([big[:60000]] * 100000)),
                ("send_many", lambda: pyworkers.Channel.create().send_many([[big[:60000]] * 100000]))]:
    try:
        f()
        print(what, "did not fail")
    except MemoryError as e:
        print(what, "MemoryError", e)
`)
	cmd := exec.Command("sh", "-c", `ulimit -v 2000000 && exec "$0" "$@"`, binary, "run", "-w", "1", "--no-prefix", src)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	// where memory runs out depends on how much the limit leaves
	assert.Regexp(t, `(?m)^copy MemoryError cannot copy this value: \[\d+\]: out of memory$`, string(out))
	assert.Regexp(t, `(?m)^send MemoryError cannot send this value: at \[\d+\]: out of memory$`, string(out))
	assert.Regexp(t, `(?m)^send_many MemoryError cannot send item 0: \[\d+\]: out of memory$`, string(out))
}
