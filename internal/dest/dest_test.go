package dest

import (
	"net/netip"
	"testing"
)

// destTests is every class of destination Forbidden knows, with an
// allowed neighbour for each edge.
var destTests = []struct {
	ip   string
	want Reason
}{
	{ip: "0.0.0.0", want: ReasonUnspecified},
	{ip: "::", want: ReasonUnspecified},
	{ip: "127.0.0.1", want: ReasonLoopback},
	{ip: "127.255.255.254", want: ReasonLoopback},
	{ip: "::1", want: ReasonLoopback},
	{ip: "::ffff:127.0.0.1", want: ReasonLoopback}, // mapped: judged as IPv4
	{ip: "224.0.0.1", want: ReasonMulticast},
	{ip: "239.255.255.250", want: ReasonMulticast},
	{ip: "ff02::1", want: ReasonMulticast},
	{ip: "ff05::1:3", want: ReasonMulticast},
	{ip: "255.255.255.255", want: ReasonBroadcast},
	{ip: "169.254.0.1", want: ReasonLinkLocal},
	{ip: "fe80::1", want: ReasonLinkLocal},
	{ip: "fe80::1%eth0", want: ReasonLinkLocal},
	{ip: "febf::1", want: ReasonLinkLocal},
	{ip: "169.254.169.254", want: ReasonMetadata},
	{ip: "::ffff:169.254.169.254", want: ReasonMetadata},
	{ip: "fd00:ec2::254", want: ReasonMetadata},
	{ip: "10.0.0.1", want: ReasonPrivate},
	{ip: "10.99.0.2", want: ReasonPrivate},
	{ip: "10.192.0.7", want: ReasonPrivate}, // the default virtual pool too
	{ip: "172.16.0.1", want: ReasonPrivate},
	{ip: "172.31.255.254", want: ReasonPrivate},
	{ip: "192.168.1.1", want: ReasonPrivate},
	{ip: "100.64.0.1", want: ReasonPrivate},
	{ip: "100.127.255.254", want: ReasonPrivate},
	{ip: "fc00::1", want: ReasonPrivate},
	{ip: "fd9d:7a2b:5c1e::ac0:7", want: ReasonPrivate}, // the default virtual pool
	{ip: "fec0::1", want: ReasonPrivate},
	{ip: "0.1.2.3", want: ReasonReserved},
	{ip: "240.0.0.1", want: ReasonReserved},
	{ip: "254.255.255.255", want: ReasonReserved},
	{ip: "::127.0.0.1", want: ReasonReserved}, // IPv4-compatible
	{ip: "::8.8.8.8", want: ReasonReserved},   // all of ::/96
	{ip: "::169.254.169.254", want: ReasonReserved},
	{ip: "64:ff9b:1::1", want: ReasonReserved},
	{ip: "64:ff9b::7f00:1", want: ReasonEmbedded},            // NAT64 of 127.0.0.1
	{ip: "64:ff9b::a9fe:a9fe", want: ReasonEmbedded},         // NAT64 of the metadata address
	{ip: "64:ff9b::a00:1", want: ReasonEmbedded},             // NAT64 of 10.0.0.1
	{ip: "2002:7f00:1::1", want: ReasonEmbedded},             // 6to4 of 127.0.0.1
	{ip: "2002:c0a8:101::1", want: ReasonEmbedded},           // 6to4 of 192.168.1.1
	{ip: "2001:0:7f00:1::1", want: ReasonEmbedded},           // Teredo server 127.0.0.1
	{ip: "2001:0:c000:201::80ff:fffe", want: ReasonEmbedded}, // Teredo client ^ = 127.0.0.1

	{ip: "192.0.2.1", want: ReasonAllowed},
	{ip: "198.51.100.7", want: ReasonAllowed},
	{ip: "1.1.1.1", want: ReasonAllowed},
	{ip: "9.255.255.255", want: ReasonAllowed},
	{ip: "11.0.0.1", want: ReasonAllowed},
	{ip: "172.15.255.255", want: ReasonAllowed},
	{ip: "172.32.0.1", want: ReasonAllowed},
	{ip: "100.63.255.255", want: ReasonAllowed},
	{ip: "100.128.0.1", want: ReasonAllowed},
	{ip: "169.253.255.255", want: ReasonAllowed},
	{ip: "223.255.255.255", want: ReasonAllowed},
	{ip: "::ffff:192.0.2.1", want: ReasonAllowed},
	{ip: "2001:db8::1", want: ReasonAllowed},
	{ip: "2606:4700::1111", want: ReasonAllowed},
	{ip: "64:ff9b::c000:201", want: ReasonAllowed},          // NAT64 of 192.0.2.1
	{ip: "2002:c000:201::1", want: ReasonAllowed},           // 6to4 of 192.0.2.1
	{ip: "2001:0:c000:201::3fff:fdfe", want: ReasonAllowed}, // Teredo, client 192.0.2.1
}

