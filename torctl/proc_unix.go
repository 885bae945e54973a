//go:build unix

package torctl

import "syscall"

// sysProcAttr puts tor in its own process group, so that a Ctrl-C on
// torgate's terminal reaches torgate, which then stops tor in order,
// rather than both at once (which would look like a crash to restart).
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
