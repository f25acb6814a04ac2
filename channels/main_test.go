package channels_test

import (
	"context"
	"testing"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

var bg = context.Background()

func TestMain(m *testing.M) { pwtest.Main(m, nil) }

func newInterp(t testing.TB) *cpython.Interpreter {
	t.Helper()
	return newInterpWith(t, cpython.InterpreterConfig{})
}

// newInterpWith is newInterp with cfg.
func newInterpWith(t testing.TB, cfg cpython.InterpreterConfig) *cpython.Interpreter {
	t.Helper()
	i, err := cpython.NewInterpreter(bg, cfg)
	if err != nil {
		t.Fatalf("NewInterpreter: %+v", err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}
