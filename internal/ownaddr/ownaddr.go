// Package ownaddr knows the host's own addresses, on every interface of
// the network namespace it runs in, as they are now: what a gateway must
// never let a workstation reach through Tor (an exit connecting to the
// gateway's public address reaches the gateway's own services from
// outside, and confirms who the gateway is).
package ownaddr

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxAge bounds how old the snapshot a lookup uses may be: an address the
// uplink gains (DHCP, SLAAC) is known within it. A refresh is one netlink
// dump (~100 µs), at most once per maxAge, on the flow that finds the
// snapshot stale.
const maxAge = time.Second

// Set is the host's addresses. The zero Set is not usable; use New.
type Set struct {
	list func() ([]net.Addr, error)
	now  func() time.Time

	snap      atomic.Pointer[snapshot]
	refreshMu sync.Mutex // one refresh at a time
}

type snapshot struct {
	at    time.Time
	addrs map[netip.Addr]struct{}
}

// New returns the Set of the calling process's network namespace.
func New() *Set {
	s := &Set{list: net.InterfaceAddrs, now: time.Now}
	s.refresh()
	return s
}

// Contains reports whether a is one of the host's addresses (refreshing
// the snapshot if it is older than maxAge). If the addresses cannot be
// listed, the last snapshot stands.
func (s *Set) Contains(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	sn := s.snap.Load()
	if sn == nil || s.now().Sub(sn.at) > maxAge {
		sn = s.refresh()
	}
	if sn == nil {
		return false
	}
	_, ok := sn.addrs[a]
	return ok
}

func (s *Set) refresh() *snapshot {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if sn := s.snap.Load(); sn != nil && s.now().Sub(sn.at) <= maxAge {
		return sn // another flow refreshed it meanwhile
	}
	list, err := s.list()
	if err != nil {
		return s.snap.Load()
	}
	sn := &snapshot{at: s.now(), addrs: make(map[netip.Addr]struct{}, len(list))}
	for _, a := range list {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				sn.addrs[ip.Unmap()] = struct{}{}
			}
		}
	}
	s.snap.Store(sn)
	return sn
}
