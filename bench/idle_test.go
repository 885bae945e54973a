package bench_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/torgate/torgate/bench"
)

// TestIdleFlowsHoldNoGoroutines: once a flow is quiet, the relay holds no
// goroutine for it (nor a buffer): both directions wait on notifications
// (gVisor's waiter queue, epoll on the upstream socket). A relay that
// parks a goroutine per direction would show two per flow here.
func TestIdleFlowsHoldNoGoroutines(t *testing.T) {
	const n = 400
	p, r := newRawPeer(t)
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	base := runtime.NumGoroutine()
	flows := make([]*bench.RawFlow, 0, n)
	defer func() {
		for _, f := range flows {
			f.Reset()
		}
	}()
	payload := make([]byte, 1000)
	for range n {
		f, err := p.Open(ctx, dstPark)
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, f)
		// Some traffic first, so each flow has run a pump and gone idle
		// again, not just never started one.
		if err := f.Write(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	// The pumps end once the sink's socket took the bytes. A few
	// goroutines belong to the tunnel, not to flows: the epoll loop and
	// up to 2 x GOMAXPROCS pump workers waiting for work (2 s at most).
	var got int
	for range 100 {
		got = runtime.NumGoroutine() - base
		if got <= n/20 {
			t.Logf("%d idle flows hold %d goroutines", n, got)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d idle flows hold %d goroutines, want none per flow", n, got)
}
