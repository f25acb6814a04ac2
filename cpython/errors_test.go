package cpython_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

func TestPythonExceptions(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	call := func(target string, args ...any) error { _, err := i.Call(bg, target, args...); return err }
	cases := []struct {
		name    string
		err     error
		typ     string
		msg     string
		inTrace []string
	}{
		{"plain", call("pwtest:boom", "bad value"), "ValueError", "bad value",
			[]string{"Traceback (most recent call last):", "pwtest.py", "in boom", "raise ValueError(msg)", "ValueError: bad value"}},
		{"qualified type", call("pwtest:custom"), "pwtest.CustomError", "custom failure",
			[]string{"pwtest.CustomError: custom failure"}},
		{"stdlib qualified type", call("json:loads", "{bad"), "json.decoder.JSONDecodeError", "Expecting property name",
			[]string{"json/decoder.py"}},
		{"explicit cause", call("pwtest:chained"), "RuntimeError", "outer failure",
			[]string{"KeyError: 'missing'", "The above exception was the direct cause of the following exception:", "RuntimeError: outer failure"}},
		{"implicit context", call("pwtest:implicit"), "ValueError", "failed while handling",
			[]string{"ZeroDivisionError: division by zero", "During handling of the above exception, another exception occurred:"}},
		{"raised in an imported module", call("pwtest:in_other_module"), "LookupError", "raised inside an imported module",
			[]string{"pwtest_other.py", "in fail_deep", "pwtest.py", "in in_other_module"}},
		{"__str__ raises", call("pwtest:bad_str"), "pwtest.BadStr", "<exception str() failed>",
			[]string{"pwtest.BadStr: <exception str() failed>"}},
		{"__str__ raises SystemExit", call("pwtest:exiting_str"), "pwtest.ExitingStr", "<exception str() failed>",
			[]string{"in exiting_str", "pwtest.ExitingStr: <exception str() failed>"}},
		{"SyntaxError in Exec", i.Exec(bg, "x = 1\ndef broken(:\n    pass\n"), "SyntaxError", "invalid syntax",
			[]string{"line 2", "def broken(:", "^", "SyntaxError: invalid syntax"}},
		{"exception in Exec shows the source line", i.Exec(bg, "a = 1\nb = a / 0\n"), "ZeroDivisionError", "division by zero",
			[]string{"<exec-", "line 2", "b = a / 0"}},
		{"SystemExit is an error, not an exit", call("pwtest:exit_with", 3), "SystemExit", "3",
			[]string{"sys.exit(code)", "SystemExit: 3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pe := pwtest.PyErr(t, c.err)
			assert.Equal(t, c.typ, pe.Type)
			assert.Contains(t, pe.Message, c.msg)
			for _, s := range c.inTrace {
				assert.Contains(t, pe.Traceback, s)
			}
			assert.NotContains(t, pe.Traceback, "pyworkers bootstrap", "our own frames are hidden")
			// %v: one line; %+v: the traceback
			assert.NotContains(t, fmt.Sprintf("%v", c.err), "\n")
			assert.Equal(t, strings.TrimRight(pe.Traceback, "\n"), fmt.Sprintf("%+v", pe))
		})
	}
	// the interpreter survives all of that, SystemExit included
	v, err := i.Eval(bg, "'alive'")
	require.NoError(t, err)
	assert.Equal(t, "alive", v)
}

