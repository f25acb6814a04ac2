package cpython_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

// TestExecutableVenv: Config.Executable set to a virtual environment's python makes every
// interpreter use that environment, as running that python would (sys.prefix, its
// site-packages, their .pth files), and it is sys.executable, which child processes started
// from Python run. The runtime starts once per process: the Config is tried in a child process.
func TestExecutableVenv(t *testing.T) {
	if exe, child := pwtest.ChildPayload(); child {
		venvChild(t, exe)
		return
	}
	info, err := cpython.RuntimeInfo()
	require.NoError(t, err)
	python := bench.FindPython(info)
	if python == "" {
		t.Skipf("no %s of the linked CPython to make a virtual environment with", bench.PythonName(info))
	}
	venv, site := pwtest.Venv(t, python)
	extra := t.TempDir() // reached only through a .pth file, as an editable install is
	write := func(path, text string) {
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	}
	write(filepath.Join(site, "venv_only.py"), "WHERE = 'venv'\n")
	write(filepath.Join(site, "extra.pth"), extra+"\n")
	write(filepath.Join(extra, "pth_only.py"), "WHERE = 'pth'\n")

	exe := filepath.Join(venv, "bin", filepath.Base(python))
	childOut := pwtest.ChildProcess(t, exe)
	_, line, ok := strings.Cut(childOut, "VENV ")
	require.True(t, ok, "no result in the child's output:\n%s", childOut)
	line, _, _ = strings.Cut(line, "\n")
	var seen map[string]string
	require.NoError(t, json.Unmarshal([]byte(line), &seen), line)
	realVenv, err := filepath.EvalSymlinks(venv)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		"executable": exe, "prefix": realVenv, "venv_only": "venv", "pth_only": "pth", "child": "child ok",
	}, seen)
}

func venvChild(t *testing.T, exe string) {
	require.NoError(t, cpython.Initialize(cpython.Config{Executable: exe}))
	in := newInterp(t, cpython.InterpreterConfig{})
	v, err := in.Eval(context.Background(), `__import__("json").dumps({
		"executable": __import__("sys").executable,
		"prefix": __import__("os").path.realpath(__import__("sys").prefix),
		"venv_only": __import__("venv_only").WHERE,
		"pth_only": __import__("pth_only").WHERE,
		"child": __import__("subprocess").run([__import__("sys").executable, "-c", "print('child ok')"],
			capture_output=True, text=True, check=True).stdout.strip(),
	})`)
	require.NoError(t, err)
	fmt.Printf("VENV %s\n", v)
}

// A Config.Executable that names no file is refused before CPython starts, so that the runtime
// can still be started with a right one; without one, sys.executable is "".
func TestExecutableRefused(t *testing.T) {
	if _, child := pwtest.ChildPayload(); !child {
		pwtest.ChildProcess(t, "1")
		return
	}
	err := cpython.Initialize(cpython.Config{Executable: "/nonexistent/python3.14"})
	require.EqualError(t, err, "cpython: Config.Executable: stat /nonexistent/python3.14: no such file or directory")
	dir := t.TempDir()
	require.EqualError(t, cpython.Initialize(cpython.Config{Executable: dir}), "cpython: Config.Executable: "+dir+" is a directory")
	script := filepath.Join(dir, "job.py") // given by mistake for the python to run it
	require.NoError(t, os.WriteFile(script, []byte("print(1)\n"), 0o644))
	require.EqualError(t, cpython.Initialize(cpython.Config{Executable: script}), "cpython: Config.Executable: "+script+" is not an executable file")
	require.EqualError(t, cpython.Initialize(cpython.Config{Executable: "/bin/ls"}), `cpython: Config.Executable: /bin/ls is not a python executable (its name does not begin with "python")`)
	other311 := filepath.Join(dir, "python3") // a link to another version's python
	require.NoError(t, os.Symlink(filepath.Join(dir, "python3.11"), other311))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "python3.11"), []byte("#!/bin/sh\n"), 0o755))
	require.EqualError(t, cpython.Initialize(cpython.Config{Executable: other311}), "cpython: Config.Executable: "+other311+" is Python 3.11 ("+dir+"/python3.11); pyworkers runs CPython 3.14")
	old := pwtest.FakeVenv(t, "home = /usr/bin\nversion_info = 3.12.3\n", "/bin/true")
	require.EqualError(t, cpython.Initialize(cpython.Config{Executable: filepath.Join(old, "bin", "python")}),
		"cpython: Config.Executable: "+old+"/bin/python belongs to a Python 3.12.3 environment ("+old+"/pyvenv.cfg); pyworkers runs CPython 3.14")
	// made by another CPython 3.14 installation: its standard library would be loaded
	other := pwtest.FakeVenv(t, "home = /opt/elsewhere/bin\nversion_info = 3.14.0\n", "/bin/true")
	err = cpython.Initialize(cpython.Config{Executable: filepath.Join(other, "bin", "python")})
	require.ErrorContains(t, err, "belongs to an environment made by the python in /opt/elsewhere/bin, another CPython than the one pyworkers is linked with")
	require.NoError(t, cpython.Initialize(cpython.Config{}), "the runtime starts after a refused Config")
	in := newInterp(t, cpython.InterpreterConfig{})
	v, err := in.Eval(context.Background(), `__import__("sys").executable`)
	require.NoError(t, err)
	assert.Equal(t, "", v, "sys.executable with no Config.Executable")
}
