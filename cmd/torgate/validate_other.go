//go:build !linux

package main

// writableDir is checked when the directory is made, off Linux.
func writableDir(string) error { return nil }

// tunNameFree: torgate runs on Linux only; creating the TUN fails there.
func tunNameFree(string) error { return nil }
