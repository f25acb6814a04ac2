package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/pool"
)

var errRead = errors.New("the disk went away")

// failingReader gives data, then errRead.
type failingReader struct{ data *strings.Reader }

func (r failingReader) Read(b []byte) (int, error) {
	n, _ := r.data.Read(b)
	if r.data.Len() == 0 {
		return n, errRead
	}
	return n, nil
}

// A read error part-way through the input ends it after the whole lines read before it: their
// results are written (with the error said after them), a line the error cut short is not one.
func TestMapReadErrorKeepsTheLinesBeforeIt(t *testing.T) {
	p, err := pool.New(pool.Options{Workers: 1})
	require.NoError(t, err)
	defer cpython.Finalize(context.Background()) // the only test that runs Python in this process
	defer p.Close()
	m := &mapper{p: p, target: "json:dumps", window: 4}
	m.sizer.Max = maxRun
	var out bytes.Buffer
	st, err := m.run(context.Background(), failingReader{strings.NewReader("1\n2\n3\n4")}, &out, nil)
	require.ErrorIs(t, err, errRead)
	assert.Contains(t, err.Error(), "after line 3")
	assert.Equal(t, "{\"ok\":\"1\"}\n{\"ok\":\"2\"}\n{\"ok\":\"3\"}\n", out.String())
	assert.Equal(t, 3, st.lines)
}

// watchReaderGone calls gone once the read end of a pipe closes, not before; stop ends a watch
// that saw nothing; other writers are not watched.
func TestWatchReaderGone(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	gone := make(chan struct{})
	stop := watchReaderGone(w, func() { close(gone) })
	select {
	case <-gone:
		t.Fatal("gone while the reader is there")
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, r.Close())
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader's end was not noticed")
	}
	stop()

	r, w2, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w2.Close()
	stop = watchReaderGone(w2, func() { t.Error("gone called with the reader there") })
	stop() // returns, and its goroutine has ended (goleak)

	f, err := os.Create(filepath.Join(t.TempDir(), "results"))
	require.NoError(t, err)
	defer f.Close()
	watchReaderGone(f, func() { t.Error("a file has no reader to lose") })()
	watchReaderGone(&bytes.Buffer{}, func() { t.Error("nor a buffer") })()
}
