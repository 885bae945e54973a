package dns

import (
	"net/netip"
	"testing"

	"github.com/torgate/torgate/internal/dest"
	"golang.org/x/net/dns/dnsmessage"
)

// literalTests are names that are IP address literals, in the spellings
// resolvers and libc accept, and what A and AAAA queries for them get.
var literalTests = []struct {
	name   string
	reason dest.Reason // forbidden: NXDOMAIN for both types
	a      string      // allowed: the A answer ("" = NODATA)
	aaaa   string      // allowed: the AAAA answer ("" = NODATA)
}{
	{name: "127.0.0.1.", reason: dest.ReasonLoopback},
	{name: "127.1.", reason: dest.ReasonLoopback},
	{name: "0x7f.0.0.1.", reason: dest.ReasonLoopback},
	{name: "0177.0.0.1.", reason: dest.ReasonLoopback},
	{name: "2130706433.", reason: dest.ReasonLoopback},
	{name: "0.", reason: dest.ReasonUnspecified},
	{name: "10.99.0.2.", reason: dest.ReasonPrivate},
	{name: "192.168.1.1.", reason: dest.ReasonPrivate},
	{name: "10.192.0.5.", reason: dest.ReasonPrivate}, // a virtual address
	{name: "169.254.169.254.", reason: dest.ReasonMetadata},
	{name: "169.254.1.1.", reason: dest.ReasonLinkLocal},
	{name: "224.0.0.251.", reason: dest.ReasonMulticast},
	{name: "255.255.255.255.", reason: dest.ReasonBroadcast},
	{name: "240.1.2.3.", reason: dest.ReasonReserved},
	{name: "::1.", reason: dest.ReasonLoopback},
	{name: "[::1].", reason: dest.ReasonLoopback},
	{name: "::127.0.0.1.", reason: dest.ReasonReserved},
	{name: "::ffff:127.0.0.1.", reason: dest.ReasonLoopback},
	{name: "::ffff:10.0.0.1.", reason: dest.ReasonPrivate},
	{name: "fe80::1.", reason: dest.ReasonLinkLocal},
	{name: "fd00:ec2::254.", reason: dest.ReasonMetadata},
	{name: "fd9d:7a2b:5c1e::ac0:5.", reason: dest.ReasonPrivate}, // virtual
	{name: "64:ff9b::7f00:1.", reason: dest.ReasonEmbedded},

	{name: "192.0.2.1.", a: "192.0.2.1"},
	{name: "3221225985.", a: "192.0.2.1"},
	{name: "::ffff:192.0.2.1.", a: "192.0.2.1"},
	{name: "2001:db8::1.", aaaa: "2001:db8::1"},
}

// TestLiteralNames: a name that is an IP literal is never automapped or
// resolved: an allowed literal answers itself, a forbidden one NXDOMAIN,
// counted by reason. Before, "127.0.0.1" got a virtual address whose flow
// left as CONNECT "127.0.0.1".
func TestLiteralNames(t *testing.T) {
	for _, mode := range []Mode{ModeAutomap, ModeResolve} {
		t.Run(mode.String(), func(t *testing.T) {
			fr := &fakeResolver{t: t}
			s := newServer(t, Config{Mode: mode, Resolver: fr})
			var want [dest.NumReasons]uint64
			for _, tt := range literalTests {
				for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
					m := askName(t, s, srcA, tt.name, qt)
					if tt.reason != dest.ReasonAllowed {
						want[tt.reason]++
						if m.Header.RCode != dnsmessage.RCodeNameError || len(m.Answers) != 0 {
							t.Errorf("%s %v: rcode %v, %d answers; want NXDOMAIN", tt.name, qt, m.Header.RCode, len(m.Answers))
						}
						continue
					}
					exp := tt.a
					if qt == dnsmessage.TypeAAAA {
						exp = tt.aaaa
					}
					if exp == "" {
						if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 {
							t.Errorf("%s %v: rcode %v, %d answers; want NODATA", tt.name, qt, m.Header.RCode, len(m.Answers))
						}
						continue
					}
					if got := answerAddr(t, m); got != netip.MustParseAddr(exp) {
						t.Errorf("%s %v = %v, want %s", tt.name, qt, got, exp)
					}
				}
			}
			if s.Len() != 0 {
				t.Errorf("literals were automapped: %d entries", s.Len())
			}
			if c := fr.Calls(); len(c) != 0 {
				t.Errorf("literals reached the Resolver: %+v", c)
			}
			if got := s.Stats().Forbidden; got != want {
				t.Errorf("Stats.Forbidden = %v, want %v", got, want)
			}
		})
	}
}

// TestForbiddenInjected: the router's policy (the gateway's own networks)
// applies to literals and to resolve-mode answers.
func TestForbiddenInjected(t *testing.T) {
	lan := netip.MustParsePrefix("198.51.100.0/24")
	policy, err := dest.NewPolicy([]netip.Prefix{lan}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fr := &fakeResolver{t: t, addr: func(name string) (netip.Addr, error) {
		switch name {
		case "lan.example":
			return netip.MustParseAddr("198.51.100.9"), nil
		case "private.example":
			return netip.MustParseAddr("10.0.0.1"), nil
		case "meta.example":
			return netip.MustParseAddr("169.254.169.254"), nil
		}
		return netip.MustParseAddr("192.0.2.1"), nil
	}}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: fr, Policy: policy})
	wantRCode(t, askName(t, s, srcA, "198.51.100.9.", dnsmessage.TypeA), dnsmessage.RCodeNameError)
	for _, n := range []string{"lan.example.", "private.example.", "meta.example."} {
		wantRCode(t, askName(t, s, srcA, n, dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	}
	if got := answerAddr(t, askName(t, s, srcA, "ok.example.", dnsmessage.TypeA)); got != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("ok.example = %v", got)
	}
	st := s.Stats()
	if st.Forbidden[dest.ReasonOperator] != 2 || st.Forbidden[dest.ReasonPrivate] != 1 || st.Forbidden[dest.ReasonMetadata] != 1 {
		t.Errorf("Forbidden = %v", st.Forbidden)
	}
}
