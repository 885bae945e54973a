package socks

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// SOCKS5 address types (RFC 1928 section 5, ATYP).
const (
	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// maxNameLen is the longest hostname a SOCKS5 message can carry: its length
// travels in one byte.
const maxNameLen = 255

// Addr is a SOCKS destination: either a hostname or an IP, plus a port.
//
// Exactly one of Name and IP is set in a valid Addr. A hostname is sent to the
// server as is (ATYP 0x03), so Tor resolves it at the exit; an IP is sent as
// 4 or 16 bytes. Addr is comparable and can be used as a map key.
type Addr struct {
	// Name is a hostname of 1 to 255 bytes without NUL. It wins over IP.
	Name string
	// IP is the address, used when Name is empty. An IPv4 address is sent as
	// IPv4 (ATYP 0x01), anything else as 16 bytes (ATYP 0x04), including
	// IPv4-mapped IPv6 addresses. A zone cannot travel in SOCKS and is
	// ignored.
	IP netip.Addr
	// Port is the TCP port. CONNECT refuses port 0.
	Port uint16
}

// AddrFromAddrPort returns the Addr for ap. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d, as a dual-stack socket reports IPv4 peers) is unmapped so
// that Tor sees an IPv4 destination and applies IPv4 exit policies; the zone
// is dropped because SOCKS cannot carry it.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{IP: ap.Addr().Unmap().WithZone(""), Port: ap.Port()}
}

// HostPort returns the Addr for hostname name and port.
func HostPort(name string, port uint16) Addr {
	return Addr{Name: name, Port: port}
}

// String returns "host:port", with IPv6 addresses in brackets. It is meant
// for tests and debugging: destinations are private, so do not log it by
// default.
func (a Addr) String() string {
	port := strconv.FormatUint(uint64(a.Port), 10)
	switch {
	case a.Name != "":
		return net.JoinHostPort(a.Name, port)
	case a.IP.IsValid():
		return net.JoinHostPort(a.IP.WithZone("").String(), port)
	default:
		return net.JoinHostPort("", port)
	}
}

// validate reports why a cannot be encoded, without echoing the address.
func (a Addr) validate() error {
	if a.Name != "" {
		return validateName(a.Name)
	}
	if !a.IP.IsValid() {
		return fmt.Errorf("%w: destination has neither a hostname nor an IP", ErrInvalidRequest)
	}
	return nil
}

// validateName checks a hostname against what SOCKS5 can carry.
func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty hostname", ErrInvalidRequest)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: hostname is %d bytes, longer than %d", ErrInvalidRequest, len(name), maxNameLen)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: hostname contains a NUL byte", ErrInvalidRequest)
	}
	return nil
}

// appendAddr appends ATYP, the address and the port of a valid a to b.
func appendAddr(b []byte, a Addr) []byte {
	switch {
	case a.Name != "":
		b = append(b, atypDomain, byte(len(a.Name)))
		b = append(b, a.Name...)
	case a.IP.Is4():
		ip := a.IP.As4()
		b = append(b, atypIPv4)
		b = append(b, ip[:]...)
	default:
		ip := a.IP.As16()
		b = append(b, atypIPv6)
		b = append(b, ip[:]...)
	}
	return append(b, byte(a.Port>>8), byte(a.Port))
}

// appendMessage appends a request or reply: VER, CMD or REP, RSV, then the
// address. Requests and replies share this layout (RFC 1928 sections 4 and
// 6).
func appendMessage(b []byte, code byte, a Addr) []byte {
	b = append(b, version5, code, 0)
	return appendAddr(b, a)
}
