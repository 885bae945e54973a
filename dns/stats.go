package dns

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/torgate/torgate/internal/dest"
	"golang.org/x/net/dns/dnsmessage"
)

// Kind classifies a query by its question type, for counting. It is a
// bounded set: names and addresses never become labels.
type Kind uint8

// Query kinds.
const (
	KindNone  Kind = iota // no usable question (dropped, FORMERR, NOTIMP opcode)
	KindA                 // A
	KindAAAA              // AAAA
	KindPTR               // PTR
	KindHTTPS             // HTTPS and SVCB
	KindOther             // every other type
	numKinds
)

var kindNames = [numKinds]string{"none", "a", "aaaa", "ptr", "https", "other"}

// String returns the metric label value of k.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "invalid"
}

func kindOf(t dnsmessage.Type) Kind {
	switch t {
	case dnsmessage.TypeA:
		return KindA
	case dnsmessage.TypeAAAA:
		return KindAAAA
	case dnsmessage.TypePTR:
		return KindPTR
	case dnsmessage.TypeHTTPS, dnsmessage.TypeSVCB:
		return KindHTTPS
	}
	return KindOther
}

// Result is how a query ended.
type Result uint8

// Query results.
const (
	ResultAnswered Result = iota // NOERROR with an answer
	ResultNoData                 // NOERROR without an answer
	ResultNXDomain               // NXDOMAIN
	ResultServFail               // SERVFAIL: not ready, resolver error, table exhausted
	ResultFormErr                // FORMERR
	ResultNotImp                 // NOTIMP: opcode, class or type we don't serve
	ResultBadVers                // BADVERS: EDNS version other than 0
	ResultDropped                // no response (ErrDrop)
	numResults
)

var resultNames = [numResults]string{"answered", "nodata", "nxdomain", "servfail", "formerr", "notimp", "badvers", "dropped"}

// String returns the metric label value of r.
func (r Result) String() string {
	if r < numResults {
		return resultNames[r]
	}
	return "invalid"
}

// counters are the Server's hot-path counters.
type counters struct {
	queries       [numKinds][numResults]atomic.Uint64
	truncated     atomic.Uint64
	resolveErrors atomic.Uint64
	resolveBusy   atomic.Uint64
	forbidden     [dest.NumReasons]atomic.Uint64
	messages      atomic.Uint64
	refused       [numTransports][numRefusals]atomic.Uint64
}

func (c *counters) count(k Kind, r Result) {
	c.queries[k][r].Add(1)
}

// Stats is a snapshot of a Server's counters and table.
type Stats struct {
	// Queries counts queries by kind and result: Queries[KindA][ResultAnswered].
	Queries [numKinds][numResults]uint64
	// Truncated counts UDP answers sent with TC set.
	Truncated uint64
	// ResolveErrors counts Resolver failures answered with SERVFAIL,
	// including unusable answers (virtual, loopback, malformed names).
	ResolveErrors uint64
	// ResolveBusy counts queries refused because MaxResolves calls were
	// already in flight.
	ResolveBusy uint64
	// Forbidden counts queries for IP literal names answered NXDOMAIN, and
	// resolve-mode answers refused, because the address is forbidden
	// (Config.Forbidden), by reason.
	Forbidden [dest.NumReasons]uint64
	// Messages counts the messages ServeDatagram and ServeTCP passed to
	// Handle (UDP queries admitted, and every query on a TCP/53
	// connection).
	Messages uint64
	// Refused counts UDP queries dropped and TCP/53 connections rejected
	// because the workstation's share or the pool was full:
	// Refused[TransportUDP][RefusedShare].
	Refused [numTransports][numRefusals]uint64
	// Recycled counts automap entries evicted to make room (LRU).
	Recycled uint64
	// Exhausted counts automap allocations refused because every entry
	// that could be recycled was pinned, or the epoch file could not be
	// written.
	Exhausted uint64
	// UnprovenRefused counts automap allocations refused to unproven
	// sources (Config.Proven): their share was full and every entry they
	// may recycle was pinned.
	UnprovenRefused uint64
	// Entries and Pinned describe the automap table now; Unproven is the
	// part of Entries held by unproven sources (at most
	// Config.MaxUnprovenEntries).
	Entries, Pinned, Unproven int
}

// Total returns the number of queries with result r, over all kinds.
func (st *Stats) Total(r Result) uint64 {
	var n uint64
	for k := range st.Queries {
		n += st.Queries[k][r]
	}
	return n
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	var st Stats
	for k := range st.Queries {
		for r := range st.Queries[k] {
			st.Queries[k][r] = s.stats.queries[k][r].Load()
		}
	}
	st.Truncated = s.stats.truncated.Load()
	st.ResolveErrors = s.stats.resolveErrors.Load()
	st.ResolveBusy = s.stats.resolveBusy.Load()
	for r := range st.Forbidden {
		st.Forbidden[r] = s.stats.forbidden[r].Load()
	}
	st.Messages = s.stats.messages.Load()
	for t := range st.Refused {
		for r := range st.Refused[t] {
			st.Refused[t][r] = s.stats.refused[t][r].Load()
		}
	}
	s.tab.mu.Lock()
	st.Recycled, st.Exhausted, st.UnprovenRefused = s.tab.recycled, s.tab.exhausted, s.tab.unprovenRefused
	st.Entries, st.Pinned, st.Unproven = s.tab.len(), s.tab.pinned, s.tab.held[classUnproven]
	s.tab.mu.Unlock()
	return st
}

