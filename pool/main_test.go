package pool_test

import (
	"context"
	"os"
	"testing"

	"github.com/pyworkers/pyworkers/internal/bench"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

var bg = context.Background()

// benchDir holds the benchmarks' Python (internal/bench's embedded files).
var benchDir string

func TestMain(m *testing.M) {
	var err error
	if benchDir, err = bench.Prepare(); err != nil {
		panic(err)
	}
	bench.Path = []string{benchDir}
	pwtest.Main(m, func() error { return os.RemoveAll(benchDir) })
}

func pwtestDir() string { return pwtest.PythonDir }
