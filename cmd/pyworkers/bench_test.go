package main_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/pyworkers/pyworkers/internal/measure"
)

func vmRSSMiB(pid int) float64 {
	rss, _ := measure.RSS(pid) // 0 once the process has gone
	return float64(rss) / (1 << 20)
}

// BenchmarkMapMillionLines: `pyworkers map -w 2` of a trivial function over 1,000,000 input
// lines, through the built binary; reports lines/s and the process's RSS after 10,000 lines and
// at the end (memory must stay flat).
func BenchmarkMapMillionLines(b *testing.B) {
	const lines = 1_000_000
	dir := b.TempDir()
	if err := os.WriteFile(dir+"/ident.py", []byte("def f(x):\n    return x\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cmd := exec.Command(binary, "map", "-w", "2", "--progress", "never", dir+"/ident.py:f")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		go func() {
			w := bufio.NewWriter(stdin)
			for k := range lines {
				fmt.Fprintf(w, "{\"id\": %d, \"text\": \"line %d\"}\n", k, k)
			}
			w.Flush()
			stdin.Close()
		}()
		start := time.Now()
		r := bufio.NewReader(stdout)
		var rss10k, rssEnd float64
		n := 0
		for {
			if _, err := r.ReadSlice('\n'); err != nil {
				break
			}
			n++
			switch n {
			case 10_000:
				rss10k = vmRSSMiB(cmd.Process.Pid)
			case lines - 10_000:
				rssEnd = vmRSSMiB(cmd.Process.Pid)
			}
		}
		el := time.Since(start)
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		if n != lines {
			b.Fatalf("%d result lines for %d inputs", n, lines)
		}
		b.ReportMetric(float64(lines)/el.Seconds(), "lines/s")
		b.ReportMetric(rss10k, "rss-at-10k-MiB")
		b.ReportMetric(rssEnd, "rss-at-end-MiB")
	}
}
