//go:build unix

package dns

import (
	"os"
	"syscall"
)

// openRegular opens path for reading if it is a regular file (a symbolic
// link to one is fine), and returns a *NotRegularError otherwise. It looks
// before it opens, so a device is never opened (opening some acts:
// /dev/watchdog arms the watchdog), and it opens with O_NONBLOCK, so that
// a FIFO swapped in after the look makes open return at once instead of
// waiting for a writer, and O_NOCTTY, so that a terminal does not become
// ours; then it checks again what it opened. O_NONBLOCK does nothing to
// reads of a regular file.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(path, fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if fi, err = f.Stat(); err == nil {
		err = checkRegular(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
