package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pyworkers/pyworkers/cpython"
)

const doctorUsage = `Usage: pyworkers doctor [--json] [--python PATH] [MODULE...]

Shows the CPython pyworkers runs on (version, release or debug build, prefix) and, for each
MODULE, whether it imports in a fresh own-GIL interpreter: run it on a deployment before
relying on a library. Extension modules that do not support per-interpreter GILs (numpy today)
are named as such. With a virtual environment active (or --python naming its python), the
prefix is that environment and its packages are the ones tried. Exit status 1 when any module
fails, 2 for a bad command line, 141 when no one reads the --json report.

Examples:
  pyworkers doctor json decimal sqlite3
  pyworkers doctor --json numpy > report.json
  pyworkers doctor --python .venv/bin/python mypkg

Flags:
`

type doctorReport struct {
	Python struct {
		Version string `json:"version"`
		Build   string `json:"build"`
		Prefix  string `json:"prefix"`
	} `json:"python"`
	Modules []moduleReport `json:"modules"`
}

type moduleReport struct {
	Name  string       `json:"name"`
	OK    bool         `json:"ok"`
	Error *moduleError `json:"error,omitempty"`
}

type moduleError struct {
	errorJSON
	// NotSubinterpreterCapable: an extension module refused own-GIL interpreters.
	NotSubinterpreterCapable  bool   `json:"not_subinterpreter_capable,omitempty"`
	IncompatibleExtensionName string `json:"incompatible_extension,omitempty"`
}

func cmdDoctor(ctx context.Context, args []string, std io3) (int, error) {
	fs := newFlags("doctor", doctorUsage, std)
	asJSON := fs.Bool("json", false, "write the report as JSON")
	python := pythonFlag(fs)
	if done, err := parse(fs, args); done || err != nil {
		return exitOK, err
	}
	defer exitWhenStuck(ctx)() // an import blocked where no interrupt reaches must not keep it
	for _, m := range fs.Args() {
		if !cpython.IsModuleName(m) {
			return exitUsage, usagef("%q is not a module name", m)
		}
	}
	stdout := std.stdout
	if *asJSON {
		stdout = privateStdout(stdout) // the report alone: native writes of Python code go to stderr
	}
	if err := startPython(*python, std.stderr); err != nil {
		return exitUsage, err
	}
	info, err := cpython.RuntimeInfo()
	if err != nil {
		return exitFailed, err
	}
	rep := doctorReport{Modules: []moduleReport{}} // "modules": [] with none asked, not null
	rep.Python.Version, rep.Python.Build, rep.Python.Prefix = info.Version, buildName(info), info.Prefix
	cwd, _ := os.Getwd()
	failed := 0
	for _, m := range fs.Args() {
		r := moduleReport{Name: m}
		err := importInFreshInterpreter(ctx, m, cwd, std.stderr)
		if err != nil && ctx.Err() != nil {
			// stopped (Ctrl-C): the report of the modules checked so far, this one interrupted
			failed++
			r.Error = &moduleError{errorJSON: errorJSON{Type: "KeyboardInterrupt", Message: "the check was interrupted: doctor was stopped"}}
			rep.Modules = append(rep.Modules, r)
			break
		}
		r.OK = err == nil
		if err != nil {
			failed++
			r.Error = &moduleError{errorJSON: errorJSONOf(err)}
			if pe := (*cpython.PythonError)(nil); errors.As(err, &pe) {
				if name, ok := pe.IncompatibleModule(); ok {
					r.Error.NotSubinterpreterCapable, r.Error.IncompatibleExtensionName = true, name
				}
			}
		}
		rep.Modules = append(rep.Modules, r)
	}
	var text bytes.Buffer
	if *asJSON {
		enc := json.NewEncoder(&text)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // an error's "<module>" as it is, as map writes it
		if err := enc.Encode(rep); err != nil {
			return exitFailed, err
		}
	} else {
		fmt.Fprintf(&text, "CPython %s (%s build), prefix %s\n", rep.Python.Version, rep.Python.Build, rep.Python.Prefix)
		for _, r := range rep.Modules {
			switch {
			case r.OK:
				fmt.Fprintf(&text, "  %-24s ok\n", r.Name)
			case r.Error.NotSubinterpreterCapable:
				fmt.Fprintf(&text, "  %-24s FAIL: extension module %s does not support own-GIL interpreters (%s: %s)\n",
					r.Name, r.Error.IncompatibleExtensionName, r.Error.Type, r.Error.Message)
			default:
				fmt.Fprintf(&text, "  %-24s FAIL: %s: %s\n", r.Name, r.Error.Type, r.Error.Message)
			}
		}
	}
	if code, err := writeReport(stdout, text.Bytes()); err != nil || code != exitOK {
		return code, err
	}
	if ctx.Err() != nil {
		return exitInterrupt, nil
	}
	if failed > 0 {
		return exitFailed, nil
	}
	return exitOK, nil
}

// importInFreshInterpreter imports module in a new own-GIL interpreter, so that one module's
// failure or side effects cannot colour the next one's result.
// What importing prints goes to stderr: stdout is the report (JSON with --json). Once ctx has
// ended, an import still running stopGrace later (blocked where no interrupt reaches) is left
// behind, as run leaves a worker, so that the report goes out.
func importInFreshInterpreter(ctx context.Context, module, cwd string, stderr io.Writer) error {
	return leaveIfStuck(ctx, func() error {
		in, err := cpython.NewInterpreter(ctx, cpython.InterpreterConfig{Path: []string{cwd}, Stdout: stderr, Stderr: stderr})
		if err == nil {
			err = in.Exec(ctx, "import "+module)
			in.CloseContext(ctx) // waits for threads the import started, until Ctrl-C
		}
		return err
	})
}
