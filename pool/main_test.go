package pool_test

import (
	"context"
	"testing"

	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

var bg = context.Background()

// benchDir holds the benchmarks' Python (internal/bench's embedded files).
var benchDir string

func TestMain(m *testing.M) {
	dir, cleanup, err := bench.Setup()
	if err != nil {
		panic(err)
	}
	benchDir = dir
	pwtest.Main(m, cleanup)
}
