//go:build !linux

package torctl

import "net"

// verifyPeer has no kernel to ask outside Linux.
func verifyPeer(net.Conn, int) (procEvidence, error) {
	return procEvidence{}, &EvidenceError{Reason: "process evidence needs Linux"}
}

// procStateSince has no evidence to offer outside Linux.
func procStateSince(int, uint64) (gone, known bool) { return false, false }
