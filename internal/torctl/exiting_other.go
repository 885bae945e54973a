//go:build !linux

package torctl

// procState has no evidence to offer outside Linux.
func procState(int) (exiting, known bool) { return false, false }
