package torgate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate/netstack"
)

// stackCollector mirrors the packet loop's atomic counters at scrape time,
// so the loop itself pays nothing for metrics.
type stackCollector struct {
	s                                      *netstack.Stack
	pktIn, pktOut, bytesIn, bytesOut, drop *prometheus.Desc
	twReclaim                              *prometheus.Desc
	gvTCP                                  *prometheus.Desc
	gvEstablished                          *prometheus.Desc
}

// newStackCollector reports s's counters; kind names the device the
// packet loop reads and writes: "tun" (a TUN, or Config.Device) or "lan"
// (the LAN device: IP packets to and from the workstations, after
// torgate's Ethernet layer; its frames are torgate_lan_*).
func newStackCollector(s *netstack.Stack, kind string) *stackCollector {
	dev := prometheus.Labels{"kind": kind}
	return &stackCollector{
		s:         s,
		pktIn:     prometheus.NewDesc("device_packets_in_total", "IP packets the packet loop read from its device (kind: tun or lan).", nil, dev),
		pktOut:    prometheus.NewDesc("device_packets_out_total", "IP packets the packet loop wrote to its device (kind: tun or lan).", nil, dev),
		bytesIn:   prometheus.NewDesc("device_bytes_in_total", "Bytes of IP packets the packet loop read from its device (kind: tun or lan).", nil, dev),
		bytesOut:  prometheus.NewDesc("device_bytes_out_total", "Bytes of IP packets the packet loop wrote to its device (kind: tun or lan).", nil, dev),
		drop:      prometheus.NewDesc("packets_dropped_total", "Packets dropped, by reason.", []string{"reason"}, nil),
		twReclaim: prometheus.NewDesc("tcp_timewait_reclaimed_total", "SYNs that reused a 4-tuple in TIME_WAIT and got a fresh flow.", nil, nil),
		gvTCP: prometheus.NewDesc("gvisor_tcp_events_total",
			"gVisor's own TCP counters, read at scrape time (netstack.Stack.TCPCounters; gvisor.dev/gvisor/pkg/tcpip TCPStats).", []string{"event"}, nil),
		gvEstablished: prometheus.NewDesc("gvisor_tcp_established", "TCP endpoints gVisor holds in ESTABLISHED or CLOSE-WAIT.", nil, nil),
	}
}

func (c *stackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pktIn, c.pktOut, c.bytesIn, c.bytesOut, c.drop, c.twReclaim, c.gvTCP, c.gvEstablished} {
		ch <- d
	}
}

func (c *stackCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.pktIn, st.PacketsIn.Load())
	counter(c.pktOut, st.PacketsOut.Load())
	counter(c.bytesIn, st.BytesIn.Load())
	counter(c.bytesOut, st.BytesOut.Load())
	for _, r := range netstack.Reasons() {
		counter(c.drop, st.Drops[r].Load(), r.String())
	}
	counter(c.twReclaim, st.TimeWaitReclaimed.Load())
	tcp, established := c.s.TCPCounters()
	for _, e := range tcp {
		counter(c.gvTCP, e.Value, e.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.gvEstablished, prometheus.GaugeValue, float64(established))
}

// Stats are the packet loop's counters, as the metrics report them
// (device_packets_in_total and friends).
type Stats struct {
	PacketsIn, PacketsOut uint64
	BytesIn, BytesOut     uint64
	// TimeWaitReclaimed counts SYNs that reused a 4-tuple in TIME_WAIT
	// and got a fresh flow.
	TimeWaitReclaimed uint64
	// Drops counts dropped packets by reason (packets_dropped_total's
	// labels); reasons that never happened are absent.
	Drops map[string]uint64
}

// Stats reads the packet loop's counters.
func (r *Router) Stats() Stats {
	st := r.stack.Stats()
	out := Stats{
		PacketsIn: st.PacketsIn.Load(), PacketsOut: st.PacketsOut.Load(),
		BytesIn: st.BytesIn.Load(), BytesOut: st.BytesOut.Load(),
		TimeWaitReclaimed: st.TimeWaitReclaimed.Load(),
		Drops:             map[string]uint64{},
	}
	for _, reason := range netstack.Reasons() {
		if n := st.Drops[reason].Load(); n > 0 {
			out.Drops[reason.String()] = n
		}
	}
	return out
}
