// Command pyworkers runs Python code in parallel in own-GIL CPython interpreters.
//
//	pyworkers run [-w N] [--timeout D] [--no-prefix] SCRIPT.py [-- ARGS...]
//	pyworkers version
//
// Run `pyworkers help` for details.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/pyworkers/pyworkers/cpython"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // some Python code failed
	exitUsage   = 2 // bad command line or input that cannot be used
	exitSignals = 130
)

// usageError is a mistake in the command line: reported once, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `pyworkers runs Python code in parallel, one own-GIL CPython interpreter per worker.

Usage:
  pyworkers run [-w N] [--timeout D] [--no-prefix] SCRIPT.py [-- ARGS...]
        run SCRIPT.py once in each of N interpreters at the same time
  pyworkers version
        print pyworkers' and CPython's versions
  pyworkers help
        show this text

Run "pyworkers COMMAND -h" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var code int
	var err error
	switch args[0] {
	case "run":
		code, err = cmdRun(ctx, args[1:], stdout, stderr)
	case "version":
		code, err = cmdVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "pyworkers: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if ferr := cpython.Finalize(context.Background()); ferr != nil && err == nil {
		err = ferr
	}
	if err != nil {
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			fmt.Fprintf(stderr, "pyworkers %s: %v\n", args[0], ue)
			return exitUsage
		}
		fmt.Fprintf(stderr, "pyworkers %s: %v\n", args[0], err)
		if code == exitOK {
			code = exitFailed
		}
	}
	if ctx.Err() != nil && code == exitOK {
		code = exitSignals
	}
	return code
}

// version is set at build time with -ldflags "-X main.version=..."; "dev" otherwise.
var version = "dev"

func cmdVersion(stdout io.Writer) (int, error) {
	info, err := cpython.RuntimeInfo()
	if err != nil {
		return exitFailed, err
	}
	build := "release"
	if info.Debug {
		build = "debug"
	}
	fmt.Fprintf(stdout, "pyworkers %s\nCPython %s (%s build, prefix %s)\n", version, info.Version, build, info.Prefix)
	return exitOK, nil
}
