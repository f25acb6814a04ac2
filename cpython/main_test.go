package cpython_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/cpython"
)

// testdataPython holds the Python modules the tests call (testdata/python).
var testdataPython string

func TestMain(m *testing.M) {
	dir, err := filepath.Abs("../testdata/python")
	if err == nil {
		testdataPython = dir
		err = cpython.Initialize(cpython.Config{Path: []string{dir}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpython tests:", err)
		os.Exit(1)
	}
	code := m.Run()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cpython.Finalize(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Finalize:", err)
		code = 1
	}
	// After Finalize the package refuses work with a clear error, never a crash.
	if _, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{}); !errors.Is(err, cpython.ErrFinalized) {
		fmt.Fprintln(os.Stderr, "NewInterpreter after Finalize: want ErrFinalized, got", err)
		code = 1
	}
	if err := cpython.Initialize(cpython.Config{}); !errors.Is(err, cpython.ErrFinalized) {
		fmt.Fprintln(os.Stderr, "Initialize after Finalize: want ErrFinalized, got", err)
		code = 1
	}
	if n := cpython.LiveInterpreters(); n != 0 {
		fmt.Fprintln(os.Stderr, "interpreters alive after Finalize:", n)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newInterp creates an interpreter closed at the end of the test.
func newInterp(t testing.TB, cfg cpython.InterpreterConfig) *cpython.Interpreter {
	t.Helper()
	i, err := cpython.NewInterpreter(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewInterpreter: %+v", err)
	}
	t.Cleanup(func() {
		if err := i.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return i
}
