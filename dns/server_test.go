package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestAutomapStableAndInPool(t *testing.T) {
	s := newServer(t, Config{})
	a1 := answerAddr(t, askName(t, s, srcA, "example.com.", dnsmessage.TypeA))
	a2 := answerAddr(t, askName(t, s, srcB, "example.com.", dnsmessage.TypeA))
	v6 := answerAddr(t, askName(t, s, srcA, "example.com.", dnsmessage.TypeAAAA))
	other := answerAddr(t, askName(t, s, srcA, "example.org.", dnsmessage.TypeA))
	if a1 == a2 {
		// Workstations are strangers: one's answer must be useless to
		// another (issue 11).
		t.Errorf("two sources share the address %v for one name", a1)
	}
	if !DefaultPool4.Contains(a1) || !DefaultPool6.Contains(v6) {
		t.Errorf("answers %v, %v outside the pools", a1, v6)
	}
	if [4]byte(v6.AsSlice()[12:]) != a1.As4() {
		t.Errorf("AAAA %v does not carry A %v in its low 32 bits", v6, a1)
	}
	if other == a1 {
		t.Errorf("two names share %v", a1)
	}
	if a := a1.As4(); a[3] == 0 || a[3] == 255 {
		t.Errorf("handed out %v", a1)
	}
	if s.Len() != 3 {
		t.Errorf("Len = %d, want 3 (two sources' example.com, A's example.org)", s.Len())
	}
	m := askName(t, s, srcA, "example.com.", dnsmessage.TypeA)
	if ttl := m.Answers[0].Header.TTL; ttl != uint32(DefaultTTL/time.Second) {
		t.Errorf("TTL %d, want %v", ttl, DefaultTTL)
	}
	if !m.Header.RecursionDesired {
		t.Errorf("RD not copied")
	}
	m = ask(t, s, srcA, buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{id: 7, noRD: true}), true)
	if m.Header.RecursionDesired || m.Header.ID != 7 {
		t.Errorf("header %+v: want ID 7, RD clear", m.Header)
	}
	for name, virtual := range map[netip.Addr]bool{a1: true, v6: true, other: true} {
		if got, v, ok := s.Lookup(srcA, name); !ok || !v != !virtual || (got != "example.com" && got != "example.org") {
			t.Errorf("Lookup(%v) = %q, %v, %v", name, got, v, ok)
		}
	}
}

func TestCaseInsensitive(t *testing.T) {
	s := newServer(t, Config{})
	m1 := askName(t, s, srcA, "ExAmPle.COM.", dnsmessage.TypeA)
	m2 := askName(t, s, srcA, "example.com.", dnsmessage.TypeA)
	if a, b := answerAddr(t, m1), answerAddr(t, m2); a != b {
		t.Errorf("case changes the address: %v, %v", a, b)
	}
	if q := m1.Questions[0].Name.String(); q != "ExAmPle.COM." {
		t.Errorf("question echoed as %q", q)
	}
	if n := m1.Answers[0].Header.Name.String(); n != "ExAmPle.COM." {
		t.Errorf("answer owner %q, want the question as asked", n)
	}
	name, _, _ := s.Lookup(srcA, answerAddr(t, m1))
	if name != "example.com" {
		t.Errorf("Lookup = %q, want normalized example.com", name)
	}
	if s.Len() != 1 {
		t.Errorf("Len = %d, want 1", s.Len())
	}
}

