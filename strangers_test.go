package torgate_test

// Hostile-workstation tests that need no root: a workstation trying to
// reach what it must not (martians by every road) or to see and use
// another workstation's names. Each test names the finding of issue 11 it
// proves fixed.

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/socks/sockstest"
)

// gw4 (hostile_test.go) is the router's DNS address in the fixture.

// TestForbiddenDestinations (issue 11, "martians by every road"): a flow
// from a workstation to any forbidden destination, IPv4 or IPv6, raw or
// embedded, gets a RST and the SOCKS server sees nothing. Loopback,
// multicast and unspecified destinations never become flows (netstack's
// ReasonMartian) and are covered by netstack's tests.
func TestForbiddenDestinations(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1, ws6)
	tests := []struct {
		from netip.Addr
		dst  string
	}{
		{from: ws1, dst: "169.254.169.254:80"}, // cloud metadata
		{from: ws1, dst: "169.254.1.1:80"},     // link-local
		{from: ws1, dst: "10.99.0.2:9083"},     // private
		{from: ws1, dst: "10.152.152.10:80"},   // the gateway itself
		{from: ws1, dst: "172.16.0.1:80"},
		{from: ws1, dst: "192.168.1.1:80"},
		{from: ws1, dst: "100.64.0.1:80"}, // shared address space
		{from: ws1, dst: "0.1.2.3:80"},    // "this network"
		{from: ws1, dst: "240.0.0.1:80"},  // class E
		{from: ws6, dst: "[fd00:ec2::254]:80"},
		{from: ws6, dst: "[fc00::1]:80"},
		{from: ws6, dst: "[fd19:7a2b::1]:80"},    // the workstations' own ULA
		{from: ws6, dst: "[::127.0.0.1]:9083"},   // IPv4-compatible
		{from: ws6, dst: "[::a9fe:a9fe]:80"},     // IPv4-compatible metadata
		{from: ws6, dst: "[64:ff9b::7f00:1]:80"}, // NAT64 of loopback
		{from: ws6, dst: "[64:ff9b::a9fe:a9fe]:80"},
		{from: ws6, dst: "[2002:7f00:1::1]:80"},   // 6to4 of loopback
		{from: ws6, dst: "[2001:0:7f00:1::1]:80"}, // Teredo, server loopback
		{from: ws6, dst: "[fec0::1]:80"},          // site-local
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			c, err := f.dial(t, tt.from, netip.MustParseAddrPort(tt.dst))
			if err == nil {
				c.Close()
				t.Fatal("flow accepted")
			}
			if !isRefused(err) {
				t.Fatalf("dial: %v, want connection refused (RST)", err)
			}
		})
	}
	if reqs := f.socks.Requests(); len(reqs) != 0 {
		t.Fatalf("the SOCKS server saw %+v", reqs)
	}
}

// TestLiteralNamesNoBackDoor (issue 11: an A query for "127.0.0.1" got a
// virtual address, and a flow to it left as CONNECT "127.0.0.1"): names
// that are forbidden address literals get NXDOMAIN in every spelling; an
// allowed literal answers itself and its flow leaves as that address.
func TestLiteralNamesNoBackDoor(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1)
	for _, name := range []string{"127.0.0.1.", "127.1.", "0x7f.0.0.1.", "2130706433.", "10.99.0.2.",
		"169.254.169.254.", "::127.0.0.1.", "::ffff:127.0.0.1.", "fe80::1.", "10.152.152.10."} {
		for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			m := query(t, f, ws1, gw4, false, name, qt)
			if m.RCode != dnsmessage.RCodeNameError || len(m.Answers) != 0 {
				t.Errorf("%s %v: rcode %v, answers %v; want NXDOMAIN", name, qt, m.RCode, m.Answers)
			}
		}
	}
	m := query(t, f, ws1, gw4, false, "192.0.2.10.", dnsmessage.TypeA)
	if a := firstAddr(m); a != dst4.Addr() {
		t.Fatalf("192.0.2.10 answered %v, want itself", a)
	}
	c, err := f.dial(t, ws1, dst4)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	reqs := f.socks.Requests()
	if len(reqs) != 1 || reqs[0].Dst.Name != "" || reqs[0].Dst.IP != dst4.Addr() {
		t.Fatalf("CONNECTs %+v, want one to the address %v", reqs, dst4.Addr())
	}
}

