package torgate_test

import (
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/socks/sockstest"
)

// rstCounter counts the TCP resets the router writes towards the
// workstations, before its device closes.
type rstCounter struct {
	tun.Device
	rsts atomic.Int64
}

func (d *rstCounter) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 6 {
			continue
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) >= ihl+14 && pkt[ihl+13]&0x04 != 0 {
			d.rsts.Add(1)
		}
	}
	return d.Device.Write(bufs, offset)
}

// TestCloseResetsOpenFlows: shutting the router down (SIGTERM in cmd)
// ends every open flow with a RST written to the workstations before the
// device closes. Before the fix (2026-12-02) the stack closed first, the
// resets died with it, and clients hung until their own timeouts (issue
// 11: curl waited 120 s after a SIGTERM).
func TestCloseResetsOpenFlows(t *testing.T) {
	var dev *rstCounter
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		dev = &rstCounter{Device: c.Device}
		c.Device = dev
	})
	const flows = 20
	for range flows {
		c, err := f.dial(t, ws1, dst4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := transfer(c, 4096, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := dev.rsts.Load(); n != 0 {
		t.Fatalf("%d resets before shutdown", n)
	}
	if err := f.r.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if n := dev.rsts.Load(); n < flows {
		t.Errorf("%d resets written before the device closed, want at least %d (one per open flow)", n, flows)
	}
}
