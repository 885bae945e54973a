//go:build !linux

package lan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// Config configures Open.
type Config struct {
	Interfaces []string
	Logger     *slog.Logger
}

// ErrBusy means another torgate serves the interface.
var ErrBusy = errors.New("another torgate serves this LAN")

var errNotLinux = fmt.Errorf("lan: LAN interfaces need Linux (macvtap): %w", errors.ErrUnsupported)

// Open needs Linux.
func Open(Config) (*Device, error) { return nil, errNotLinux }

// Down needs Linux.
func Down(string) error { return errNotLinux }

// Guard needs Linux.
func Guard(...string) error { return errNotLinux }

// ErrNoInterface means the interface named does not exist.
var ErrNoInterface = errors.New("no such interface")

// Info is what Inspect reads of a LAN interface.
type Info struct {
	Prefixes []netip.Prefix
	Taken    bool
	Guarded  bool
}

// Exists needs Linux.
func Exists(string) (bool, error) { return false, errNotLinux }

// Inspect needs Linux.
func Inspect(string) (Info, error) { return Info{}, errNotLinux }
