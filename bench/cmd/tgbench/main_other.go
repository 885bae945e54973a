//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

// tgbench builds network namespaces and TUN devices: Linux only. This
// file keeps "go build ./..." and "go vet ./..." working on other systems,
// as everything else in torgate does (see the torgate package's
// tun_other.go).
func main() {
	fmt.Fprintf(os.Stderr, "tgbench: torgate runs on Linux only (this is %s)\n", runtime.GOOS)
	os.Exit(1)
}
