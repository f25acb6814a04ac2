package cpython_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/pwtest"
)

// A Finalize called while another waits for running code obeys its own ctx: its deadline
// interrupts that code, as the first's would. The runtime ends once per process: in a child.
func TestConcurrentFinalizeObeysItsContext(t *testing.T) {
	if _, child := pwtest.ChildPayload(); !child {
		pwtest.ChildProcess(t, "finalize")
		return
	}
	i, err := cpython.NewInterpreter(bg, cpython.InterpreterConfig{})
	require.NoError(t, err)
	wait := startExec(i, "while True: pass")
	first := make(chan error, 1)
	go func() { first <- cpython.Finalize(bg) }() // waits for the loop for good
	<-cpython.Finalizing()
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- cpython.Finalize(ctx) }()
	select {
	case err := <-second:
		assert.NoError(t, err, "the runtime's outcome")
	case <-time.After(time.Minute): // not a timing assertion: without the interrupt it never returns
		t.Fatal("the second Finalize did not interrupt the running code")
	}
	var ie *cpython.InterruptedError
	execErr := wait()
	assert.ErrorAs(t, execErr, &ie)
	assert.ErrorIs(t, execErr, cpython.ErrClosed)
	assert.NoError(t, <-first)
}
