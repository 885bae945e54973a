//go:build !unix

package torctl

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
