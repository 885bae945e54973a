package ownaddr

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestContains(t *testing.T) {
	now := time.Unix(1000, 0)
	addrs := []net.Addr{&net.IPNet{IP: net.ParseIP("198.18.1.1"), Mask: net.CIDRMask(24, 32)}}
	var fail error
	s := &Set{list: func() ([]net.Addr, error) { return addrs, fail }, now: func() time.Time { return now }}
	if !s.Contains(netip.MustParseAddr("198.18.1.1")) || !s.Contains(netip.MustParseAddr("::ffff:198.18.1.1")) {
		t.Fatal("own address not found")
	}
	if s.Contains(netip.MustParseAddr("198.18.1.2")) {
		t.Fatal("another address taken for own")
	}
	// The uplink gains an address: known once the snapshot is stale.
	addrs = append(addrs, &net.IPNet{IP: net.ParseIP("2001:db8:1e01::1"), Mask: net.CIDRMask(64, 128)})
	now = now.Add(maxAge + time.Millisecond)
	if !s.Contains(netip.MustParseAddr("2001:db8:1e01::1")) {
		t.Fatal("new address not seen after maxAge")
	}
	// Listing fails: the last snapshot stands.
	fail = errors.New("netlink down")
	now = now.Add(2 * maxAge)
	if !s.Contains(netip.MustParseAddr("198.18.1.1")) {
		t.Fatal("a failed refresh forgot the addresses")
	}
}

// TestHost: the real host's loopback address is its own.
func TestHost(t *testing.T) {
	if !New().Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("127.0.0.1 is not among the host's addresses")
	}
}
