package pool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/pool"
)

func Example() {
	ctx := context.Background()
	p, err := pool.New(pool.Options{
		Workers: 2,
		Setup:   "import math\nPRIMES = [n for n in range(2, 100) if all(n % d for d in range(2, math.isqrt(n) + 1))]",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	v, err := p.Call(ctx, "pwtest:main_eval", "len(PRIMES)")
	fmt.Println(v, err)

	// Map streams results in input order.
	inputs := func(yield func(any) bool) {
		for _, pair := range [][2]int{{1, 2}, {3, 4}, {5, 6}} {
			if !yield(pool.Args{pair[0], pair[1]}) {
				return
			}
		}
	}
	for sum, err := range p.Map(ctx, "pwtest:add", inputs) {
		fmt.Println(sum, err)
	}
	// Output:
	// 25 <nil>
	// 3 <nil>
	// 7 <nil>
	// 11 <nil>
}

// A call whose context ends is interrupted inside Python, however it is busy; the worker goes on
// with the next task.
func Example_timeout() {
	p, err := pool.New(pool.Options{
		Workers: 1,
		Setup:   "def forever():\n    while True:\n        pass\n\ndef hello(name):\n    return 'hello ' + name",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = p.Call(ctx, "__main__:forever")
	fmt.Println(errors.Is(err, context.DeadlineExceeded))

	v, err := p.Call(context.Background(), "__main__:hello", "again")
	fmt.Println(v, err)
	// Output:
	// true
	// hello again <nil>
}

// A Python exception comes back as a *cpython.PythonError with its type, message and traceback.
func Example_pythonError() {
	p, err := pool.New(pool.Options{Workers: 1, Setup: "def div(a, b):\n    return a / b"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	_, err = p.Call(context.Background(), "__main__:div", 1, 0)
	var pe *cpython.PythonError
	if errors.As(err, &pe) {
		fmt.Println(pe.Type, "-", pe.Message)
		fmt.Println(strings.Contains(pe.Traceback, "in div"))
	}
	// Output:
	// ZeroDivisionError - division by zero
	// true
}

// Named groups of workers, each with its own set-up (one interpreter per model), and calls
// addressed to a group by name.
func Example_groups() {
	which := "\ndef which():\n    return MODEL"
	p, err := pool.New(pool.Options{
		Workers: 1,
		Setup:   "MODEL = 'default'" + which,
		Groups: map[string]pool.GroupOptions{
			"a": {Workers: 1, Setup: "MODEL = 'model A'" + which},
			"b": {Workers: 1, Setup: "MODEL = 'model B'" + which},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	ctx := context.Background()
	for _, name := range []string{"", "a", "b"} {
		g, err := p.Group(name)
		if err != nil {
			fmt.Println(err)
			return
		}
		v, err := g.Call(ctx, "__main__:which")
		fmt.Println(v, err)
	}
	_, err = p.Group("c")
	fmt.Println(errors.Is(err, pool.ErrNoGroup))
	// Output:
	// default <nil>
	// model A <nil>
	// model B <nil>
	// true
}

// Submit queues calls and returns Futures to wait on, in any order, from any goroutine.
func ExamplePool_Submit() {
	p, err := pool.New(pool.Options{Workers: 2, Setup: "def square(x):\n    return x * x"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	ctx := context.Background()
	var futures []*pool.Future
	for x := range 4 {
		f, err := p.Submit(ctx, "__main__:square", x)
		if err != nil {
			fmt.Println(err)
			return
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		fmt.Println(f.Wait(ctx))
	}
	// Output:
	// 0 <nil>
	// 1 <nil>
	// 4 <nil>
	// 9 <nil>
}

// An async function is a target like any other: each call runs it to completion on the worker's
// own event loop, which stays from call to call (so a client session kept in the module goes on
// working); a deadline reaches the call while it awaits.
func Example_async() {
	p, err := pool.New(pool.Options{Workers: 1, Setup: `
import asyncio
cache = {}
async def fetch(key):
    if key not in cache:
        await asyncio.sleep(0.01)  # an HTTP request, say
        cache[key] = key.upper()
    return cache[key]
async def wait_forever():
    await asyncio.Event().wait()
`})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	ctx := context.Background()
	for range 2 {
		fmt.Println(p.Call(ctx, "__main__:fetch", "answer"))
	}
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = p.Call(tctx, "__main__:wait_forever")
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// ANSWER <nil>
	// ANSWER <nil>
	// true
}
