// Package pwtest holds what the test packages of pyworkers share: the TestMain that starts
// CPython with testdata/python on sys.path, finalizes it after the tests, and checks that no
// goroutine was left running.
package pwtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/cpython"
)

// PythonDir is testdata/python as an absolute path, set by Main.
var PythonDir string

// Main runs the tests of a package of this module, then finalizes CPython, runs after (when not
// nil), and exits with the combined status.
func Main(m *testing.M, after func() error) {
	root, err := moduleRoot()
	if err == nil {
		PythonDir = filepath.Join(root, "testdata", "python")
		err = cpython.Initialize(cpython.Config{Path: []string{PythonDir}})
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
