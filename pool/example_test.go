package pool_test

import (
	"context"
	"fmt"

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
