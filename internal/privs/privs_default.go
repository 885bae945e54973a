//go:build !linux

package privs

// CanDrop returns ErrUnsupported: there is nothing to drop outside Linux.
func CanDrop() error { return ErrUnsupported }

// Keep returns ErrUnsupported: there is nothing to drop outside Linux.
func Keep(Set) error { return ErrUnsupported }

// Sets are a process's capability sets.
type Sets struct {
	Effective, Permitted, Inheritable, Bounding, Ambient Set
}

// Read returns ErrUnsupported.
func Read(int) (Sets, error) { return Sets{}, ErrUnsupported }
