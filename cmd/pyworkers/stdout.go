package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// exitBrokenPipe is the exit status of map, and of doctor --json, when the reader of their
// output went away (| head): what a shell reports for a process ended by SIGPIPE, which is how
// pyworkers ended before that output had its own file descriptor.
const exitBrokenPipe = 128 + int(syscall.SIGPIPE)

// writeReport writes a command's report to stdout; the exit status and error say whether it got
// out. No one reading it (| true) is not worth a message: the status says it, as map's does.
func writeReport(stdout io.Writer, text []byte) (int, error) {
	if _, err := stdout.Write(text); err != nil {
		if errors.Is(err, syscall.EPIPE) {
			return exitBrokenPipe, nil
		}
		return exitFailed, fmt.Errorf("writing to standard output: %w", err)
	}
	return exitOK, nil
}

// privateStdout keeps standard output for what the command writes there alone (map's JSON lines,
// doctor's JSON report). What Python prints through
// sys.stdout goes to stderr (the pool's writers), but native code writes to file descriptor 1
// directly: a child process (os.system, subprocess without capture), os.write(1, ...), a C
// library's printf. So fd 1 becomes a copy of fd 2, for everything else in the process and its
// children, and the results go to a private duplicate of the original standard output (close
// on exec). It returns w itself, changing nothing, when w is not this process's os.Stdout or fd
// 1 cannot be duplicated (it is closed, say).
func privateStdout(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); !ok || f != os.Stdout {
		return w
	}
	syscall.ForkLock.RLock() // no child may inherit the duplicate before it is close-on-exec
	fd, err := syscall.Dup(1)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return w
	}
	if err := syscall.Dup3(2, 1, 0); err != nil {
		syscall.Close(fd)
		return w
	}
	return os.NewFile(uintptr(fd), "stdout")
}
