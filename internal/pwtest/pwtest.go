// Package pwtest holds what the test packages of pyworkers share: the TestMain that starts
// CPython with testdata/python on sys.path, finalizes it after the tests, and checks that no
// goroutine was left running.
package pwtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pyworkers/pyworkers/cpython"
)

// PythonDir is testdata/python as an absolute path, set by Main.
var PythonDir string

// OwnRuntimeEnv, set in a test binary's environment, makes Main leave the runtime unstarted: for
// a test that re-runs its binary to start CPython with a Config of its own (ChildProcess).
const OwnRuntimeEnv = "PYWORKERS_TEST_OWN_RUNTIME"

// Main runs the tests of a package of this module, then finalizes CPython, runs after (when not
// nil), and exits with the combined status.
func Main(m *testing.M, after func() error) {
	root, err := moduleRoot()
	if err == nil {
		PythonDir = filepath.Join(root, "testdata", "python")
		if os.Getenv(OwnRuntimeEnv) == "" {
			err = cpython.Initialize(cpython.Config{Path: []string{PythonDir}})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pyworkers tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cpython.Finalize(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Finalize:", err)
		code = 1
	}
	if after != nil {
		if err := after(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ChildPayload is the payload ChildProcess gave this process, and whether this process is
// such a child.
func ChildPayload() (payload string, child bool) {
	payload = os.Getenv(OwnRuntimeEnv)
	return payload, payload != ""
}

// ChildProcess runs test t alone again in a fresh process of this test binary, with
// OwnRuntimeEnv set to payload (so that the child can start the runtime with a Config of its
// own; it reads the payload with ChildPayload), and returns the child's output after checking
// that it passed.
func ChildProcess(t *testing.T, payload string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), OwnRuntimeEnv+"="+payload)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child process failed:\n%s", b)
	require.Contains(t, string(b), "--- PASS: "+t.Name()+" ", "the child did not run the test")
	return string(b)
}

// moduleRoot is the nearest directory above the working directory (a test's package directory)
// that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// PyErr requires err to hold a *cpython.PythonError and returns it.
func PyErr(t testing.TB, err error) *cpython.PythonError {
	t.Helper()
	var pe *cpython.PythonError
	require.ErrorAs(t, err, &pe)
	return pe
}

// Venv makes a virtual environment (without pip) with python, in a temporary folder of t's,
// and returns it and its site-packages folder.
func Venv(t testing.TB, python string) (dir, sitePackages string) {
	t.Helper()
	dir = t.TempDir()
	out, err := exec.Command(python, "-m", "venv", "--without-pip", dir).CombinedOutput()
	require.NoError(t, err, "%s -m venv: %s", python, out)
	site, err := filepath.Glob(filepath.Join(dir, "lib", "python3.14*", "site-packages"))
	require.NoError(t, err)
	require.Len(t, site, 1, "the venv's site-packages")
	return dir, site[0]
}

// FakeVenv lays out what a virtual environment looks like to CPython and to pyworkers' checks,
// in a temporary folder of t's: a pyvenv.cfg holding cfg, and bin/python, a link to python.
// It returns the environment's folder.
func FakeVenv(t testing.TB, cfg, python string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pyvenv.cfg"), []byte(cfg), 0o644))
	require.NoError(t, os.Symlink(python, filepath.Join(dir, "bin", "python")))
	return dir
}

// SyncBuffer is a bytes.Buffer that writers on several goroutines (interpreters, a child
// process's pipes) and a reading test may share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset empties the buffer.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// CloseByDeadline closes i with CloseContext and a deadline after, which must interrupt what
// i's end waits for (what): the test fails if it has not returned a minute later (not a timing
// assertion: without the interrupts it never returns).
func CloseByDeadline(t *testing.T, i *cpython.Interpreter, after time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), after)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- i.CloseContext(ctx) }()
	select {
	case err := <-closed:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(time.Minute):
		t.Fatalf("CloseContext did not interrupt %s", what)
	}
}
