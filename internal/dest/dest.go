// Package dest is torgate's destination policy: the one place that
// decides which addresses a workstation may never reach through torgate,
// whatever road the address takes (a raw destination, a virtual address
// whose name is an IP literal, a DNS name that is an IP literal, a
// resolve-mode answer), and which names are address literals at all.
// Package tunnel applies it to flows (adding the operator's prefixes),
// package dns to names and answers.
package dest

// The policy: the one place that decides which addresses a
// workstation may never reach through torgate, whatever road the address
// takes: a raw destination address, a virtual address whose name is an IP
// literal, a DNS name that is an IP literal (package dns), or a resolve-mode
// answer (package dns). netstack's packet classifier drops loopback,
// multicast, unspecified and v4-mapped packets before they become flows
// (ReasonMartian); this is the flow-level policy on top of it.
//
// Tor exits refuse most of these ranges themselves (ExitPolicyRejectPrivate,
// ClientRejectInternalAddresses), but a plain SOCKS proxy in Tor's place may
// not, and some of them (the metadata service, the gateway's own LAN) would
// reach something on the gateway's side rather than the Internet's.

import (
	"net/netip"
	"strings"
)

// Reason says why a destination address is forbidden. It is a bounded
// set, usable as a metric label; ReasonAllowed means not forbidden.
type Reason uint8

// Why a destination is forbidden.
const (
	ReasonAllowed     Reason = iota
	ReasonUnspecified        // 0.0.0.0, ::
	ReasonLoopback           // 127/8, ::1
	ReasonMulticast          // 224/4, ff00::/8
	ReasonBroadcast          // 255.255.255.255
	ReasonLinkLocal          // 169.254/16, fe80::/10
	ReasonMetadata           // cloud metadata: 169.254.169.254, fd00:ec2::254
	ReasonPrivate            // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10
	ReasonReserved           // 0/8, 240/4, ::/96 (IPv4-compatible), 64:ff9b:1::/48
	ReasonEmbedded           // NAT64, 6to4 or Teredo address embedding a forbidden IPv4
	ReasonOperator           // Config.ForbiddenDestinations (the gateway's own networks, the virtual pools)
	ReasonGateway            // one of the gateway's own addresses, on any of its interfaces
	NumReasons
)

var destReasonNames = [NumReasons]string{
	ReasonAllowed:     "allowed",
	ReasonUnspecified: "unspecified",
	ReasonLoopback:    "loopback",
	ReasonMulticast:   "multicast",
	ReasonBroadcast:   "broadcast",
	ReasonLinkLocal:   "link_local",
	ReasonMetadata:    "metadata",
	ReasonPrivate:     "private",
	ReasonReserved:    "reserved",
	ReasonEmbedded:    "embedded",
	ReasonOperator:    "operator",
	ReasonGateway:     "gateway",
}

// String returns the reason as a stable metric label.
func (r Reason) String() string {
	if r < NumReasons {
		return destReasonNames[r]
	}
	return "invalid"
}

var (
	metadata4 = netip.AddrFrom4([4]byte{169, 254, 169, 254})
	metadata6 = netip.MustParseAddr("fd00:ec2::254") // AWS IMDS over IPv6

	private4 = [...]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"), // RFC 6598 shared address space (CGNAT)
	}
	reserved4 = [...]netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),   // "this network"
		netip.MustParsePrefix("240.0.0.0/4"), // class E
	}
	private6 = [...]netip.Prefix{
		netip.MustParsePrefix("fc00::/7"),  // unique local
		netip.MustParsePrefix("fec0::/10"), // site-local (deprecated, RFC 3879)
	}
	v4compat  = netip.MustParsePrefix("::/96")          // IPv4-compatible (deprecated, RFC 4291 §2.5.5.1)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052 well-known prefix
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215 local-use: the translator is local
	sixToFour = netip.MustParsePrefix("2002::/16")      // RFC 3056: IPv4 in bits 16..47
	teredo    = netip.MustParsePrefix("2001::/32")      // RFC 4380: server in 32..63, client ^0xffffffff in 96..127
)

