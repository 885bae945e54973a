package dns

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/torgate/torgate/internal/dest"
	"golang.org/x/net/dns/dnsmessage"
)

func TestMetrics(t *testing.T) {
	s := newServer(t, Config{MaxEntries: 1})
	mapName(t, s, "a.example")
	mapName(t, s, "b.example") // recycles a
	askName(t, s, srcA, "example.com.", dnsmessage.TypeMX)
	s.Handle(t.Context(), srcA, []byte{1, 2, 3}, true, nil)

	reg := prometheus.NewPedanticRegistry()
	must(t, prometheus.WrapRegistererWithPrefix("torgate_", reg).Register(s.Metrics()[0]))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v, %v", problems, err)
	}
	if n := testutil.CollectAndCount(s.Metrics()[0]); n != int(numKinds)*int(numResults)+10+int(numTransports)*int(numRefusals)+int(dest.NumReasons)-1 {
		t.Errorf("%d metrics", n)
	}
	want := `
# HELP torgate_dns_automap_entries Entries in the automap table.
# TYPE torgate_dns_automap_entries gauge
torgate_dns_automap_entries 1
# HELP torgate_dns_automap_recycled_total Automap entries evicted to make room.
# TYPE torgate_dns_automap_recycled_total counter
torgate_dns_automap_recycled_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"torgate_dns_automap_entries", "torgate_dns_automap_recycled_total"); err != nil {
		t.Error(err)
	}
	st := s.Stats()
	if st.Queries[KindA][ResultAnswered] != 2 || st.Queries[KindOther][ResultNotImp] != 1 ||
		st.Queries[KindNone][ResultDropped] != 1 || st.Total(ResultAnswered) != 2 {
		t.Errorf("stats %+v", st)
	}
	// Labels come from fixed sets only.
	for k := range numKinds {
		if k.String() == "invalid" {
			t.Errorf("kind %d has no name", k)
		}
	}
	for r := range numResults {
		if r.String() == "invalid" {
			t.Errorf("result %d has no name", r)
		}
	}
	for tr := range numTransports {
		if tr.String() == "invalid" {
			t.Errorf("transport %d has no name", tr)
		}
	}
	for r := range numRefusals {
		if r.String() == "invalid" {
			t.Errorf("refusal %d has no name", r)
		}
	}
}

func TestRateLimit(t *testing.T) {
	l := rateLimit{every: time.Minute}
	t0 := time.Unix(1000, 0)
	if !l.allow(t0) || l.allow(t0.Add(time.Second)) || !l.allow(t0.Add(time.Minute)) {
		t.Errorf("rate limit wrong")
	}
}