// TestSystemExitStatus: a SystemExit's error says the status python itself ends with for the
// same code, checked against the linked CPython's own python where one is found; no code of a
// subclass's runs to tell it.
func TestSystemExitStatus(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, `
import sys
class MyExit(SystemExit):
    pass
class LyingExit(SystemExit):
    @property
    def code(self):
        raise ValueError("a property that raises")
class BadInt(int):
    def __and__(self, other):
        raise ValueError("an operator that raises")
`))
	cases := []struct {
		raise  string
		status int
	}{
		{"sys.exit()", 0}, {"sys.exit(None)", 0}, {"sys.exit(0)", 0}, {"sys.exit(False)", 0},
		{"raise SystemExit", 0}, {"sys.exit(3)", 3}, {"sys.exit(True)", 1}, {"sys.exit(-1)", 255},
		{"sys.exit(256)", 0}, {"sys.exit(2**63)", 255}, {"sys.exit(-2**63)", 0}, {"sys.exit('0')", 1},
		{"sys.exit('message')", 1}, {"sys.exit(3.0)", 1}, {"sys.exit([])", 1},
		{"raise MyExit(4)", 4}, {"raise LyingExit(5)", 5}, {"sys.exit(BadInt(6))", 6},
	}
	info, err := cpython.RuntimeInfo()
	require.NoError(t, err)
	python := bench.FindPython(info)
	for _, c := range cases {
		pe := pwtest.PyErr(t, i.Exec(bg, c.raise))
		status, ok := pe.ExitStatus()
		assert.True(t, ok, c.raise)
		assert.Equal(t, c.status, status, c.raise)
		if python == "" {
			continue
		}
		src := "import sys\n" + c.raise
		if strings.Contains(c.raise, "Exit(") || strings.Contains(c.raise, "BadInt") {
			continue // classes of the interpreter's __main__
		}
		cmd := exec.Command(python, "-c", src)
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &ee, c.raise)
		}
		assert.Equal(t, cmd.ProcessState.ExitCode(), status, "%s: python's own status", c.raise)
	}
	if python == "" {
		t.Logf("no %s of the linked CPython: statuses not compared with its own", bench.PythonName(info))
	}
	for _, err := range []error{i.Exec(bg, "raise ValueError(3)"), i.Exec(bg, "raise KeyboardInterrupt")} {
		_, ok := pwtest.PyErr(t, err).ExitStatus()
		assert.False(t, ok, "%v is no SystemExit", err)
	}
	_, ok := (&cpython.PythonError{Type: "SystemExit"}).ExitStatus()
	assert.False(t, ok, "only errors the package made say a status")
	// a batch's item that ends the batch says it too
	require.NoError(t, i.Do(bg, func(th *cpython.Thread) error {
		rs, err := th.CallMany(bg, "pwtest:exit_with", [][]any{{7}, {8}})
		require.Error(t, err)
		require.Len(t, rs, 2)
		status, ok := pwtest.PyErr(t, rs[0].Err).ExitStatus()
		assert.True(t, ok)
		assert.Equal(t, 7, status)
		return nil
	}))
}

func TestPythonErrorFormatting(t *testing.T) {
	pe := &cpython.PythonError{Type: "ValueError", Message: "two\nlines", Traceback: "Traceback...\nValueError: two\nlines\n"}
	assert.Equal(t, "ValueError: two | lines", pe.Error())
	assert.Equal(t, "ValueError: two | lines", fmt.Sprintf("%v", pe))
	assert.Equal(t, "ValueError: two | lines", fmt.Sprintf("%s", pe))
	assert.Equal(t, "Traceback...\nValueError: two\nlines", fmt.Sprintf("%+v", pe))
	assert.Equal(t, "KeyboardInterrupt", (&cpython.PythonError{Type: "KeyboardInterrupt"}).Error())
	wrapped := fmt.Errorf("task 3: %w", pe)
	var got *cpython.PythonError
	require.ErrorAs(t, wrapped, &got)
	assert.Same(t, pe, got)
}

func TestIncompatibleExtensionModuleIsNamed(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	// _testsinglephase is CPython's own single-phase-init test extension: it cannot load in an
	// own-GIL interpreter, just like numpy today.
	err := i.Exec(bg, "import _testsinglephase")
	pe := pwtest.PyErr(t, err)
	require.ErrorIs(t, err, cpython.ErrIncompatibleExtension, "%+v", pe)
	mod, ok := pe.IncompatibleModule()
	assert.True(t, ok)
	assert.Equal(t, "_testsinglephase", mod)
	assert.Contains(t, pe.Error(), "_testsinglephase")
	// an ordinary ImportError is not that
	err = i.Exec(bg, "import no_such_module_at_all")
	assert.False(t, errors.Is(err, cpython.ErrIncompatibleExtension))
}