func TestForbidden(t *testing.T) {
	for _, tt := range destTests {
		t.Run(tt.ip, func(t *testing.T) {
			if got := Forbidden(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("Forbidden(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
	if got := Forbidden(netip.Addr{}); got != ReasonUnspecified {
		t.Errorf("Forbidden(invalid) = %v", got)
	}
	for r := range NumReasons {
		if r.String() == "" || r.String() == "invalid" {
			t.Errorf("reason %d has no name", r)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Forbidden(netip.MustParseAddr("2001:0:c000:201::3fff:fdfe")) }); n != 0 {
		t.Errorf("Forbidden allocates %v times", n)
	}
}

func TestParseLiteral(t *testing.T) {
	tests := []struct {
		host string
		want string // "" = not a literal
	}{
		{host: "127.0.0.1", want: "127.0.0.1"},
		{host: "127.0.0.1.", want: "127.0.0.1"},
		{host: "127.1", want: "127.0.0.1"},
		{host: "127.0.1", want: "127.0.0.1"},
		{host: "0x7f.0.0.1", want: "127.0.0.1"},
		{host: "0X7F.1", want: "127.0.0.1"},
		{host: "0177.0.0.1", want: "127.0.0.1"},
		{host: "2130706433", want: "127.0.0.1"},
		{host: "0x7f000001", want: "127.0.0.1"},
		{host: "017700000001", want: "127.0.0.1"},
		{host: "10.99.0.2", want: "10.99.0.2"},
		{host: "169.254.169.254", want: "169.254.169.254"},
		{host: "0", want: "0.0.0.0"},
		{host: "0x", want: "0.0.0.0"},
		{host: "::1", want: "::1"},
		{host: "[::1]", want: "::1"},
		{host: "::127.0.0.1", want: "::127.0.0.1"},
		{host: "::ffff:127.0.0.1", want: "::ffff:127.0.0.1"},
		{host: "fe80::1%eth0", want: "fe80::1"},
		{host: "2001:db8::1", want: "2001:db8::1"},

		{host: "example.com"},
		{host: "1.2.3.4.5"},
		{host: "256.0.0.1"},
		{host: "1.2.3.256"},
		{host: "1.2.65536"},
		{host: "4294967296"},
		{host: "08.1.1.1"}, // 8 is not an octal digit
		{host: "1..1"},
		{host: "1.2.3.", want: "1.2.0.3"}, // the trailing dot of a DNS name
		{host: "1.2.3.."},
		{host: "0xg.1"},
		{host: "1e100.net"},
		{host: "abc"},
		{host: ""},
		{host: "."},
		{host: "::g"},
		{host: "123.example"},
	}
	for _, tt := range tests {
		ip, ok := ParseLiteral(tt.host)
		if tt.want == "" {
			if ok {
				t.Errorf("ParseLiteral(%q) = %v, want no literal", tt.host, ip)
			}
			continue
		}
		if !ok || ip != netip.MustParseAddr(tt.want) {
			t.Errorf("ParseLiteral(%q) = %v, %v; want %s", tt.host, ip, ok, tt.want)
		}
	}
}
