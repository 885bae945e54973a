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

// Done returns a channel closed when the stack stops forwarding: its
// packet loop failed (Err says why) or it was closed.
func (s *Stack) Done() <-chan struct{} { return s.done }

// fail records why the packet loop ended and wakes Done's waiters.
func (s *Stack) fail(err error) {
	s.loopErr.CompareAndSwap(nil, err)
	s.stopped()
}

// stopped closes Done's channel once.
func (s *Stack) stopped() { s.doneOnce.Do(func() { close(s.done) }) }
