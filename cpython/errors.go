package cpython

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/pyworkers/pyworkers/internal/wire"
)

// Sentinel errors. Errors returned by this package wrap them, so test with errors.Is.
var (
	// ErrClosed: the interpreter was closed (or is closing) and takes no more work.
	ErrClosed = errors.New("cpython: interpreter closed")
	// ErrFinalized: Finalize has run; CPython cannot be started again in this process.
	ErrFinalized = errors.New("cpython: runtime finalized (CPython cannot be restarted in one process)")
	// ErrNotRun: a CallMany item after one that ended the batch (SystemExit): it did not run.
	ErrNotRun = errors.New("cpython: not run: an earlier call of its batch ended the batch")
	// ErrBatchFailed: CallMany failed as a whole after its calls began, so some may have run
	// (its bookkeeping, or the encoding of its outcomes, raised: out of memory, say).
	ErrBatchFailed = errors.New("cpython: the batch failed after its calls began (some may have run)")
	// ErrInitialized: Initialize was called while the runtime was already running.
	ErrInitialized = errors.New("cpython: runtime already initialized")
	// ErrUnsupportedValue: a value has no counterpart on the other side (see ConversionError).
	ErrUnsupportedValue = wire.ErrUnsupported
	// ErrIncompatibleExtension: an extension module refused to load in an own-GIL interpreter
	// (single-phase init, or no Py_MOD_PER_INTERPRETER_GIL_SUPPORTED). It matches a *PythonError
	// of that kind through errors.Is; IncompatibleModule names the module.
	ErrIncompatibleExtension = errors.New("cpython: extension module does not support own-GIL subinterpreters")
)

// PythonError is a Python exception that reached Go.
//
// Error() is one line, "Type: message"; fmt's %+v prints the whole traceback as Python would.
type PythonError struct {
	// Type is the exception's qualified type name as Python prints it: "ValueError",
	// "json.decoder.JSONDecodeError" (no module for builtins and __main__).
	Type string
	// Message is str(exception), or "<exception str() failed>" when that raised ("<not
	// formatted: the task was interrupted>" when the call's interrupt came while it ran).
	Message string
	// Traceback is the full text traceback.format_exception gives, with the __cause__ and
	// __context__ chains and SyntaxError's caret lines; it ends with "Type: message\n". For a
	// call its interrupt ended, only the exception's own frames and that line: formatting the
	// rest runs code (each exception's __str__) that could hang with no interrupt left.
	Traceback string

	systemExit bool // a SystemExit or a subclass of it ended the code, with exitStatus
	exitStatus int
}

// ExitStatus reports whether e is a SystemExit (or a subclass of it: sys.exit(), raise
// SystemExit(...)) and the status a python process ends with when it ends one: 0 for
// sys.exit(), sys.exit(None) and sys.exit(0), an int's low 8 bits (sys.exit(3): 3,
// sys.exit(-1): 255, sys.exit(256): 0), and 1 for any other code (sys.exit("message"),
// sys.exit("0")), as on Linux. It is ok only for errors this package made.
func (e *PythonError) ExitStatus() (status int, ok bool) {
	return e.exitStatus, e.systemExit
}

func (e *PythonError) Error() string {
	msg := strings.ReplaceAll(strings.TrimRight(e.Message, "\n"), "\n", " | ")
	if msg == "" {
		return e.Type
	}
	return e.Type + ": " + msg
}

// Format implements fmt.Formatter: %+v prints the traceback, other verbs print Error().
func (e *PythonError) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('+') && e.Traceback != "" {
		io.WriteString(f, strings.TrimRight(e.Traceback, "\n"))
		return
	}
	io.WriteString(f, e.Error())
}

// Is reports whether e is an ImportError of an extension module that cannot load in an
// own-GIL interpreter (target ErrIncompatibleExtension).
func (e *PythonError) Is(target error) bool {
	if target != ErrIncompatibleExtension {
		return false
	}
	_, ok := e.IncompatibleModule()
	return ok
}

// IncompatibleModule returns the name of the extension module when e says that module does
// not support loading in subinterpreters.
func (e *PythonError) IncompatibleModule() (string, bool) {
	const marker = " does not support loading in subinterpreters"
	if !strings.HasSuffix(e.Type, "ImportError") {
		return "", false
	}
	before, _, ok := strings.Cut(e.Message, marker)
	if !ok {
		return "", false
	}
	name := strings.TrimPrefix(strings.TrimSpace(before), "module ")
	return strings.Trim(name, "'\""), true
}

// InterruptedError is returned when running Python code was stopped: its context was
// cancelled or timed out (Cause is ctx.Err()), or the interpreter was closed with a deadline
// (Cause is ErrClosed). Python, when set, is the exception the interrupted code ended with;
// its traceback shows where the code was stopped. errors.Is/As see both.
type InterruptedError struct {
	Cause  error
	Python *PythonError
}

func (e *InterruptedError) Error() string {
	s := "cpython: Python code interrupted: " + e.Cause.Error()
	if e.Python != nil && e.Python.Type != "KeyboardInterrupt" {
		s += " (it raised " + e.Python.Error() + ")"
	}
	return s
}

func (e *InterruptedError) Unwrap() []error {
	if e.Python == nil {
		return []error{e.Cause}
	}
	return []error{e.Cause, e.Python}
}

