//go:build !linux

package socks

import "syscall"

// noPortAtBind is nil where IP_BIND_ADDRESS_NO_PORT does not exist (see
// bind_linux.go).
var noPortAtBind func(network, address string, c syscall.RawConn) error
