// Package pwtest holds what the test packages of pyworkers share: the TestMain that starts
// CPython with testdata/python on sys.path, finalizes it after the tests, and checks that no
// goroutine was left running.
package pwtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/cpython"
)

// PythonDir is testdata/python as an absolute path, set by Main.
var PythonDir string

// OwnRuntimeEnv, set in a test binary's environment, makes Main leave the runtime unstarted: for
// a test that re-runs its binary to start CPython with a Config of its own (ChildProcess).
const OwnRuntimeEnv = "PYWORKERS_TEST_OWN_RUNTIME"

// Main runs the tests of a package of this module, then finalizes CPython, runs after (when not
// nil), and exits with the combined status.
func Main(m *testing.M, after func() error) {
	root, err := moduleRoot()
	if err == nil {
		PythonDir = filepath.Join(root, "testdata", "python")
		if os.Getenv(OwnRuntimeEnv) == "" {
			err = cpython.Initialize(cpython.Config{Path: []string{PythonDir}})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pyworkers tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cpython.Finalize(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Finalize:", err)
		code = 1
	}
	if after != nil {
		if err := after(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ChildProcess reports whether this process is the child ChildProcess started for test t; if
// not, it runs t alone again in a fresh process of this test binary, with OwnRuntimeEnv set to
// payload (so that the child can start the runtime with a Config of its own), and returns the
// child's output after checking that it passed. A child reads its payload with
// os.Getenv(OwnRuntimeEnv).
func ChildProcess(t *testing.T, payload string) (child bool, out string) {
	t.Helper()
	if os.Getenv(OwnRuntimeEnv) != "" {
		return true, ""
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), OwnRuntimeEnv+"="+payload)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child process failed:\n%s", b)
	require.Contains(t, string(b), "--- PASS: "+t.Name()+" ", "the child did not run the test")
	return false, string(b)
}

// moduleRoot is the nearest directory above the working directory (a test's package directory)
// that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// PyErr requires err to hold a *cpython.PythonError and returns it.
func PyErr(t testing.TB, err error) *cpython.PythonError {
	t.Helper()
	var pe *cpython.PythonError
	require.ErrorAs(t, err, &pe)
	return pe
}
