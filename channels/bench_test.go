package channels_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pyworkers/pyworkers/channels"
	"github.com/pyworkers/pyworkers/cpython"
	"github.com/pyworkers/pyworkers/internal/measure"
)

func reportPercentiles(b *testing.B, lat []time.Duration) {
	p50, p99 := measure.Percentiles(lat)
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
}

// startEcho runs pwchan.echo(in → out) in a new interpreter until in is closed.
func startEcho(b *testing.B) (in, out *channels.Channel, stop func()) {
	in, out = newChan(b, 0), newChan(b, 0)
	echo := newInterp(b)
	done := make(chan error, 1)
	go func() { _, err := echo.Call(bg, "pwchan:echo", in.ID(), out.ID()); done <- err }()
	return in, out, func() {
		in.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPingPong: one item there and back between two OS threads through two channels.
// python-python is what interpreters see (timed in Python); go-python includes Go's cgo calls.
func BenchmarkPingPong(b *testing.B) {
	b.Run("python-python", func(b *testing.B) {
		in, out, stop := startEcho(b)
		defer stop()
		pinger := newInterp(b)
		b.ResetTimer()
		v, err := pinger.Call(bg, "pwchan:pingpong", in.ID(), out.ID(), b.N)
		if err != nil {
			b.Fatal(err)
		}
		r := v.(cpython.Tuple)
		b.ReportMetric(float64(r[0].(int64)), "p50-ns")
		b.ReportMetric(float64(r[1].(int64)), "p99-ns")
	})
	b.Run("go-python", func(b *testing.B) {
		in, out, stop := startEcho(b)
		defer stop()
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		for k := 0; b.Loop(); k++ {
			t0 := time.Now()
			if err := in.Send(bg, k); err != nil {
				b.Fatal(err)
			}
			if _, err := out.Recv(bg); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportPercentiles(b, lat)
	})
}

// BenchmarkThroughput: small items (ints) from one producer to one consumer.
func BenchmarkThroughput(b *testing.B) {
	b.Run("python-python", func(b *testing.B) { pythonToPython(b, "pwchan:produce", "pwchan:consume") })
	// send_many / recv_many: one lock acquisition per batch instead of per item
	b.Run("python-python-batched", func(b *testing.B) {
		pythonToPython(b, "pwchan:produce_batched", "pwchan:consume_batched")
	})
	b.Run("go-go", func(b *testing.B) {
		goToGo(b,
			func(c *channels.Channel, sent int) (int, error) { return 1, c.Send(bg, sent) },
			func(c *channels.Channel) (int, error) { _, err := c.Recv(bg); return 1, err })
	})
}

// BenchmarkThroughputGoBatched: SendMany / RecvMany between two goroutines.
func BenchmarkThroughputGoBatched(b *testing.B) {
	batch := make([]any, 64)
	goToGo(b,
		func(c *channels.Channel, sent int) (int, error) {
			batch = batch[:min(64, b.N-sent)]
			for k := range batch {
				batch[k] = sent + k
			}
			return c.SendMany(bg, batch)
		},
		func(c *channels.Channel) (int, error) { vs, err := c.RecvMany(bg, 256); return len(vs), err })
}

// goToGo moves b.N ints between two goroutines through a bounded channel with send and recv
// (each returns how many items it moved) and reports items per second.
func goToGo(b *testing.B, send func(c *channels.Channel, sent int) (int, error), recv func(*channels.Channel) (int, error)) {
	c := newChan(b, 1024)
	done := make(chan int)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		n := 0
		for {
			k, err := recv(c)
			if err != nil {
				break
			}
			n += k
		}
		done <- n
	}()
	for sent := 0; sent < b.N; {
		k, err := send(c, sent)
		if err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	c.Close()
	if n := <-done; n != b.N {
		b.Fatalf("received %d of %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// pythonToPython sends b.N ints from one interpreter (produce) to another (consume) through a
// bounded channel and reports items per second.
func pythonToPython(b *testing.B, produce, consume string) {
	c := newChan(b, 1024)
	producer, consumer := newInterp(b), newInterp(b)
	got := make(chan cpython.Tuple, 1)
	b.ResetTimer()
	go func() {
		v, err := consumer.Call(bg, consume, c.ID())
		if err != nil {
			b.Error(err)
		}
		got <- v.(cpython.Tuple)
	}()
	if _, err := producer.Call(bg, produce, c.ID(), b.N); err != nil {
		b.Fatal(err)
	}
	r := <-got
	b.StopTimer()
	if r[0].(int64) != int64(b.N) {
		b.Fatalf("received %d of %d", r[0], b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkPayload: a shared buffer from Go through a Python echo and back. No copy is made,
// so the time does not depend on the size.
func BenchmarkPayload(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1MiB", 1 << 20}, {"64MiB", 64 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			buf, err := cpython.NewBuffer(size.n)
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Release()
			in, out, stop := startEcho(b)
			defer stop()
			b.SetBytes(int64(size.n))
			for b.Loop() {
				if err := in.Send(bg, buf); err != nil {
					b.Fatal(err)
				}
				v, err := out.Recv(bg)
				if err != nil {
					b.Fatal(err)
				}
				back := v.(*cpython.Buffer)
				if &back.Bytes()[0] != &buf.Bytes()[0] {
					b.Fatal("the buffer came back as a copy")
				}
				back.Release()
			}
		})
	}
}

// BenchmarkOpen: Open by id (what pyworkers.Channel(id) does in Python) of the oldest of N live
// channels, and Release: the registry's cost as channels pile up.
func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			live := make([]*channels.Channel, n)
			for k := range live {
				live[k] = newChan(b, 0)
			}
			defer func() {
				for _, c := range live {
					c.Release()
				}
			}()
			id := live[0].ID()
			for b.Loop() {
				c, err := channels.Open(id)
				if err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
	}
}
