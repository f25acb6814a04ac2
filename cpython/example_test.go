package cpython_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pyworkers/pyworkers/cpython"
)

func Example() {
	ctx := context.Background()
	interp, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{
		Main:   map[string]any{"greeting": "hello"},
		Stdout: os.Stdout,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer interp.Close()

	if err := interp.Exec(ctx, "import math\nprint(greeting, math.isqrt(1764))"); err != nil {
		fmt.Println(err)
	}
	v, err := interp.Call(ctx, "json:dumps", map[string]any{"ok": true}, cpython.Kwargs{"sort_keys": true})
	fmt.Println(v, err)
	// Output:
	// hello 42
	// {"ok": true} <nil>
}

func ExampleInterpreter_Do() {
	ctx := context.Background()
	interp, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer interp.Close()

	// One turn on the interpreter's thread: many calls, no hand-off between them.
	err = interp.Do(ctx, func(t *cpython.Thread) error {
		total := int64(0)
		for _, word := range []string{"own", "GIL", "each"} {
			n, err := t.Call(ctx, "builtins:len", word)
			if err != nil {
				return err
			}
			total += n.(int64)
		}
		fmt.Println("letters:", total)
		return nil
	})
	fmt.Println(err)
	// Output:
	// letters: 10
	// <nil>
}

func ExamplePythonError() {
	ctx := context.Background()
	interp, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer interp.Close()

	_, err = interp.Call(ctx, "json:loads", "{not json")
	var pe *cpython.PythonError
	if errors.As(err, &pe) {
		fmt.Println(pe.Type)
		fmt.Println(pe.Message)
		// fmt.Printf("%+v", err) would print the whole traceback
	}
	// Output:
	// json.decoder.JSONDecodeError
	// Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
}

func ExampleInterpreter_Exec_timeout() {
	ctx := context.Background()
	interp, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer interp.Close()

	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = interp.Exec(tctx, "while True:\n    pass")
	fmt.Println(errors.Is(err, context.DeadlineExceeded))

	v, err := interp.Eval(ctx, "'still usable'")
	fmt.Println(v, err)
	// Output:
	// true
	// still usable <nil>
}