func TestErrorTextWithLoneSurrogates(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	// e.g. a file name that was not valid UTF-8, decoded with surrogateescape
	err := i.Exec(bg, "raise FileNotFoundError(2, 'No such file', b'caf\\xe9.txt'.decode('utf-8', 'surrogateescape'))")
	pe := pwtest.PyErr(t, err)
	assert.Equal(t, "FileNotFoundError", pe.Type)
	assert.Contains(t, pe.Message, `caf\udce9.txt`)
	assert.Contains(t, pe.Traceback, "FileNotFoundError")
}

func TestLongErrorPathsStayReadable(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	require.NoError(t, i.Exec(bg, "x = {1}\nfor _ in range(100):\n    x = [x]"))
	_, err := i.Eval(bg, "x")
	var ce *cpython.ConversionError
	require.ErrorAs(t, err, &ce)
	assert.True(t, strings.HasPrefix(ce.Path, "...[0]"), "the inner end, which locates the value, is kept: %s", ce.Path)
	assert.True(t, strings.HasSuffix(ce.Path, "[0][0]"), ce.Path)
	assert.NotContains(t, ce.Path, "set", "the path ends where it should, not in the message after it")
	assert.True(t, utf8.ValidString(ce.Path+ce.Reason))
	assert.Contains(t, ce.Reason, "'set'")
	assert.NotContains(t, ce.Reason, "\x00")
}

func TestHangingImportIsInterruptible(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	_, err := i.Call(ctx, "pwtest_hang:f")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.(*cpython.InterruptedError).Python.Traceback, "KeyboardInterrupt\n(pyworkers: the interrupted import was undone)\n")
	v, err := i.Eval(bg, "'pwtest_hang' in __import__('sys').modules")
	require.NoError(t, err)
	assert.Equal(t, false, v, "the half-imported module is not left behind")
}

// A target's import that an interrupt cuts short is undone whole: a package whose submodules
// were imported before the interrupt is imported afresh next time, not over them (which fails).
func TestInterruptedTargetImportIsUndone(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "halfpkg")
	require.NoError(t, os.MkdirAll(pkg, 0o755))
	write := func(name, src string) { require.NoError(t, os.WriteFile(filepath.Join(pkg, name), []byte(src), 0o644)) }
	write("sub.py", "X = 1\n")
	// the package's own __init__ uses the submodule's name, bound by importing it (as asyncio's
	// does), and then takes long enough to be interrupted, once
	write("__init__.py", "from .sub import *\nY = sub.X\nimport os, time\nif not os.path.exists(__file__ + '.slow-done'):\n    open(__file__ + '.slow-done', 'w').close()\n    time.sleep(3600)\ndef f():\n    return Y\n")
	i := newInterp(t, cpython.InterpreterConfig{Path: []string{dir}})
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	_, err := i.Call(ctx, "halfpkg:f")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	v, err := i.Call(bg, "halfpkg:f")
	require.NoError(t, err, "the second import of the package")
	assert.Equal(t, int64(1), v)
}

func TestForeignPyworkersModuleIsAnErrorNotACrash(t *testing.T) {
	i := newInterp(t, cpython.InterpreterConfig{})
	buf, err := cpython.NewBuffer(4)
	require.NoError(t, err)
	defer buf.Release()
	require.NoError(t, i.Exec(bg, "import sys, types\nreal = sys.modules['pyworkers']\nsys.modules['pyworkers'] = types.ModuleType('pyworkers')"))
	_, err = i.Call(bg, "pwtest:ident", buf)
	pe := pwtest.PyErr(t, err)
	assert.Equal(t, "RuntimeError", pe.Type)
	require.NoError(t, i.Exec(bg, "sys.modules['pyworkers'] = real"))
	v, err := i.Call(bg, "pwtest:describe", buf)
	require.NoError(t, err)
	assert.Equal(t, "memoryview", v)
}