func TestPTR(t *testing.T) {
	for _, mode := range []Mode{ModeAutomap, ModeResolve} {
		t.Run(mode.String(), func(t *testing.T) {
			fr := &fakeResolver{t: t, addr: func(string) (netip.Addr, error) {
				return netip.MustParseAddr("192.0.2.1"), nil
			}, ptr: func(ip netip.Addr) (string, error) {
				return "Host.Example.NET.", nil
			}}
			s := newServer(t, Config{Mode: mode, Resolver: fr})
			v4 := answerAddr(t, askName(t, s, srcA, "abcdefghijklmnopabcdefghijklmnopabcdefghijklmnopabcdefgh.onion.", dnsmessage.TypeA))
			v6 := answerAddr(t, askName(t, s, srcA, "abcdefghijklmnopabcdefghijklmnopabcdefghijklmnopabcdefgh.onion.", dnsmessage.TypeAAAA))
			for _, ip := range []netip.Addr{v4, v6} {
				m := askName(t, s, srcA, reverseName(ip), dnsmessage.TypePTR)
				if got := answerPTR(t, m); got != "abcdefghijklmnopabcdefghijklmnopabcdefghijklmnopabcdefgh.onion." {
					t.Errorf("PTR %v = %q", ip, got)
				}
			}
			// Upper-case reverse names work too.
			m := askName(t, s, srcA, strings.ToUpper(reverseName(v6)), dnsmessage.TypePTR)
			answerPTR(t, m)

			for _, ip := range []string{"10.192.255.254", "fd9d:7a2b:5c1e::ac0:ff01", "fd9d:7a2b:5c1e:0:1::1"} {
				wantRCode(t, askName(t, s, srcA, reverseName(netip.MustParseAddr(ip)), dnsmessage.TypePTR), dnsmessage.RCodeNameError)
			}
			for _, ip := range []string{"127.0.0.1", "::1"} {
				if got := answerPTR(t, askName(t, s, srcA, reverseName(netip.MustParseAddr(ip)), dnsmessage.TypePTR)); got != "localhost." {
					t.Errorf("PTR %s = %q", ip, got)
				}
			}
			for _, name := range []string{"1.2.3.in-addr.arpa.", "01.2.3.4.in-addr.arpa.", "256.2.3.4.in-addr.arpa.", "example.com.", "x.1.2.3.4.in-addr.arpa.", "0.ip6.arpa."} {
				wantRCode(t, askName(t, s, srcA, name, dnsmessage.TypePTR), dnsmessage.RCodeNameError)
			}
			// Private and link-local addresses never go out, in either mode.
			for _, ip := range []string{"192.168.1.1", "10.0.0.1", "fe80::1", "fd00::1"} {
				wantRCode(t, askName(t, s, srcA, reverseName(netip.MustParseAddr(ip)), dnsmessage.TypePTR), dnsmessage.RCodeNameError)
			}
			global := netip.MustParseAddr("198.51.100.7")
			m = askName(t, s, srcB, reverseName(global), dnsmessage.TypePTR)
			calls := fr.Calls()
			if mode == ModeAutomap {
				wantRCode(t, m, dnsmessage.RCodeNameError)
				if len(calls) != 0 {
					t.Errorf("automap mode called the Resolver: %+v", calls)
				}
				return
			}
			if got := answerPTR(t, m); got != "Host.Example.NET." {
				t.Errorf("PTR %v = %q", global, got)
			}
			if len(calls) != 1 || calls[0].ip != global || calls[0].src != srcB {
				t.Errorf("Resolver calls %+v, want one ResolvePTR(%v) from %v", calls, global, srcB)
			}
		})
	}
}