// InImport reports whether the interrupt stopped a module's import half-way (its traceback runs
// through a module's body, or through importlib): the interpreter's modules may then be half
// made, a package cut short is imported again over the submodules that stayed, and code that
// imports them later can fail in odd ways (NameError in a package's __init__). Such an
// interpreter is best replaced; the pool does so. pyworkers' own imports (a call's target
// module, asyncio for an async target) take out what they added to sys.modules when they are
// cut short, so that their next import starts afresh (the traceback's last line then says so);
// modules those imports finished may still have registered themselves elsewhere, so InImport
// reports them too. A <module> frame that is not an import (code run by exec) counts as one.
func (e *InterruptedError) InImport() bool {
	if e.Python == nil {
		return false
	}
	// The interrupt's own frames, not those of exceptions chained before it.
	tb := e.Python.Traceback
	for _, sep := range []string{"\nDuring handling of the above exception, another exception occurred:\n", "\nThe above exception was the direct cause of the following exception:\n"} {
		if i := strings.LastIndex(tb, sep); i >= 0 {
			tb = tb[i+len(sep):]
		}
	}
	first := true
	for line := range strings.Lines(tb) {
		if !strings.HasPrefix(line, `  File "`) {
			continue
		}
		if strings.HasPrefix(line, `  File "<frozen importlib.`) {
			return true
		}
		// the first frame is the code that was run (an Exec's or a script's is a <module> too)
		if !first && strings.HasSuffix(strings.TrimRight(line, "\n"), ", in <module>") {
			return true
		}
		first = false
	}
	return false
}

// ConversionError is a value that cannot cross between Go and Python: a Go type with no
// Python counterpart, a Python object that is not None/bool/int/float/str/bytes/tuple/list/dict
// (with str keys), a string that is not valid UTF-8. It wraps ErrUnsupportedValue.
type ConversionError struct {
	// What is being converted: "argument", "result", or the InterpreterConfig field a value of
	// which cannot cross: "main", "config", "argv", "path"; "value" for a channel's.
	What string
	// Path locates the value inside the structure, e.g. `[1]["items"][3]` (empty: the value itself).
	Path string
	// Reason says what is wrong with it.
	Reason string
}

func (e *ConversionError) Error() string {
	if e.Path == "" {
		return "cpython: cannot convert " + e.What + ": " + e.Reason
	}
	return "cpython: cannot convert " + e.What + " at " + e.Path + ": " + e.Reason
}

func (e *ConversionError) Unwrap() error { return ErrUnsupportedValue }

// conversionError turns a wire error into a ConversionError naming what was converted.
func conversionError(what, root string, err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return &ConversionError{What: what, Path: root + we.Path, Reason: we.Msg}
	}
	return fmt.Errorf("cpython: cannot convert %s: %w", what, err)
}

// PanicError carries a panic raised by a function run on an interpreter's thread (Do) back to
// the goroutine that called Do, where it is panicked again with this value.
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("cpython: panic on the interpreter thread: %v\n\n%s", p.Value, p.Stack)
}

func (p *PanicError) Unwrap() error {
	if err, ok := p.Value.(error); ok {
		return err
	}
	return nil
}

// IsModuleName reports whether s is a dotted Python module name, the form pool's Preload and
// the CLI's doctor accept (they import it with an import statement): identifiers joined by
// dots, made of the characters Python's identifiers are (its reference's id_start and
// id_continue: letters, the underscore, and after the first also digits, combining marks and
// connectors, in any script: "données"), none a keyword ("class"; soft keywords such as
// "match" are names). It says nothing of whether the module exists, and it never accepts a
// space, a line end or any punctuation but "." and "_".
func IsModuleName(s string) bool {
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || pythonKeywords[part] {
			return false
		}
		for k, r := range part {
			if !idStart(r) && (k == 0 || !idContinue(r)) {
				return false
			}
		}
	}
	return true
}

// pythonKeywords are Python 3.14's keywords (keyword.kwlist), which no name may be.
var pythonKeywords = map[string]bool{
	"False": true, "None": true, "True": true, "and": true, "as": true, "assert": true, "async": true,
	"await": true, "break": true, "class": true, "continue": true, "def": true, "del": true, "elif": true,
	"else": true, "except": true, "finally": true, "for": true, "from": true, "global": true, "if": true,
	"import": true, "in": true, "is": true, "lambda": true, "nonlocal": true, "not": true, "or": true,
	"pass": true, "raise": true, "return": true, "try": true, "while": true, "with": true, "yield": true,
}

// idStart and idContinue are Unicode's ID_Start and the rest of ID_Continue as Go's tables
// (unicode.Version) know them. Python's identifiers are those of NFKC forms that are, which a
// few dozen characters are not (U+037A ͺ is " ͅ"): Python's own import says SyntaxError then.
func idStart(r rune) bool {
	return r == '_' || unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Lm, unicode.Lo, unicode.Nl, unicode.Other_ID_Start) &&
		!unicode.Is(unicode.Pattern_Syntax, r)
}

func idContinue(r rune) bool {
	switch r {
	case 0x200C, 0x200D, 0x30FB, 0xFF65: // ID_Continue since Unicode 15.1, after Go's 15.0 tables
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Mc, unicode.Nd, unicode.Pc, unicode.Other_ID_Continue) &&
		!unicode.Is(unicode.Pattern_Syntax, r)
}
