//go:build !unix

package dns

import "os"

// openRegular opens path for reading if it is a regular file (a symbolic
// link to one is fine), and returns a *NotRegularError otherwise. It looks
// before it opens, and checks again what it opened; without O_NONBLOCK
// here, readBounded's time limit is what bounds an open that waits.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
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
