// Package privs drops the Linux capabilities a root torgate no longer
// needs once it is set up, on every thread of the process.
//
// Capabilities are per thread, and a Go program runs on many threads, so
// Keep changes them with syscall.AllThreadsSyscall: the effective,
// permitted and inheritable sets (capset), the ambient set, and the
// bounding set (PR_CAPBSET_DROP), the last so that a program torgate
// later starts as root (a restarted tor without a user switch) cannot
// regain what was dropped. The uid stays 0: torgate keeps owning its
// state directory and its TUN; see the package doc of cmd/torgate for
// where it is called.
//
// AllThreadsSyscall refuses to run in a binary that links cgo (threads
// created by C are out of its reach): Keep then returns ErrCgo and
// changes nothing. Build torgate with CGO_ENABLED=0 (it needs no C: the
// pure-Go os/user reads /etc/passwd and torgate resolves no names).
package privs

import (
	"errors"
	"fmt"
	"strings"
)

// Cap is a Linux capability number (linux/capability.h).
type Cap uint

// The capabilities torgate may keep.
const (
	CapDACOverride   Cap = 1
	CapDACReadSearch Cap = 2
	CapKill          Cap = 5
	CapSetGID        Cap = 6
	CapSetUID        Cap = 7
	CapSetPCAP       Cap = 8
	CapNetAdmin      Cap = 12
	CapSysAdmin      Cap = 21
)

var capNames = map[Cap]string{
	CapDACOverride: "CAP_DAC_OVERRIDE", CapDACReadSearch: "CAP_DAC_READ_SEARCH",
	CapKill: "CAP_KILL", CapSetGID: "CAP_SETGID", CapSetUID: "CAP_SETUID",
	CapSetPCAP: "CAP_SETPCAP", CapNetAdmin: "CAP_NET_ADMIN", CapSysAdmin: "CAP_SYS_ADMIN",
}

func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("cap%d", uint(c))
}

// Set is a set of capabilities as a bit mask (bit n = capability n), the
// form /proc/PID/status prints in hex.
type Set uint64

// SetOf returns the set of caps.
func SetOf(caps ...Cap) Set {
	var s Set
	for _, c := range caps {
		s |= 1 << c
	}
	return s
}

// Has reports whether c is in s.
func (s Set) Has(c Cap) bool { return s&(1<<c) != 0 }

func (s Set) String() string {
	var names []string
	for c := Cap(0); c < 64; c++ {
		if s.Has(c) {
			names = append(names, c.String())
		}
	}
	return strings.Join(names, ",")
}

// Errors.
var (
	// ErrCgo: the binary links cgo, so capabilities cannot be changed on
	// all threads; nothing was changed. Not fatal: the caller warns.
	ErrCgo = errors.New("privs: capabilities are per thread and this binary links cgo, which rules out changing them on every thread; build with CGO_ENABLED=0")
	// ErrUnsupported: not Linux.
	ErrUnsupported = errors.New("privs: capabilities are Linux only")
)
