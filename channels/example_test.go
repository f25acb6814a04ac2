package channels_test

import (
	"context"
	"fmt"

	"github.com/pyworkers/pyworkers/channels"
	"github.com/pyworkers/pyworkers/cpython"
)

// A Python producer in one interpreter feeds a Python consumer in another; Go made the
// channels and collects the result.
func Example() {
	ctx := context.Background()
	work, err := channels.New(16) // bounded: the producer waits when the consumer falls behind
	if err != nil {
		fmt.Println(err)
		return
	}
	results, _ := channels.New(0)
	// The interpreters get ids, which do not hold a channel: keep each *Channel until they have
	// opened it. Released at the end, their C memory goes at once, not at a later collection.
	defer work.Release()
	defer results.Release()

	producer, _ := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{Main: map[string]any{"work_id": work.ID()}})
	defer producer.Close()
	consumer, _ := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{
		Main: map[string]any{"work_id": work.ID(), "results_id": results.ID()},
	})
	defer consumer.Close()

	done := make(chan error, 1)
	go func() {
		done <- consumer.Exec(ctx, `
import pyworkers
total = sum(n * n for n in pyworkers.Channel(work_id))   # until the producer closes it
pyworkers.Channel(results_id).send({"sum of squares": total})
`)
	}()
	err = producer.Exec(ctx, `
import pyworkers
ch = pyworkers.Channel(work_id)
for n in range(1, 101):
    ch.send(n)
ch.close()
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := <-done; err != nil {
		fmt.Println(err)
		return
	}
	v, err := results.Recv(ctx)
	fmt.Println(v, err)
	// Output: map[sum of squares:338350] <nil>
}
