//go:build !unix

package torctl

import (
	"os"
	"syscall"
)

func sysProcAttr(*runAs) *syscall.SysProcAttr { return nil }

func fileOwner(os.FileInfo) (uid, gid int) { return -1, -1 }