func TestResolveMode(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::10")
	script := map[string]func() (netip.Addr, error){
		"v4.example":      func() (netip.Addr, error) { return v4, nil },
		"v6.example":      func() (netip.Addr, error) { return v6, nil },
		"mapped.example":  func() (netip.Addr, error) { return netip.AddrFrom16(v4.As16()), nil },
		"missing.example": func() (netip.Addr, error) { return netip.Addr{}, notFound{"missing.example"} },
		"wrapped.example": func() (netip.Addr, error) {
			return netip.Addr{}, errors.Join(errors.New("x"), notFound{"wrapped.example"})
		},
		"broken.example":   func() (netip.Addr, error) { return netip.Addr{}, errors.New("general SOCKS server failure") },
		"virtual.example":  func() (netip.Addr, error) { return netip.MustParseAddr("10.192.0.1"), nil },
		"loopback.example": func() (netip.Addr, error) { return netip.MustParseAddr("127.0.0.1"), nil },
		"zero.example":     func() (netip.Addr, error) { return netip.Addr{}, nil },
	}
	fr := &fakeResolver{t: t, addr: func(name string) (netip.Addr, error) {
		f, ok := script[name]
		if !ok {
			t.Errorf("unexpected Resolve(%q)", name)
			return netip.Addr{}, errors.New("unexpected")
		}
		return f()
	}}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: fr})
	tests := []struct {
		name  string
		qtype dnsmessage.Type
		rcode dnsmessage.RCode
		want  netip.Addr // zero: no answer
	}{
		{name: "V4.Example.", qtype: dnsmessage.TypeA, want: v4},
		{name: "v4.example.", qtype: dnsmessage.TypeAAAA},
		{name: "v6.example.", qtype: dnsmessage.TypeAAAA, want: v6},
		{name: "v6.example.", qtype: dnsmessage.TypeA},
		{name: "mapped.example.", qtype: dnsmessage.TypeA, want: v4},
		{name: "missing.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		{name: "wrapped.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		{name: "broken.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeServerFailure},
		{name: "virtual.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeServerFailure},
		{name: "loopback.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeServerFailure},
		{name: "zero.example.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeServerFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.qtype.String(), func(t *testing.T) {
			before := len(fr.Calls())
			m := askName(t, s, srcB, tt.name, tt.qtype)
			if tt.want.IsValid() {
				if got := answerAddr(t, m); got != tt.want {
					t.Errorf("answer %v, want %v", got, tt.want)
				}
			} else {
				wantRCode(t, m, tt.rcode)
			}
			calls := fr.Calls()[before:]
			if len(calls) != 1 || calls[0].src != srcB || calls[0].name != strings.ToLower(strings.TrimSuffix(tt.name, ".")) {
				t.Errorf("Resolver calls %+v, want one for %q from %v", calls, tt.name, srcB)
			}
		})
	}
	if s.Len() != 0 {
		t.Errorf("resolve mode filled the table: Len = %d", s.Len())
	}
	if st := s.Stats(); st.ResolveErrors != 4 {
		t.Errorf("ResolveErrors = %d, want 4", st.ResolveErrors)
	}
}

func TestOnionAlwaysAutomapped(t *testing.T) {
	fr := &fakeResolver{t: t}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: fr})
	const onion = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion."
	for _, name := range []string{onion, "WWW." + strings.ToUpper(onion)} {
		for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			ip := answerAddr(t, askName(t, s, srcA, name, qt))
			if !s.IsVirtual(ip) {
				t.Errorf("%s %v = %v: not virtual", name, qt, ip)
			}
			got, _, ok := s.Lookup(srcA, ip)
			if !ok || got != strings.ToLower(strings.TrimSuffix(name, ".")) {
				t.Errorf("Lookup(%v) = %q, %v", ip, got, ok)
			}
		}
	}
	if calls := fr.Calls(); len(calls) != 0 {
		t.Errorf("Resolver called: %+v", calls)
	}
}

func TestNamePolicy(t *testing.T) {
	for _, mode := range []Mode{ModeAutomap, ModeResolve} {
		t.Run(mode.String(), func(t *testing.T) {
			fr := &fakeResolver{t: t}
			s := newServer(t, Config{Mode: mode, Resolver: fr})
			for _, name := range []string{"localhost.", "LocalHost.", "foo.localhost."} {
				if ip := answerAddr(t, askName(t, s, srcA, name, dnsmessage.TypeA)); ip != netip.MustParseAddr("127.0.0.1") {
					t.Errorf("%s A = %v", name, ip)
				}
				if ip := answerAddr(t, askName(t, s, srcA, name, dnsmessage.TypeAAAA)); ip != netip.IPv6Loopback() {
					t.Errorf("%s AAAA = %v", name, ip)
				}
			}
			blocked := []string{
				"wpad.", "printer.", "onion.", "com.", ".",
				"www.example.com.$fingerprint.exit.", "foo.exit.", "EXIT.",
				"printer.local.", "x.invalid.", "router.internal.", "nas.home.arpa.",
				"1.0.0.127.in-addr.arpa.", "example.arpa.",
				"bad name.example.", "b\x00d.example.", "caf\xc3\xa9.example.", "a*.example.",
			}
			for _, name := range blocked {
				for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeHTTPS} {
					wantRCode(t, askName(t, s, srcA, name, qt), dnsmessage.RCodeNameError)
				}
			}
			if calls := fr.Calls(); len(calls) != 0 {
				t.Errorf("Resolver called: %+v", calls)
			}
			if s.Len() != 0 {
				t.Errorf("table has %d entries", s.Len())
			}
			// Underscores and hyphens are fine.
			if mode == ModeAutomap {
				answerAddr(t, askName(t, s, srcA, "_a-b.example.", dnsmessage.TypeA))
			}
		})
	}
}

