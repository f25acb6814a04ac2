package pool_test

import (
	"context"
	"testing"

	"github.com/pyworkers/pyworkers/internal/pwtest"
)

var bg = context.Background()

func TestMain(m *testing.M) { pwtest.Main(m, nil) }
