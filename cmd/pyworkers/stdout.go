package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
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

// sharedOutput is stdout or stderr as the workers share it (through prefixWriters, or as a
// writer itself): it knows who left a line unfinished there, so that other output (another
// worker's, a report) starts on a line of its own.
type sharedOutput struct {
	mu   sync.Mutex
	w    io.Writer
	open io.Writer // whose last line there lacks its newline (a prefixWriter, or o itself), if anyone's
	buf  bytes.Buffer
}

// startFor begins who's output (o.mu held): a newline to write first when someone else left a
// line unfinished (that line is then ended), and whether who itself did (it goes on with it).
func (o *sharedOutput) startFor(who io.Writer) (newline string, goesOn bool) {
	switch o.open {
	case nil:
		return "", false
	case who:
		return "", true
	}
	o.open = nil
	return "\n", false
}

// whole writes text (whole lines) on a line of its own.
func (o *sharedOutput) whole(text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	nl, _ := o.startFor(nil)
	io.WriteString(o.w, nl+text)
}

// Write writes b as it is (output without prefixes), after an unfinished line of a prefixWriter's.
func (o *sharedOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if nl, _ := o.startFor(o); nl != "" {
		if _, err := io.WriteString(o.w, nl); err != nil {
			return 0, err
		}
	}
	if len(b) > 0 {
		if o.open = nil; b[len(b)-1] != '\n' {
			o.open = o
		}
	}
	return o.w.Write(b)
}

// prefixWriter puts a worker's prefix before every line it writes to a sharedOutput. cpython
// hands it whole lines as a rule, but a flush (print(..., end="", flush=True)) or a line longer
// than cpython's buffer gives part of one; another worker's output, or the end of this one,
// then ends that line first, and the rest of it comes later with the prefix again.
type prefixWriter struct {
	out    *sharedOutput
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	o := p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(b)
	o.buf.Reset()
	nl, midLine := o.startFor(p)
	o.buf.WriteString(nl)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line = b[:i+1]
		}
		if !midLine {
			o.buf.WriteString(p.prefix)
		}
		o.buf.Write(line)
		midLine = line[len(line)-1] != '\n'
		b = b[len(line):]
	}
	if o.open = nil; midLine {
		o.open = p
	}
	_, err := o.w.Write(o.buf.Bytes())
	return n, err
}

// end ends the line the worker left unfinished, if it did: its worker has ended.
func (p *prefixWriter) end() {
	o := p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.open == p {
		io.WriteString(o.w, "\n")
		o.open = nil
	}
}

// watchReaderGone calls gone, on a goroutine of its own, when the reader of w goes away: w is a
// pipe or a socket whose other end closed (| head has exited). A write would fail then, but
// map may have nothing to write for long (a slow call, idle input). stop ends the watch and
// waits for its goroutine. Any other w (a file, a terminal) is not watched.
func watchReaderGone(w io.Writer, gone func()) (stop func()) {
	f, ok := w.(*os.File)
	if !ok {
		return func() {}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || (st.Mode&syscall.S_IFMT != syscall.S_IFIFO && st.Mode&syscall.S_IFMT != syscall.S_IFSOCK) {
		return func() {}
	}
	quit, quitW, err := os.Pipe() // its write end closed ends the watch
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		const pollIn, pollErr, pollHup, pollNval = 0x1, 0x8, 0x10, 0x20
		fds := [2]struct {
			fd              int32
			events, revents int16
		}{{fd: int32(f.Fd())}, {fd: int32(quit.Fd()), events: pollIn}} // events 0: errors alone
		for {
			_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), 0, 0, 0, 0)
			switch {
			case errno == syscall.EINTR:
				continue
			case errno != 0 || fds[1].revents != 0:
				return
			case fds[0].revents&(pollErr|pollHup|pollNval) != 0:
				gone()
				return
			}
		}
	}()
	return func() {
		quitW.Close()
		<-done
		quit.Close()
		runtime.KeepAlive(f)
	}
}