func TestQueryTypes(t *testing.T) {
	s := newServer(t, Config{})
	for _, qt := range []dnsmessage.Type{dnsmessage.TypeHTTPS, dnsmessage.TypeSVCB} {
		m := askName(t, s, srcA, "example.com.", qt)
		wantRCode(t, m, dnsmessage.RCodeSuccess)
		if len(m.Questions) != 1 || m.Questions[0].Type != qt {
			t.Errorf("%v: question not echoed: %+v", qt, m.Questions)
		}
	}
	// HTTPS for localhost or an onion is empty too.
	wantRCode(t, askName(t, s, srcA, "localhost.", dnsmessage.TypeHTTPS), dnsmessage.RCodeSuccess)
	notimp := []dnsmessage.Type{dnsmessage.TypeMX, dnsmessage.TypeTXT, dnsmessage.TypeNS, dnsmessage.TypeSOA,
		dnsmessage.TypeSRV, dnsmessage.TypeCNAME, dnsmessage.TypeALL, dnsmessage.Type(99), dnsmessage.Type(65280)}
	for _, qt := range notimp {
		m := askName(t, s, srcA, "example.com.", qt)
		wantRCode(t, m, dnsmessage.RCodeNotImplemented)
		if len(m.Questions) != 1 {
			t.Errorf("%v: question not echoed", qt)
		}
	}
	m := ask(t, s, srcA, buildQuery(t, "version.bind.", dnsmessage.TypeTXT, queryOpts{class: dnsmessage.ClassCHAOS}), true)
	wantRCode(t, m, dnsmessage.RCodeNotImplemented)
	m = ask(t, s, srcA, buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{class: dnsmessage.ClassCHAOS}), true)
	wantRCode(t, m, dnsmessage.RCodeNotImplemented)
	if s.Len() != 0 {
		t.Errorf("table has %d entries", s.Len())
	}
	st := s.Stats()
	if st.Queries[KindHTTPS][ResultNoData] != 3 || st.Queries[KindOther][ResultNotImp] != 10 {
		t.Errorf("stats %+v", st.Queries)
	}
}

// rawQuery assembles a message from a header and raw section bytes.
func rawQuery(id uint16, flags uint16, qd, an, ns, ar uint16, body ...byte) []byte {
	b := []byte{byte(id >> 8), byte(id), byte(flags >> 8), byte(flags),
		byte(qd >> 8), byte(qd), byte(an >> 8), byte(an), byte(ns >> 8), byte(ns), byte(ar >> 8), byte(ar)}
	return append(b, body...)
}

// exampleQ is the question "example.com. A IN" in wire format.
var exampleQ = []byte{7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1}