// TestStrangersNames (issue 11: B connecting to A's virtual address got
// CONNECT secret-a.example with B's credentials, and B's PTR sweep learned
// A's names): A's address is a RST for B, its PTR NXDOMAIN for B, and B
// asking for the same name gets an address of its own.
func TestStrangersNames(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1, ws2)
	va := firstAddr(query(t, f, ws1, gw4, false, "secret-a.example.", dnsmessage.TypeA))
	if c, err := f.dial(t, ws2, netip.AddrPortFrom(va, 443)); err == nil {
		c.Close()
		t.Fatal("B's flow to A's virtual address accepted")
	} else if !isRefused(err) {
		t.Fatalf("B to A's address: %v, want connection refused", err)
	}
	if reqs := f.socks.Requests(); len(reqs) != 0 {
		t.Fatalf("the SOCKS server saw %+v", reqs)
	}
	ptr := query(t, f, ws2, gw4, false, reverseName4(va), dnsmessage.TypePTR)
	if ptr.RCode != dnsmessage.RCodeNameError || len(ptr.Answers) != 0 {
		t.Fatalf("B's PTR for A's address: %v %+v, want NXDOMAIN", ptr.RCode, ptr.Answers)
	}
	vb := firstAddr(query(t, f, ws2, gw4, false, "secret-a.example.", dnsmessage.TypeA))
	if vb == va || !vb.IsValid() {
		t.Fatalf("B got %v for the name A got %v for", vb, va)
	}
	// A's own flow and PTR still work.
	c, err := f.dial(t, ws1, netip.AddrPortFrom(va, 443))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if reqs := f.socks.Requests(); len(reqs) != 1 || reqs[0].Dst.Name != "secret-a.example" {
		t.Fatalf("CONNECTs %+v", reqs)
	}
	ptr = query(t, f, ws1, gw4, false, reverseName4(va), dnsmessage.TypePTR)
	if len(ptr.Answers) != 1 {
		t.Fatalf("A's PTR: %+v", ptr)
	}
}

// TestRestartNoReuse (issue 11: after a restart, A's cached address for
// bank-of-a.example was handed to B's evil-b.example, and A's next
// request left as CONNECT evil-b.example with A's cookies): without a
// state directory, with only the epoch file, a restarted router never
// hands out an address of the previous run; A's stale address is a RST.
func TestRestartNoReuse(t *testing.T) {
	epoch := filepath.Join(t.TempDir(), "dns-epoch")
	mod := func(c *torgate.Config) { c.DNSEpochFile = epoch }
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, mod, ws1, ws2)
	old := map[netip.Addr]bool{}
	va := firstAddr(query(t, f, ws1, gw4, false, "bank-of-a.example.", dnsmessage.TypeA))
	old[va] = true
	for i := range 100 {
		old[firstAddr(query(t, f, ws1, gw4, false, "a"+strconv.Itoa(i)+".example.", dnsmessage.TypeA))] = true
	}
	if err := f.r.Close(); err != nil {
		t.Fatal(err)
	}
	g := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, mod, ws1, ws2)
	for i := range 300 {
		name := "evil-b" + strconv.Itoa(i) + ".example."
		if vb := firstAddr(query(t, g, ws2, gw4, false, name, dnsmessage.TypeA)); old[vb] {
			t.Fatalf("after a restart B's %s got %v, an address of the previous run", name, vb)
		}
	}
	if c, err := g.dial(t, ws1, netip.AddrPortFrom(va, 443)); err == nil {
		c.Close()
		t.Fatal("A's stale address accepted after the restart")
	} else if !isRefused(err) {
		t.Fatalf("A's stale address: %v, want connection refused", err)
	}
	if reqs := g.socks.Requests(); len(reqs) != 0 {
		t.Fatalf("the SOCKS server saw %+v", reqs)
	}
}

// TestStateDirUnwritable (issue 11: a read-only state dir was silent at
// start): torgate.New fails and says why.
func TestStateDirUnwritable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hub, _ := wstest.New(t, 1500, ws1)
	_, err := torgate.New(torgate.Config{Device: hub, SocksAddr: "127.0.0.1:9", StateDir: file})
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("New with a file as StateDir: %v, want a not-writable error", err)
	}
}

// reverseName4 is the in-addr.arpa name of an IPv4 address.
func reverseName4(ip netip.Addr) string {
	a := ip.As4()
	return strconv.Itoa(int(a[3])) + "." + strconv.Itoa(int(a[2])) + "." +
		strconv.Itoa(int(a[1])) + "." + strconv.Itoa(int(a[0])) + ".in-addr.arpa."
}
