//go:build !unix

package torctl

import (
	"syscall"
)

func sysProcAttr(*runAs) *syscall.SysProcAttr { return nil }
