package bench_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torgate/torgate/bench"
)

// rawShortFlow is one short connection from a RawPeer: handshake (the
// router dials the SOCKS sink first), 128 bytes to the echo sink, a FIN,
// and the router's FIN after the echo. The peer closes first, so the
// router's gVisor side ends in LAST_ACK and leaves no TIME_WAIT behind.
func rawShortFlow(ctx context.Context, p *bench.RawPeer, msg []byte) error {
	f, err := p.Open(ctx, dstEcho)
	if err != nil {
		return err
	}
	if err := f.Write(ctx, msg); err != nil {
		f.Reset()
		return err
	}
	if err := f.Close(ctx); err != nil {
		return err
	}
	if got := f.Received(); got != uint64(len(msg)) {
		return fmt.Errorf("echo: %d bytes, want %d", got, len(msg))
	}
	return nil
}

// BenchmarkShortFlows is the router's cost per short connection, with no
// workstation stack in the process: one op is one rawShortFlow, from 16
// workers at once. allocs/flow counts every allocation in the process per
// flow: the router's, the in-process SOCKS sink's (an accepted socket and
// a goroutine per connection) and the peer's few (a ticker per Open).
func BenchmarkShortFlows(b *testing.B) {
	p, _ := newRawPeer(b)
	const workers = 16
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	msg := make([]byte, 128)
	// Warm up: pools, the pump workers and the epoll set in place.
	for range 200 {
		if err := rawShortFlow(ctx, p, msg); err != nil {
			b.Fatal(err)
		}
	}
	var next, failed atomic.Int64
	b.ReportAllocs()
	start := time.Now()
	allocs := allocsPerOp(b.N, func() {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					if err := rawShortFlow(ctx, p, msg); err != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "flows/s")
	b.ReportMetric(allocs, "allocs/flow")
	b.ReportMetric(float64(failed.Load()), "failures")
	if failed.Load() > 0 {
		b.Errorf("%d of %d flows failed", failed.Load(), b.N)
	}
}
