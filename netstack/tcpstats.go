package netstack

// TCPCounter is one of gVisor's own TCP counters, by a stable name.
type TCPCounter struct {
	Name  string
	Value uint64
}

// TCPCounters returns gVisor's own TCP counters (a fixed, bounded set of
// names) and the number of endpoints in ESTABLISHED or CLOSE-WAIT, read
// now, for scrape-time metrics. gVisor's tcpip.Stats stays inside the
// package; the names are what metrics label them with.
func (s *Stack) TCPCounters() (counters []TCPCounter, established uint64) {
	tcp := s.stack.Stats().TCP
	return []TCPCounter{
		{"passive_open", tcp.PassiveConnectionOpenings.Value()},
		{"failed_attempt", tcp.FailedConnectionAttempts.Value()},
		{"established_reset", tcp.EstablishedResets.Value()},
		{"established_timeout", tcp.EstablishedTimedout.Value()},
		{"segment_received", tcp.ValidSegmentsReceived.Value()},
		{"segment_invalid", tcp.InvalidSegmentsReceived.Value()},
		{"segment_sent", tcp.SegmentsSent.Value()},
		{"segment_send_error", tcp.SegmentSendErrors.Value()},
		{"reset_sent", tcp.ResetsSent.Value()},
		{"reset_received", tcp.ResetsReceived.Value()},
		{"retransmit", tcp.Retransmits.Value()},
		{"timeout", tcp.Timeouts.Value()},
		{"checksum_error", tcp.ChecksumErrors.Value()},
		{"forward_max_inflight_drop", tcp.ForwardMaxInFlightDrop.Value()},
	}, tcp.CurrentEstablished.Value()
}
