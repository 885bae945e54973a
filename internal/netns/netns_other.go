//go:build !linux

package netns

import (
	"errors"
	"fmt"
	"runtime"
)

// Do fails: network namespaces exist on Linux only. The package compiles
// elsewhere so that code importing it still builds and vets there (see
// torgate's tun_other.go for why torgate builds on every OS).
func Do(name string, fn func() error) error {
	return fmt.Errorf("enter network namespace %s: torgate runs on Linux only (this is %s): %w", name, runtime.GOOS, errors.ErrUnsupported)
}
