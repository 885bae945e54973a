//go:build !unix

package dns

// openFlags: no O_NONBLOCK here; readBounded's time limit is what bounds
// an open that waits.
const openFlags = 0
