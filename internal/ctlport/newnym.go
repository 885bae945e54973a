package ctlport

import (
	"net/netip"
	"time"
)

// nymState is one workstation's NEWNYM rate limit.
type nymState struct {
	last    time.Time   // the last NewIdentity call (or its start)
	pending *time.Timer // an early NEWNYM waiting for the interval; nil if none
}

// newnym carries out SIGNAL NEWNYM for who: NewIdentity at once if its
// last one is NewNymInterval old, else once when the interval ends (as
// Tor delays an early NEWNYM and answers it 250 OK). It returns the
// result for the metric and NewIdentity's error, if it was called.
func (s *Server) newnym(who netip.Addr) (string, error) {
	now := s.now()
	s.nymMu.Lock()
	st := s.nym[who]
	if st == nil {
		if len(s.nym) >= maxNymStates {
			s.pruneNymLocked(now)
		}
		st = &nymState{}
		s.nym[who] = st
	}
	switch {
	case st.pending != nil:
		s.nymMu.Unlock()
		return nymCoalesced, nil
	case !st.last.IsZero() && now.Sub(st.last) < NewNymInterval:
		if s.ctx.Err() != nil {
			s.nymMu.Unlock()
			return nymCoalesced, nil // closing: nothing is scheduled any more
		}
		s.wg.Add(1) // Done when the timer has run, or in stopNym
		st.pending = time.AfterFunc(st.last.Add(NewNymInterval).Sub(now), func() {
			defer s.wg.Done()
			s.delayedNewnym(who)
		})
		s.nymMu.Unlock()
		return nymDelayed, nil
	}
	prev := st.last
	st.last = now
	s.nymMu.Unlock()
	if err := s.cfg.NewIdentity(who); err != nil {
		s.nymMu.Lock()
		if st.last.Equal(now) {
			st.last = prev // a failed one does not count against the limit
		}
		s.nymMu.Unlock()
		return nymFailed, err
	}
	return nymDone, nil
}

// delayedNewnym runs an early NEWNYM when its interval has ended.
func (s *Server) delayedNewnym(who netip.Addr) {
	s.nymMu.Lock()
	st := s.nym[who]
	if st == nil || st.pending == nil || s.ctx.Err() != nil {
		s.nymMu.Unlock()
		return
	}
	st.pending = nil
	st.last = s.now()
	s.nymMu.Unlock()
	if err := s.cfg.NewIdentity(who); err != nil {
		s.m.newnym.WithLabelValues(nymFailed).Inc()
		s.warnNewnym(err)
		return
	}
	s.m.newnym.WithLabelValues(nymDone).Inc()
}

// pruneNymLocked forgets workstations whose last NEWNYM is past the
// interval and that have none waiting: they would be served at once
// anyway.
func (s *Server) pruneNymLocked(now time.Time) {
	for who, st := range s.nym {
		if st.pending == nil && now.Sub(st.last) >= NewNymInterval {
			delete(s.nym, who)
		}
	}
}

// stopNym cancels the NEWNYMs waiting for their interval (Close).
func (s *Server) stopNym() {
	s.nymMu.Lock()
	defer s.nymMu.Unlock()
	for _, st := range s.nym {
		if st.pending != nil && st.pending.Stop() {
			s.wg.Done()
		}
		st.pending = nil
	}
}

// warnNewnym logs a failed NewIdentity at most once per NewNymInterval:
// a failed one does not count against a workstation's rate, so a
// workstation could otherwise fill the log at the command rate.
func (s *Server) warnNewnym(err error) {
	now := s.now().UnixNano()
	last := s.nymWarned.Load()
	if last != 0 && now-last < int64(NewNymInterval) {
		return
	}
	if !s.nymWarned.CompareAndSwap(last, now) {
		return // another goroutine logs this one
	}
	s.log.Warn("workstation new identity failed", "err", err)
}
