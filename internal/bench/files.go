package bench

import (
	"embed"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pyworkers/pyworkers/cpython"
)

// The Python side of the benchmarks: the workloads, and the script that runs CPython's own
// pools on them. Embedded, so that an installed pyworkers binary can run `pyworkers bench`.
//
//go:embed py/benchfuncs.py py/peers.py
var files embed.FS

// Setup prepares the Python of the benchmarks for the tests of a package (TestMain): it writes
// the files (Prepare), puts their folder on Path, and returns a function that removes it.
func Setup() (dir string, cleanup func() error, err error) {
	if dir, err = Prepare(); err != nil {
		return "", nil, err
	}
	Path = []string{dir}
	return dir, func() error { return os.RemoveAll(dir) }, nil
}

// Prepare writes benchfuncs.py and peers.py to a new temporary folder. Put the folder on the
// path of the interpreters that run the workloads; remove it when done.
func Prepare() (dir string, err error) {
	dir, err = os.MkdirTemp("", "pyworkers-bench")
	if err != nil {
		return "", err
	}
	for _, name := range []string{"benchfuncs.py", "peers.py"} {
		data, err := files.ReadFile("py/" + name)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), data, 0o644)
		}
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// FindPython is the python3.14 (python3.14d for a debug build) of the CPython this process
// links, else one of that name on PATH, else "": what runs peers.py. A debug build is not
// compared with a release one.
func FindPython(info cpython.Info) string {
	name := PythonName(info)
	if p := filepath.Join(info.Prefix, "bin", name); isExecutable(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// PythonName is the executable's name FindPython looks for.
func PythonName(info cpython.Info) string {
	if info.Debug {
		return "python3.14d"
	}
	return "python3.14"
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
