package dns

import (
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// maxNameLen is the longest name in presentation form without the trailing
// dot: 255 wire bytes minus the length byte of the first label and the root
// label.
const maxNameLen = 253

// nameKind is what the name policy makes of a normalized name.
type nameKind uint8

const (
	nameNormal    nameKind = iota // automap or resolve, by Mode
	nameOnion                     // *.onion: always automapped
	nameLocalhost                 // localhost, *.localhost: loopback, answered here
	nameBlocked                   // NXDOMAIN: never leaves torgate
)

// normalize writes the lowercase form of n without the trailing dot into
// buf and returns it. ok is false if n is the root or has a byte that is not
// a letter, digit, '-' or '_': such a name cannot be a hostname Tor would
// connect to, and ASCII-only lowercasing stays exact. dnsmessage has already
// rejected empty labels, dots inside labels and names over 255 wire bytes.
func normalize(n *dnsmessage.Name, buf *[255]byte) (key []byte, ok bool) {
	l := int(n.Length)
	if l <= 1 || l > len(n.Data) { // "." is the root
		return nil, false
	}
	data := n.Data[:l]
	if data[l-1] == '.' {
		data = data[:l-1]
	}
	for i, c := range data {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return nil, false
		}
		buf[i] = c
	}
	return buf[:len(data)], true
}

// validName reports whether s is a normalized name as normalize returns it:
// used for names from the state file and from ResolvePTR.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}

// hasSuffix reports whether key is suffix or ends in "."+suffix.
func hasSuffix(key []byte, suffix string) bool {
	n, m := len(key), len(suffix)
	if n < m || string(key[n-m:]) != suffix {
		return false
	}
	return n == m || key[n-m-1] == '.'
}

// blockedSuffixes never leave torgate, whatever the Mode; queries for them
// get NXDOMAIN. Each is either meaningless on the Internet or would tell an
// exit something about the workstation's network:
//   - exit: Tor's ".exit" notation picks an exit relay; Tor refuses it by
//     default (AllowDotExit) because a page could choose the exit.
//   - local: multicast DNS (RFC 6762), never unicast DNS.
//   - invalid: RFC 6761 §6.4, always NXDOMAIN.
//   - internal: private-use TLD (ICANN 2024).
//   - home.arpa: home networks (RFC 8375).
//   - arpa: infrastructure; only PTR names under it are answered, by the PTR
//     path, never by A/AAAA.
var blockedSuffixes = [...]string{"exit", "local", "invalid", "internal", "home.arpa", "arpa"}

// classify applies the name policy to a normalized name.
func classify(key []byte) nameKind {
	if hasSuffix(key, "localhost") {
		return nameLocalhost
	}
	dot := false
	for _, c := range key {
		if c == '.' {
			dot = true
			break
		}
	}
	if !dot {
		// A single label ("wpad", "printer", a bare TLD) is a local or
		// search-list name; no exit can resolve it, so asking one only
		// tells it what the LAN calls its hosts.
		return nameBlocked
	}
	for _, s := range blockedSuffixes {
		if hasSuffix(key, s) {
			return nameBlocked
		}
	}
	if hasSuffix(key, "onion") {
		return nameOnion
	}
	return nameNormal
}

// parseReverse parses a full reverse-lookup name, "d.c.b.a.in-addr.arpa"
// or the 32-nibble "….ip6.arpa", in normalized form. Partial names (a
// network, not an address) and non-canonical spellings are not addresses.
func parseReverse(key []byte) (netip.Addr, bool) {
	const v4suffix, v6suffix = ".in-addr.arpa", ".ip6.arpa"
	n := len(key)
	if n > len(v4suffix) && string(key[n-len(v4suffix):]) == v4suffix {
		key = key[:n-len(v4suffix)]
		var a [4]byte
		for i := 3; i >= 0; i-- {
			v, rest, ok := decimalLabel(key)
			if !ok {
				return netip.Addr{}, false
			}
			a[i], key = v, rest
		}
		if len(key) != 0 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4(a), true
	}
	if n != 63+len(v6suffix) || string(key[63:]) != v6suffix {
		return netip.Addr{}, false
	}
	var a [16]byte
	for i := 0; i < 32; i++ {
		// key[63] is the dot that starts v6suffix.
		c, sep := key[2*i], key[2*i+1]
		if sep != '.' {
			return netip.Addr{}, false
		}
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			return netip.Addr{}, false
		}
		// The first label is the lowest nibble of the last byte.
		b := 15 - i/2
		if i%2 == 0 {
			a[b] |= v
		} else {
			a[b] |= v << 4
		}
	}
	return netip.AddrFrom16(a), true
}

// decimalLabel parses one canonical decimal octet label (no leading zero,
// at most 255) from the front of key and skips the following dot, if any.
func decimalLabel(key []byte) (v byte, rest []byte, ok bool) {
	i, n := 0, 0
	for i < len(key) && key[i] != '.' {
		c := key[i]
		if c < '0' || c > '9' || i >= 3 || (i == 1 && key[0] == '0') {
			return 0, nil, false
		}
		n = n*10 + int(c-'0')
		i++
	}
	if i == 0 || n > 255 {
		return 0, nil, false
	}
	rest = key[i:]
	if len(rest) > 0 {
		rest = rest[1:]
		if len(rest) == 0 { // trailing dot: empty label
			return 0, nil, false
		}
	}
	return byte(n), rest, true
}

// setName sets n to s plus the trailing dot. It reports false if s does
// not fit.
func setName(n *dnsmessage.Name, s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	l := copy(n.Data[:], s)
	n.Data[l] = '.'
	n.Length = uint8(l + 1)
	return true
}
