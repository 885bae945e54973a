package testnet

import "syscall"

// sysProcAttr makes the kernel send SIGTERM to tor when the thread that
// started it dies, so a test binary killed with SIGKILL does not leave tors
// running for the ~15 s __OwningControllerProcess needs to notice. The Go
// runtime only ends a thread when a goroutine exits while locked to it,
// which the harness never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
