//go:build unix

package dns

import "syscall"

// openFlags make opening a state file never wait and never take a
// terminal: O_NONBLOCK, so that a FIFO swapped in after openRegular's
// look returns at once instead of waiting for a writer (it does nothing to
// reads of a regular file), and O_NOCTTY.
const openFlags = syscall.O_NONBLOCK | syscall.O_NOCTTY