// Forbidden classifies ip as a flow destination by the built-in rules
// only: ReasonAllowed, or why it must never be sent to the upstream. An
// IPv4-mapped IPv6 address is judged as its IPv4 address, a zone is
// ignored, and the invalid Addr is ReasonUnspecified. Address literals in
// names go through ParseLiteral first. It does not allocate.
func Forbidden(ip netip.Addr) Reason {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return ReasonUnspecified
	}
	if ip.Is4() {
		return forbidden4(ip)
	}
	switch {
	case ip.IsUnspecified():
		return ReasonUnspecified
	case ip.IsLoopback():
		return ReasonLoopback
	case ip.IsMulticast():
		return ReasonMulticast
	case ip == metadata6:
		return ReasonMetadata
	case ip.IsLinkLocalUnicast():
		return ReasonLinkLocal
	case v4compat.Contains(ip), nat64Loc.Contains(ip):
		// Every IPv4-compatible address: the form is deprecated and some
		// stacks still route ::127.0.0.1 to loopback.
		return ReasonReserved
	}
	for _, p := range private6 {
		if p.Contains(ip) {
			return ReasonPrivate
		}
	}
	a := ip.As16()
	switch {
	case nat64.Contains(ip):
		return embedded(a[12], a[13], a[14], a[15])
	case sixToFour.Contains(ip):
		return embedded(a[2], a[3], a[4], a[5])
	case teredo.Contains(ip):
		if r := embedded(a[4], a[5], a[6], a[7]); r != ReasonAllowed {
			return r
		}
		return embedded(^a[12], ^a[13], ^a[14], ^a[15])
	}
	return ReasonAllowed
}

// embedded judges an IPv4 address carried inside an IPv6 one.
func embedded(a, b, c, d byte) Reason {
	if forbidden4(netip.AddrFrom4([4]byte{a, b, c, d})) != ReasonAllowed {
		return ReasonEmbedded
	}
	return ReasonAllowed
}

func forbidden4(ip netip.Addr) Reason {
	switch {
	case ip.IsUnspecified():
		return ReasonUnspecified
	case ip.IsLoopback():
		return ReasonLoopback
	case ip.IsMulticast():
		return ReasonMulticast
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return ReasonBroadcast
	case ip == metadata4:
		return ReasonMetadata
	case ip.IsLinkLocalUnicast():
		return ReasonLinkLocal
	}
	for _, p := range private4 {
		if p.Contains(ip) {
			return ReasonPrivate
		}
	}
	for _, p := range reserved4 {
		if p.Contains(ip) {
			return ReasonReserved
		}
	}
	return ReasonAllowed
}

// ParseLiteral reports whether host, a name as a workstation or a DNS
// query spells it (an optional trailing dot; IPv6 optionally in brackets),
// is an IP address literal, and returns the address. Besides the canonical
// forms it accepts what BSD inet_aton, and so glibc's resolver and Tor's
// own address parser on some platforms, accept: one to four parts, each
// decimal, octal (leading 0) or hexadecimal (0x), the last one filling the
// remaining bytes: "127.1", "0x7f.0.0.1", "2130706433", "017700000001".
// A name that parses here must never be treated as a host name: somebody
// along the way may read it as the address.
func ParseLiteral(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(host, ".")
	if n := len(host); n >= 2 && host[0] == '[' && host[n-1] == ']' {
		host = host[1 : n-1]
	}
	if host == "" {
		return netip.Addr{}, false
	}
	if strings.IndexByte(host, ':') >= 0 {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return netip.Addr{}, false
		}
		return ip.WithZone(""), true
	}
	return parseInetAton(host)
}

// parseInetAton parses the numbers-and-dots notation of inet_aton(3).
func parseInetAton(s string) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for {
		if n == 4 {
			return netip.Addr{}, false
		}
		end := strings.IndexByte(s, '.')
		part := s
		if end >= 0 {
			part = s[:end]
		}
		v, ok := parseAtonPart(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if end < 0 {
			break
		}
		s = s[end+1:]
	}
	// All parts but the last are one byte; the last fills the rest.
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (8 * (3 - i))
	}
	last := parts[n-1]
	if last > 0xffffffff>>(8*(n-1)) {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseAtonPart parses one inet_aton number: 0x hexadecimal, leading-0
// octal, or decimal. Values above 32 bits are rejected.
func parseAtonPart(s string) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) == 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		return 0, true // inet_aton accepts a bare "0x" as 0
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		if v = v*base + d; v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}
