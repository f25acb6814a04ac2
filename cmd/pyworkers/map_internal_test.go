package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

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
