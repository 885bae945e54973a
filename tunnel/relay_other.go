//go:build !unix

package tunnel

import "net"

// socketWaiter is unix-only (a MSG_PEEK through the poller); elsewhere a
// relay holds its buffer while it waits.
type socketWaiter struct{}

func newSocketWaiter(net.Conn) *socketWaiter { return nil }

func (*socketWaiter) WaitRead() error { return nil }