func TestMalformed(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name  string
		query []byte
		drop  bool
		rcode dnsmessage.RCode
		echo  bool // question echoed
	}{
		{name: "empty", query: nil, drop: true},
		{name: "short header", query: make([]byte, 11), drop: true},
		{name: "QR set", query: rawQuery(1, 0x8100, 1, 0, 0, 0, exampleQ...), drop: true},
		{name: "header only", query: rawQuery(1, 0x0100, 0, 0, 0, 0), rcode: dnsmessage.RCodeFormatError},
		{name: "qdcount 0 with body", query: rawQuery(1, 0x0100, 0, 0, 0, 0, exampleQ...), rcode: dnsmessage.RCodeFormatError},
		{name: "qdcount 2", query: rawQuery(1, 0x0100, 2, 0, 0, 0, append(append([]byte{}, exampleQ...), exampleQ...)...), rcode: dnsmessage.RCodeFormatError},
		{name: "qdcount 2, one present", query: rawQuery(1, 0x0100, 2, 0, 0, 0, exampleQ...), rcode: dnsmessage.RCodeFormatError},
		{name: "qdcount 65535", query: rawQuery(1, 0x0100, 65535, 0, 0, 0, exampleQ...), rcode: dnsmessage.RCodeFormatError},
		{name: "truncated name", query: rawQuery(1, 0x0100, 1, 0, 0, 0, exampleQ[:6]...), rcode: dnsmessage.RCodeFormatError},
		{name: "truncated type", query: rawQuery(1, 0x0100, 1, 0, 0, 0, exampleQ[:14]...), rcode: dnsmessage.RCodeFormatError},
		{name: "pointer loop", query: rawQuery(1, 0x0100, 1, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1), rcode: dnsmessage.RCodeFormatError},
		{name: "pointer out of range", query: rawQuery(1, 0x0100, 1, 0, 0, 0, 0xc0, 200, 0, 1, 0, 1), rcode: dnsmessage.RCodeFormatError},
		{name: "mutual pointers", query: rawQuery(1, 0x0100, 1, 0, 0, 0, 1, 'a', 0xc0, 14, 0xc0, 12, 0, 1, 0, 1), rcode: dnsmessage.RCodeFormatError},
		{name: "reserved label type", query: rawQuery(1, 0x0100, 1, 0, 0, 0, 0x40, 'a', 0, 0, 1, 0, 1), rcode: dnsmessage.RCodeFormatError},
		{name: "dot in label", query: rawQuery(1, 0x0100, 1, 0, 0, 0, 3, 'a', '.', 'b', 0, 0, 1, 0, 1), rcode: dnsmessage.RCodeFormatError},
		{name: "name too long", query: rawQuery(1, 0x0100, 1, 0, 0, 0, append(longName(5, 63), 0, 1, 0, 1)...), rcode: dnsmessage.RCodeFormatError},
		{name: "ancount beyond end", query: rawQuery(1, 0x0100, 1, 3, 0, 0, exampleQ...), rcode: dnsmessage.RCodeFormatError, echo: true},
		{name: "arcount beyond end", query: rawQuery(1, 0x0100, 1, 0, 0, 1, exampleQ...), rcode: dnsmessage.RCodeFormatError, echo: true},
		{name: "opcode IQUERY", query: rawQuery(1, 0x0900, 1, 0, 0, 0, exampleQ...), rcode: dnsmessage.RCodeNotImplemented, echo: true},
		{name: "opcode UPDATE", query: rawQuery(1, 0x2800, 1, 0, 0, 0, exampleQ...), rcode: dnsmessage.RCodeNotImplemented, echo: true},
		{name: "opcode 15, no question", query: rawQuery(1, 0x7800, 0, 0, 0, 0), rcode: dnsmessage.RCodeNotImplemented},
		{name: "trailing garbage", query: append(rawQuery(1, 0x0100, 1, 0, 0, 0, exampleQ...), 0xde, 0xad), echo: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Handle(t.Context(), srcA, tt.query, true, nil)
			if tt.drop {
				if !errors.Is(err, ErrDrop) || resp != nil {
					t.Fatalf("Handle = %x, %v; want nil, ErrDrop", resp, err)
				}
				return
			}
			m := ask(t, s, srcA, tt.query, true)
			if m.Header.RCode != tt.rcode {
				t.Errorf("rcode %v, want %v", m.Header.RCode, tt.rcode)
			}
			if (len(m.Questions) == 1) != tt.echo {
				t.Errorf("questions %+v, echo %v", m.Questions, tt.echo)
			}
			if tt.query[2]&0x78 != 0 && m.Header.OpCode != dnsmessage.OpCode(tt.query[2]>>3&0xf) {
				t.Errorf("opcode %d not copied", m.Header.OpCode)
			}
		})
	}
	if st := s.Stats(); st.Queries[KindNone][ResultDropped] != 3 {
		t.Errorf("dropped %d, want 3", st.Queries[KindNone][ResultDropped])
	}
}

// longName returns n labels of length l in wire format, without the root.
func longName(n, l int) []byte {
	var b []byte
	for range n {
		b = append(b, byte(l))
		b = append(b, strings.Repeat("a", l)...)
	}
	return b
}

