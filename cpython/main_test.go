package cpython_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

func TestMain(m *testing.M) {
	pwtest.Main(m, func() error {
		// After Finalize the package refuses work with a clear error, never a crash.
		if _, err := cpython.NewInterpreter(context.Background(), cpython.InterpreterConfig{}); !errors.Is(err, cpython.ErrFinalized) {
			return fmt.Errorf("NewInterpreter after Finalize: want ErrFinalized, got %v", err)
		}
		if err := cpython.Initialize(cpython.Config{}); !errors.Is(err, cpython.ErrFinalized) {
			return fmt.Errorf("Initialize after Finalize: want ErrFinalized, got %v", err)
		}
		if n := cpython.LiveInterpreters(); n != 0 {
			return fmt.Errorf("interpreters alive after Finalize: %d", n)
		}
		return nil
	})
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
