package torgate_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestMetrics drives traffic, then checks the counters move, the
// exposition passes client_golang's linter, and no label value is an
// address or a name.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		c.Registerer = prometheus.WrapRegistererWithPrefix("torgate_", reg)
	}, ws1)
	conn, err := f.dial(t, ws1, dst4)
	if err != nil {
		t.Fatal(err)
	}
	if err := transfer(conn, 1<<20, 3); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// Relayed bytes are counted when the flow ends, just after the close.
	waitFor(t, func() bool {
		n, err := testutil.GatherAndCount(reg, "torgate_flows_active")
		if err != nil || n == 0 {
			return false
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "torgate_flows_active" {
				return mf.GetMetric()[0].GetGauge().GetValue() == 0
			}
		}
		return false
	})

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "torgate_device_") {
			if l := mf.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetName() != "kind" || l[0].GetValue() != "tun" {
				t.Errorf("%s labels %v, want kind=\"tun\" on a TUN", mf.GetName(), l)
			}
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if _, err := netip.ParseAddr(v); err == nil {
					t.Errorf("%s: label %s=%q is an address", mf.GetName(), lp.GetName(), v)
				}
				if _, err := netip.ParseAddrPort(v); err == nil {
					t.Errorf("%s: label %s=%q is an address", mf.GetName(), lp.GetName(), v)
				}
				if strings.Contains(v, ".") || strings.Contains(v, ":") {
					t.Errorf("%s: label %s=%q looks like a name or address", mf.GetName(), lp.GetName(), v)
				}
			}
			switch {
			case m.GetCounter() != nil:
				values[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				values[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				values[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for _, name := range []string{
		"torgate_device_packets_in_total", "torgate_device_packets_out_total",
		"torgate_device_bytes_in_total", "torgate_device_bytes_out_total",
		"torgate_flows_total", "torgate_flow_setup_seconds", "torgate_flow_bytes_total",
		"torgate_gvisor_tcp_events_total",
	} {
		if values[name] == 0 {
			t.Errorf("%s is zero or missing after a transfer", name)
		}
	}
}