func TestEDNS(t *testing.T) {
	s := newServer(t, Config{})
	t.Run("size and DO echoed", func(t *testing.T) {
		m := ask(t, s, srcA, buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{edns: 4096, do: true}), true)
		answerAddr(t, m)
		opt := findOPT(t, m)
		if opt.Class != maxUDP || !opt.DNSSECAllowed() || opt.ExtendedRCode(m.Header.RCode) != 0 {
			t.Errorf("OPT %+v: want size %d, DO, rcode 0", opt, maxUDP)
		}
	})
	t.Run("no OPT without one", func(t *testing.T) {
		m := askName(t, s, srcA, "example.com.", dnsmessage.TypeA)
		if len(m.Additionals) != 0 {
			t.Errorf("additionals %+v", m.Additionals)
		}
	})
	t.Run("OPT on errors", func(t *testing.T) {
		m := ask(t, s, srcA, buildQuery(t, "example.com.", dnsmessage.TypeMX, queryOpts{edns: 1232}), false)
		wantRCode(t, m, dnsmessage.RCodeNotImplemented)
		if opt := findOPT(t, m); opt.DNSSECAllowed() {
			t.Errorf("DO set without DO in the query")
		}
	})
	t.Run("BADVERS", func(t *testing.T) {
		m := ask(t, s, srcA, buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{edns: 1232, version: 1}), true)
		opt := findOPT(t, m)
		if rc := opt.ExtendedRCode(m.Header.RCode); rc != rcodeBadVers {
			t.Errorf("extended rcode %v, want BADVERS", rc)
		}
		if len(m.Answers) != 0 || len(m.Questions) != 1 {
			t.Errorf("answers %d questions %d", len(m.Answers), len(m.Questions))
		}
		if v := opt.TTL >> 16 & 0xff; v != 0 {
			t.Errorf("response EDNS version %d", v)
		}
	})
	t.Run("two OPTs", func(t *testing.T) {
		q := buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{edns: 1232})
		opt := q[len(q)-11:]
		q = append(q, opt...)
		q[11] = 2 // arcount
		m := ask(t, s, srcA, q, true)
		wantRCode(t, m, dnsmessage.RCodeFormatError)
		if len(m.Additionals) != 0 {
			t.Errorf("OPT in FORMERR for a bad OPT")
		}
	})
	t.Run("OPT not at root", func(t *testing.T) {
		q := rawQuery(1, 0x0100, 1, 0, 0, 1, exampleQ...)
		q = append(q, 1, 'x', 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0)
		wantRCode(t, ask(t, s, srcA, q, true), dnsmessage.RCodeFormatError)
	})
	t.Run("other additionals skipped", func(t *testing.T) {
		q := rawQuery(1, 0x0100, 1, 0, 0, 2, exampleQ...)
		q = append(q, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4) // example.com A 1.2.3.4
		q = append(q, 0, 0, 41, 0x05, 0xdc, 0, 0, 0, 0, 0, 0)              // OPT 1500
		m := ask(t, s, srcA, q, true)
		answerAddr(t, m)
		findOPT(t, m)
	})
}

func findOPT(t testing.TB, m *dnsmessage.Message) *dnsmessage.ResourceHeader {
	t.Helper()
	var opt *dnsmessage.ResourceHeader
	for i := range m.Additionals {
		if m.Additionals[i].Header.Type == dnsmessage.TypeOPT {
			if opt != nil {
				t.Errorf("two OPT records")
			}
			opt = &m.Additionals[i].Header
		}
	}
	if opt == nil {
		t.Fatalf("no OPT in response")
	}
	return opt
}

// maxName returns a name of 253 characters (255 wire bytes).
func maxName(suffix string) string {
	var sb strings.Builder
	for sb.Len()+len(suffix) < maxNameLen-63 {
		sb.WriteString(strings.Repeat("x", 62) + ".")
	}
	sb.WriteString(strings.Repeat("y", maxNameLen-sb.Len()-len(suffix)-1))
	sb.WriteString("." + suffix + ".")
	return sb.String()
}

func TestSizeLimits(t *testing.T) {
	s := newServer(t, Config{})
	long := maxName("example")
	if n := len(long); n != maxNameLen+1 {
		t.Fatalf("name length %d", n)
	}
	q := buildQuery(t, long, dnsmessage.TypeAAAA, queryOpts{})
	// Over TCP the answer is packed without compression: bigger than 512.
	tcp, err := s.Handle(t.Context(), srcA, q, false, nil)
	if err != nil || len(tcp) <= minUDP {
		t.Fatalf("TCP answer %d bytes, %v; want > %d", len(tcp), err, minUDP)
	}
	// Over UDP it must fit 512 bytes: packed again with compression.
	m := ask(t, s, srcA, q, true)
	answerAddr(t, m)
	udp, _ := s.Handle(t.Context(), srcA, q, true, nil)
	if len(udp) > minUDP || m.Header.Truncated {
		t.Errorf("UDP answer %d bytes, TC %v", len(udp), m.Header.Truncated)
	}
	// The PTR for that name, for the IPv6 address: the biggest answer.
	ip := answerAddr(t, m)
	ptr := buildQuery(t, reverseName(ip), dnsmessage.TypePTR, queryOpts{edns: 512})
	mp := ask(t, s, srcA, ptr, true)
	if got := answerPTR(t, mp); !strings.EqualFold(got, long) {
		t.Errorf("PTR = %q", got)
	}

	// TC is only needed below what a name can take; check the path with a
	// limit no real answer is held to.
	var r reply
	r.hdr = dnsmessage.Header{ID: 9, Response: true}
	r.q = dnsmessage.Question{Name: dnsmessage.MustNewName(long), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}
	r.hasQ, r.ans, r.edns = true, ansAAAA, true
	out, err := s.build([]byte{0xaa, 0xbb}, &r, 300)
	if err != nil {
		t.Fatal(err)
	}
	if out[0] != 0xaa || out[1] != 0xbb {
		t.Errorf("prefix overwritten")
	}
	var tm dnsmessage.Message
	if err := tm.Unpack(out[2:]); err != nil {
		t.Fatal(err)
	}
	if !tm.Header.Truncated || len(tm.Answers) != 0 || len(tm.Questions) != 1 || len(tm.Additionals) != 1 {
		t.Errorf("truncated response %+v", tm)
	}
	if s.Stats().Truncated != 1 {
		t.Errorf("Truncated = %d", s.Stats().Truncated)
	}
}

