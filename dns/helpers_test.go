package dns

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate/internal/testlog"
)

var (
	srcA = netip.MustParseAddr("10.152.152.11") // a Whonix-Workstation
	srcB = netip.MustParseAddr("10.152.152.12")
)

// newServer returns a Server for cfg and closes it when the test ends.
func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// queryOpts are the knobs of buildQuery.
type queryOpts struct {
	id      uint16
	class   dnsmessage.Class // default IN
	noRD    bool
	edns    int // UDP size of an OPT record; 0 = no OPT
	version uint8
	do      bool
}

// buildQuery packs a query for name and qtype.
func buildQuery(t testing.TB, name string, qtype dnsmessage.Type, o queryOpts) []byte {
	t.Helper()
	if o.id == 0 {
		o.id = 0x1234
	}
	if o.class == 0 {
		o.class = dnsmessage.ClassINET
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: o.id, RecursionDesired: !o.noRD})
	must(t, b.StartQuestions())
	must(t, b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: o.class}))
	if o.edns != 0 {
		must(t, b.StartAdditionals())
		var h dnsmessage.ResourceHeader
		must(t, h.SetEDNS0(o.edns, 0, o.do))
		h.TTL |= uint32(o.version) << 16
		must(t, b.OPTResource(h, dnsmessage.OPTResource{}))
	}
	msg, err := b.Finish()
	must(t, err)
	return msg
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ask sends query to s and unpacks the answer.
func ask(t testing.TB, s *Server, src netip.Addr, query []byte, udp bool) *dnsmessage.Message {
	t.Helper()
	resp, err := s.Handle(t.Context(), src, query, udp, nil)
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("unpack response: %v", err)
	}
	if len(query) >= 2 && m.Header.ID != uint16(query[0])<<8|uint16(query[1]) {
		t.Errorf("response ID %#x, query ID %#x", m.Header.ID, query[:2])
	}
	if !m.Header.Response || !m.Header.RecursionAvailable {
		t.Errorf("response header %+v: want QR and RA set", m.Header)
	}
	return &m
}

// askName is ask for a plain query without EDNS over UDP.
func askName(t testing.TB, s *Server, src netip.Addr, name string, qtype dnsmessage.Type) *dnsmessage.Message {
	t.Helper()
	return ask(t, s, src, buildQuery(t, name, qtype, queryOpts{}), true)
}

// answerAddr returns the single A or AAAA answer of m.
func answerAddr(t testing.TB, m *dnsmessage.Message) netip.Addr {
	t.Helper()
	if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 {
		t.Fatalf("want one answer, got rcode %v, %d answers", m.Header.RCode, len(m.Answers))
	}
	switch b := m.Answers[0].Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(b.A)
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(b.AAAA)
	}
	t.Fatalf("answer %v is not an address", m.Answers[0].Body)
	return netip.Addr{}
}

// answerPTR returns the single PTR answer of m.
func answerPTR(t testing.TB, m *dnsmessage.Message) string {
	t.Helper()
	if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 {
		t.Fatalf("want one answer, got rcode %v, %d answers", m.Header.RCode, len(m.Answers))
	}
	p, ok := m.Answers[0].Body.(*dnsmessage.PTRResource)
	if !ok {
		t.Fatalf("answer %v is not a PTR", m.Answers[0].Body)
	}
	return p.PTR.String()
}

// wantRCode fails unless m has the rcode and no answers.
func wantRCode(t testing.TB, m *dnsmessage.Message, rc dnsmessage.RCode) {
	t.Helper()
	if m.Header.RCode != rc {
		t.Errorf("rcode %v, want %v", m.Header.RCode, rc)
	}
	if len(m.Answers) != 0 {
		t.Errorf("%d answers, want none", len(m.Answers))
	}
}

// reverseName returns the in-addr.arpa or ip6.arpa name of ip.
func reverseName(ip netip.Addr) string {
	var sb strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			sb.WriteString(itoa(int(a[i])))
			sb.WriteByte('.')
		}
		sb.WriteString("in-addr.arpa.")
		return sb.String()
	}
	a := ip.As16()
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		sb.WriteByte(hex[a[i]&0xf])
		sb.WriteByte('.')
		sb.WriteByte(hex[a[i]>>4])
		sb.WriteByte('.')
	}
	sb.WriteString("ip6.arpa.")
	return sb.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// fakeResolver is a scripted Resolver that records its calls.
type fakeResolver struct {
	t     testing.TB
	mu    sync.Mutex
	calls []resolveCall
	addr  func(name string) (netip.Addr, error)
	ptr   func(ip netip.Addr) (string, error)
}

type resolveCall struct {
	src  netip.Addr
	name string     // Resolve
	ip   netip.Addr // ResolvePTR
}

var _ Resolver = (*fakeResolver)(nil)

func (f *fakeResolver) Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error) {
	f.mu.Lock()
	f.calls = append(f.calls, resolveCall{src: src, name: name})
	f.mu.Unlock()
	if strings.HasSuffix(name, ".onion") || strings.HasSuffix(name, ".onion.") || name == "onion" {
		f.t.Errorf("Resolver asked for an onion name")
	}
	if f.addr == nil {
		return netip.Addr{}, errors.New("no script")
	}
	return f.addr(name)
}

func (f *fakeResolver) ResolvePTR(ctx context.Context, src netip.Addr, ip netip.Addr) (string, error) {
	f.mu.Lock()
	f.calls = append(f.calls, resolveCall{src: src, ip: ip})
	f.mu.Unlock()
	if f.ptr == nil {
		return "", errors.New("no script")
	}
	return f.ptr(ip)
}

func (f *fakeResolver) Calls() []resolveCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]resolveCall(nil), f.calls...)
}

// notFound is a Resolver error that means NXDOMAIN.
type notFound struct{ name string }

func (e notFound) Error() string  { return "resolve " + e.name + ": host unreachable" }
func (e notFound) NotFound() bool { return true }

// debugLogger returns a Debug-level logger writing to the returned buffer.
func debugLogger() (*slog.Logger, *testlog.Buffer) {
	var lb testlog.Buffer
	return slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug})), &lb
}
