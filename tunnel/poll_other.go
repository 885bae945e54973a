//go:build !linux

package tunnel

import "net"

// poller is Linux-only (epoll); elsewhere an idle direction waits with a
// goroutine (socketWaiter) or blocks in Read.
type poller struct{}

func (t *Tunnel) socketSource(net.Conn, func()) source { return nil }

func (t *Tunnel) closePoller() {}
