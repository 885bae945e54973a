package netstack

import "errors"

// ErrStopped is returned by Err once the stack was closed or its packet
// loop ended.
var ErrStopped = errors.New("netstack: packet loop stopped")

// Err reports why the stack cannot forward: nil while the packet loop
// runs.
func (s *Stack) Err() error {
	if s.ctx.Err() != nil {
		return ErrStopped
	}
	if err, ok := s.loopErr.Load().(error); ok {
		return err
	}
	return nil
}
