package onion

import "github.com/prometheus/client_golang/prometheus"

// Metric names carry no prefix: register them through
// prometheus.WrapRegistererWithPrefix("torgate_", reg). Labels come from
// bounded sets; no address is ever a label.
var (
	descConns = prometheus.NewDesc("onion_connections_total",
		"Connections from Tor to an onion service's socket, by outcome: relayed to the target, over_limit (closed at once: MaxConns or the service's share), dial_failed (the target refused or did not answer).",
		[]string{"result"}, nil)
	descActive = prometheus.NewDesc("onion_connections_active",
		"Connections being relayed between Tor and a workstation.", nil, nil)
	descBytes = prometheus.NewDesc("onion_relayed_bytes_total",
		"Bytes relayed by finished onion connections, by direction (to_workstation, to_tor).",
		[]string{"direction"}, nil)
	descLive = prometheus.NewDesc("onion_services_live",
		"Onion services Tor accepted on the current control connection.", nil, nil)
	descServices = prometheus.NewDesc("onion_services",
		"Onion services configured.", nil, nil)
	descAdds = prometheus.NewDesc("onion_add_total",
		"ADD_ONION commands by outcome (ok, refused), one per service per control connection.",
		[]string{"result"}, nil)
	descAcceptErrors = prometheus.NewDesc("onion_accept_errors_total",
		"Failed accepts on the services' sockets (out of file descriptors).", nil, nil)
)

// Metrics returns the Server's collectors.
func (s *Server) Metrics() []prometheus.Collector { return []prometheus.Collector{collector{s}} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descActive, descBytes, descLive, descServices, descAdds, descAcceptErrors} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := &c.s.stats
	for r := range numResults {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.CounterValue, float64(st.result[r].Load()), resultNames[r])
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.active.Load()))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.bytesIn.Load()), "to_workstation")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.bytesOut.Load()), "to_tor")
	live := 0
	svcs := c.s.Services()
	for _, v := range svcs {
		if v.Live {
			live++
		}
	}
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(live))
	ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(len(svcs)))
	ch <- prometheus.MustNewConstMetric(descAdds, prometheus.CounterValue, float64(st.added.Load()), "ok")
	ch <- prometheus.MustNewConstMetric(descAdds, prometheus.CounterValue, float64(st.addFailed.Load()), "refused")
	ch <- prometheus.MustNewConstMetric(descAcceptErrors, prometheus.CounterValue, float64(st.acceptErrors.Load()))
}
