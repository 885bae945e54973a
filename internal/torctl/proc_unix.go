//go:build unix

package torctl

import (
	"syscall"
)

// sysProcAttr puts tor in its own process group, so that a Ctrl-C on
// torgate's terminal reaches torgate, which then stops tor in order,
// rather than both at once (which would look like a crash to restart).
// With ra, tor starts as that user with its primary group and no
// supplementary groups: it never runs as root (see the package doc).
func sysProcAttr(ra *runAs) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if ra != nil {
		a.Credential = &syscall.Credential{Uid: uint32(ra.uid), Gid: uint32(ra.gid), Groups: []uint32{}}
	}
	return a
}
