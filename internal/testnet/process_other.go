//go:build !linux

package testnet

import "syscall"

// sysProcAttr has nothing to add outside Linux; __OwningControllerProcess
// in every torrc still stops orphaned tors.
func sysProcAttr() *syscall.SysProcAttr { return nil }
