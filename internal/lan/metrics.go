package lan

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// reason is why a frame or packet was dropped; a bounded metric label.
type reason uint8

const (
	reasonMalformed     reason = iota // truncated or inconsistent headers
	reasonNotForUs                    // unicast to another MAC (IFACE is promiscuous)
	reasonVLAN                        // 802.1Q/802.1ad tagged
	reasonEtherType                   // neither ARP, IPv4 nor IPv6 (LLDP, STP, ...)
	reasonARPIgnored                  // ARP not for one of our addresses, or unusable
	reasonNDPIgnored                  // RS, RA, redirect, MLD, or NS/NA not for us
	reasonNDPInvalid                  // NS/NA failing RFC 4861 7.1 validation
	reasonSpoofedSource               // IP source outside the LAN's prefixes, or ours
	reasonMulticastIP                 // IP to a broadcast or multicast MAC
	reasonTooBig                      // larger than the buffer or the link MTU
	reasonNoRoute                     // outbound destination on no LAN
	reasonNoNeighbour                 // outbound destination did not resolve
	reasonQueueFull                   // outbound packet while resolution queue full; inbound packet a proof released while the queue to netstack is full (direct mode)
	reasonTableFull                   // neighbour table at its bound
	reasonWriteError                  // the link refused the frame (down, gone)
	reasonUnproven                    // inbound from a source whose resolution failed or had no room
	reasonConflict                    // another MAC claimed a bound address, or the gateway's own
	reasonMachineBudget               // a new MAC answered, beyond the new-machine rate
	reasonBadOffload                  // a virtio-net header the gateway never asked for, or inconsistent with its frame
	numReasons
)

var reasonNames = [numReasons]string{
	reasonMalformed:     "malformed",
	reasonNotForUs:      "not_for_us",
	reasonVLAN:          "vlan",
	reasonEtherType:     "ethertype",
	reasonARPIgnored:    "arp_ignored",
	reasonNDPIgnored:    "ndp_ignored",
	reasonNDPInvalid:    "ndp_invalid",
	reasonSpoofedSource: "spoofed_source",
	reasonMulticastIP:   "multicast_ip",
	reasonTooBig:        "too_big",
	reasonNoRoute:       "no_route",
	reasonNoNeighbour:   "no_neighbour",
	reasonQueueFull:     "queue_full",
	reasonTableFull:     "table_full",
	reasonWriteError:    "write_error",
	reasonUnproven:      "unproven_source",
	reasonConflict:      "address_conflict",
	reasonMachineBudget: "machine_budget",
	reasonBadOffload:    "bad_offload",
}

func (r reason) String() string { return reasonNames[r] }

// sentKind labels the control frames the link layer originates.
type sentKind uint8

const (
	sentARPReply sentKind = iota
	sentARPRequest
	sentNA
	sentNS
	numSent
)

var sentNames = [numSent]string{"arp_reply", "arp_request", "na", "ns"}

// Stats are the link layer's counters, updated atomically.
type Stats struct {
	FramesIn, FramesOut atomic.Uint64
	Drops               [numReasons]atomic.Uint64
	Sent                [numSent]atomic.Uint64
}

// Drop returns the drop count for a reason name ("not_for_us", ...), for
// tests and diagnostics; 0 for an unknown name.
func (s *Stats) Drop(name string) uint64 {
	for i, n := range reasonNames {
		if n == name {
			return s.Drops[i].Load()
		}
	}
	return 0
}

var (
	descFramesIn  = prometheus.NewDesc("lan_frames_in_total", "Ethernet frames read from the LAN interfaces.", nil, nil)
	descFramesOut = prometheus.NewDesc("lan_frames_out_total", "Ethernet frames written to the LAN interfaces.", nil, nil)
	descDrops     = prometheus.NewDesc("lan_drops_total", "Frames and packets the LAN link layer dropped, by reason.", []string{"reason"}, nil)
	descSent      = prometheus.NewDesc("lan_control_sent_total", "ARP and neighbour discovery frames the gateway sent, by kind (a failed write also counts as a write_error drop).", []string{"kind"}, nil)
	descNeigh     = prometheus.NewDesc("lan_neighbours", "Neighbour table entries, by state.", []string{"state"}, nil)
)

// collector copies the counters at scrape time: the packet path pays
// nothing for metrics.
type collector struct{ d *Device }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFramesIn
	ch <- descFramesOut
	ch <- descDrops
	ch <- descSent
	ch <- descNeigh
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.d.stats
	ch <- prometheus.MustNewConstMetric(descFramesIn, prometheus.CounterValue, float64(s.FramesIn.Load()))
	ch <- prometheus.MustNewConstMetric(descFramesOut, prometheus.CounterValue, float64(s.FramesOut.Load()))
	for i := range numReasons {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(s.Drops[i].Load()), reasonNames[i])
	}
	for i := range numSent {
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Sent[i].Load()), sentNames[i])
	}
	var counts [numStates]int
	for _, p := range c.d.ports {
		p.countStates(&counts)
	}
	for i := range numStates {
		ch <- prometheus.MustNewConstMetric(descNeigh, prometheus.GaugeValue, float64(counts[i]), stateNames[i])
	}
}
