//go:build !linux

package main

// Off Linux torgate only compiles (see exec_other.go): no progress bar.

func isTerminal(fd int) bool { return false }

func terminalColumns(fd int) int { return 0 }