func TestAppendToResp(t *testing.T) {
	s := newServer(t, Config{})
	q := buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{})
	buf := make([]byte, 2, 600)
	out, err := s.Handle(t.Context(), srcA, q, false, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &buf[:1][0] {
		t.Errorf("response not built in the caller's buffer")
	}
	var m dnsmessage.Message
	if err := m.Unpack(out[2:]); err != nil {
		t.Fatal(err)
	}
}

func TestNotReady(t *testing.T) {
	var ready atomic.Bool
	fr := &fakeResolver{t: t}
	s := newServer(t, Config{Ready: func(netip.Addr) bool { return ready.Load() }, Mode: ModeResolve, Resolver: fr})
	names := []struct {
		name  string
		qtype dnsmessage.Type
	}{
		{"example.com.", dnsmessage.TypeA},
		{"x.onion.", dnsmessage.TypeAAAA},
		{"localhost.", dnsmessage.TypeA},
		{"1.0.0.127.in-addr.arpa.", dnsmessage.TypePTR},
		{"example.com.", dnsmessage.TypeHTTPS},
		{"example.com.", dnsmessage.TypeMX},
		{"wpad.", dnsmessage.TypeA},
	}
	for _, n := range names {
		wantRCode(t, askName(t, s, srcA, n.name, n.qtype), dnsmessage.RCodeServerFailure)
	}
	// Malformed stays malformed.
	wantRCode(t, ask(t, s, srcA, rawQuery(1, 0x0100, 0, 0, 0, 0), true), dnsmessage.RCodeFormatError)
	if s.Len() != 0 || len(fr.Calls()) != 0 {
		t.Errorf("not ready, yet Len %d, calls %d", s.Len(), len(fr.Calls()))
	}
	ready.Store(true)
	answerAddr(t, askName(t, s, srcA, "x.onion.", dnsmessage.TypeAAAA))
	if st := s.Stats(); st.Total(ResultServFail) != uint64(len(names)) {
		t.Errorf("servfail %d, want %d", st.Total(ResultServFail), len(names))
	}
}

