package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// binary is the pyworkers command built once for these tests.
var binary string

func TestMain(m *testing.M) {
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
	cmd := exec.Command(binary, args...)
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

func script(t *testing.T, src string) string {
	p := filepath.Join(t.TempDir(), "script.py")
	require.NoError(t, os.WriteFile(p, []byte(src), 0o644))
	return p
}

func TestVersion(t *testing.T) {
	r := pyworkers(t, "version")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "pyworkers ")
	assert.Contains(t, r.stdout, "CPython 3.14.")
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

func TestRunFailureShowsTracebackAndExits1(t *testing.T) {
	p := script(t, "import pyworkers\nif pyworkers.worker_id() == 1:\n    raise ValueError('worker one fails')\nprint('ok')\n")
	r := pyworkers(t, "run", "-w", "2", p)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "[0] ok")
	assert.Contains(t, r.stderr, "worker 1 failed: ValueError: worker one fails")
	assert.Contains(t, r.stderr, "Traceback (most recent call last):")
	assert.Contains(t, r.stderr, p+`", line 3`)
}

func TestRunTimeoutStopsAHungScript(t *testing.T) {
	p := script(t, "while True:\n    pass\n")
	r := pyworkers(t, "run", "-w", "2", "--timeout", "200ms", p)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "context deadline exceeded")
	assert.Contains(t, r.stderr, "0 of 2 workers succeeded")
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"no-such-command"},
		{"run"},
		{"run", "/no/such/script.py"},
		{"run", "-w", "0", "x.py"},
		{"run", "--no-such-flag", "x.py"},
	} {
		r := pyworkers(t, args...)
		assert.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		assert.NotEmpty(t, r.stderr, "%v", args)
		assert.Empty(t, r.stdout, "%v", args)
	}
}

func TestVersionReportsTheLinkedBuild(t *testing.T) {
	r := pyworkers(t, "version")
	require.Equal(t, 0, r.code, r.stderr)
	want := "release build"
	if pydebugTag != nil {
		want = "debug build"
	}
	assert.Contains(t, r.stdout, want)
}