// Metrics returns the Server's Prometheus collectors. They read Stats at
// scrape time, so they cost the query path nothing. Register them under a
// prefix, e.g. prometheus.WrapRegistererWithPrefix("torgate_", reg). Labels
// are Kind and Result values only.
func (s *Server) Metrics() []prometheus.Collector {
	return []prometheus.Collector{&collector{s: s}}
}

var (
	descQueries = prometheus.NewDesc("dns_queries_total",
		"DNS queries by question type class and result.", []string{"qtype", "result"}, nil)
	descTruncated = prometheus.NewDesc("dns_truncated_total",
		"UDP DNS answers sent with the TC bit.", nil, nil)
	descResolveErrors = prometheus.NewDesc("dns_resolve_errors_total",
		"Resolver failures answered with SERVFAIL.", nil, nil)
	descResolveBusy = prometheus.NewDesc("dns_resolve_busy_total",
		"Queries refused because too many Resolver calls were in flight.", nil, nil)
	descForbidden = prometheus.NewDesc("dns_forbidden_total",
		"IP literal names and resolved answers refused because the address is a forbidden destination, by reason.",
		[]string{"reason"}, nil)
	// dns_messages_total kept its name and help when it moved here from
	// the router's packet-loop collector.
	descMessages = prometheus.NewDesc("dns_messages_total",
		"DNS messages intercepted (UDP and TCP).", nil, nil)
	descRefused = prometheus.NewDesc("dns_refused_total",
		"UDP DNS queries dropped and TCP/53 connections reset because the workstation's share or the pool was full.",
		[]string{"transport", "reason"}, nil)
	descRecycled = prometheus.NewDesc("dns_automap_recycled_total",
		"Automap entries evicted to make room.", nil, nil)
	descExhausted = prometheus.NewDesc("dns_automap_exhausted_total",
		"Automap allocations refused because every entry that could be recycled was pinned, or the epoch file could not be written.", nil, nil)
	descUnprovenRefused = prometheus.NewDesc("dns_automap_unproven_refused_total",
		"Automap allocations refused to unproven sources: their share full, every entry they may recycle pinned.", nil, nil)
	descEntries = prometheus.NewDesc("dns_automap_entries",
		"Entries in the automap table.", nil, nil)
	descPinned = prometheus.NewDesc("dns_automap_pinned",
		"Automap entries pinned by flows.", nil, nil)
	descUnproven = prometheus.NewDesc("dns_automap_unproven",
		"Automap entries held by sources not proven to receive our packets.", nil, nil)
)

// collector exports Stats.
type collector struct{ s *Server }

var _ prometheus.Collector = (*collector)(nil)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueries, descTruncated, descResolveErrors,
		descResolveBusy, descForbidden, descMessages, descRefused, descRecycled, descExhausted, descUnprovenRefused,
		descEntries, descPinned, descUnproven} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for k := range numKinds {
		for r := range numResults {
			ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue,
				float64(st.Queries[k][r]), k.String(), r.String())
		}
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(descTruncated, st.Truncated)
	counter(descResolveErrors, st.ResolveErrors)
	counter(descResolveBusy, st.ResolveBusy)
	for r := dest.ReasonAllowed + 1; r < dest.NumReasons; r++ {
		ch <- prometheus.MustNewConstMetric(descForbidden, prometheus.CounterValue,
			float64(st.Forbidden[r]), r.String())
	}
	counter(descMessages, st.Messages)
	for t := range numTransports {
		for r := range numRefusals {
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue,
				float64(st.Refused[t][r]), t.String(), r.String())
		}
	}
	counter(descRecycled, st.Recycled)
	counter(descExhausted, st.Exhausted)
	counter(descUnprovenRefused, st.UnprovenRefused)
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, float64(st.Pinned))
	ch <- prometheus.MustNewConstMetric(descUnproven, prometheus.GaugeValue, float64(st.Unproven))
}

// rateLimit lets one event through per interval; for warnings that a busy
// workstation could otherwise repeat thousands of times a second.
type rateLimit struct {
	every time.Duration
	last  atomic.Int64 // UnixNano of the last allowed event
}

func (l *rateLimit) allow(now time.Time) bool {
	t := now.UnixNano()
	last := l.last.Load()
	if last != 0 && t-last < int64(l.every) {
		return false
	}
	return l.last.CompareAndSwap(last, t)
}