func TestResolveLimits(t *testing.T) {
	block := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(block) })
	t.Cleanup(unblock)
	entered := make(chan struct{}, 2)
	fr := &fakeResolver{t: t, addr: func(string) (netip.Addr, error) {
		entered <- struct{}{}
		<-block
		return netip.MustParseAddr("192.0.2.1"), nil
	}}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: fr, MaxResolves: 1})
	done := make(chan *dnsmessage.Message)
	go func() {
		resp, _ := s.Handle(t.Context(), srcA, buildQuery(t, "a.example.", dnsmessage.TypeA, queryOpts{}), true, nil)
		var m dnsmessage.Message
		m.Unpack(resp)
		done <- &m
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Resolver never called")
	}
	// The only slot is taken: the next query fails at once.
	wantRCode(t, askName(t, s, srcA, "b.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	unblock()
	answerAddr(t, <-done)
	if st := s.Stats(); st.ResolveBusy != 1 {
		t.Errorf("ResolveBusy = %d", st.ResolveBusy)
	}

	// The timeout reaches the Resolver through ctx.
	fr2 := &fakeResolver{t: t}
	var sawDeadline atomic.Bool
	fr2.addr = func(string) (netip.Addr, error) { return netip.Addr{}, errors.New("x") }
	s2 := newServer(t, Config{Mode: ModeResolve, Resolver: deadlineResolver{fr2, &sawDeadline}, ResolveTimeout: time.Minute})
	wantRCode(t, askName(t, s2, srcA, "c.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	if !sawDeadline.Load() {
		t.Errorf("Resolver ctx had no deadline")
	}
}

// deadlineResolver records whether calls get a context with a deadline.
type deadlineResolver struct {
	*fakeResolver
	saw *atomic.Bool
}

func (d deadlineResolver) Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error) {
	if _, ok := ctx.Deadline(); ok {
		d.saw.Store(true)
	}
	return d.fakeResolver.Resolve(ctx, src, name)
}

func TestNamesNotLogged(t *testing.T) {
	log, lb := debugLogger()
	fr := &fakeResolver{t: t, addr: func(name string) (netip.Addr, error) {
		return netip.Addr{}, errors.New("connect to secret-destination.example failed")
	}}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: fr, Logger: log})
	wantRCode(t, askName(t, s, srcA, "secret-destination.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	answerAddr(t, askName(t, s, srcA, "secret-destination.onion.", dnsmessage.TypeA))
	if out := lb.String(); strings.Contains(out, "secret-destination") {
		t.Errorf("name logged:\n%s", out)
	}
	if !strings.Contains(lb.String(), "dns resolve failed") {
		t.Errorf("resolve failure not logged at debug:\n%s", lb.String())
	}

	log2, lb2 := debugLogger()
	s2 := newServer(t, Config{Mode: ModeResolve, Resolver: fr, Logger: log2, LogDestinations: true})
	askName(t, s2, srcA, "secret-destination.example.", dnsmessage.TypeA)
	if !strings.Contains(lb2.String(), "secret-destination") {
		t.Errorf("LogDestinations did not log the name:\n%s", lb2.String())
	}
}

func TestConcurrent(t *testing.T) {
	s := newServer(t, Config{MaxEntries: 64, StateFile: t.TempDir() + "/state"})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			resp := make([]byte, 0, 512)
			for i := range 300 {
				q := buildQuery(t, "n"+itoa((g*7+i)%100)+".example.", dnsmessage.TypeA, queryOpts{id: uint16(i)})
				out, err := s.Handle(t.Context(), srcA, q, true, resp[:0])
				if err != nil {
					t.Error(err)
					return
				}
				var p dnsmessage.Parser
				if _, err := p.Start(out); err != nil {
					t.Error(err)
					return
				}
				ip := netip.AddrFrom4([4]byte(out[len(out)-4:]))
				if name, release, virtual, ok := s.Acquire(srcA, ip); virtual && ok {
					if !strings.HasSuffix(name, ".example") {
						t.Errorf("Acquire = %q", name)
					}
					s.Lookup(srcA, ip)
					release()
				}
				if i%100 == 0 {
					if err := s.Save(); err != nil {
						t.Error(err)
					}
					s.Stats()
				}
			}
		})
	}
	wg.Wait()
	if n := s.Len(); n > 64 {
		t.Errorf("Len = %d > 64", n)
	}
	if st := s.Stats(); st.Pinned != 0 {
		t.Errorf("Pinned = %d after all releases", st.Pinned)
	}
}

func TestAllocs(t *testing.T) {
	s := newServer(t, Config{})
	for _, tt := range []struct {
		name  string
		query []byte
	}{
		{"A", buildQuery(t, "example.com.", dnsmessage.TypeA, queryOpts{})},
		{"AAAA+EDNS", buildQuery(t, "Example.COM.", dnsmessage.TypeAAAA, queryOpts{edns: 1232})},
		{"HTTPS", buildQuery(t, "example.com.", dnsmessage.TypeHTTPS, queryOpts{})},
		{"MX", buildQuery(t, "example.com.", dnsmessage.TypeMX, queryOpts{})},
		{"FORMERR", rawQuery(1, 0x0100, 2, 0, 0, 0, exampleQ...)},
	} {
		resp := make([]byte, 0, 512)
		ctx := t.Context()
		s.Handle(ctx, srcA, tt.query, true, resp) // map the name
		n := testing.AllocsPerRun(100, func() {
			if _, err := s.Handle(ctx, srcA, tt.query, true, resp); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per query, want 0", tt.name, n)
		}
	}
}
