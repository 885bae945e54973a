//go:build !linux

package tunnel

import "net"

// tcpClosed is Linux-only (TCP_INFO); elsewhere a reset that a write met
// first is passed on as the read then reports it.
func tcpClosed(net.Conn) bool { return false }
