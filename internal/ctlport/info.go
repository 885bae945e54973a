package ctlport

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Keys answered from Tor's own GETINFO.
const (
	keyVersion    = "version"
	keyCircuit    = "status/circuit-established"
	keyBootstrap  = "status/bootstrap-phase"
	keyValidAfter = "consensus/valid-after"
	keyFreshUntil = "consensus/fresh-until"
	keyValidUntil = "consensus/valid-until"
	// keySocks is answered by torgate: the gateway's SOCKS listeners.
	keySocks = "net/listeners/socks"
)

// torKeys are the only keys ctlport ever asks Tor for.
var torKeys = map[string]bool{
	keyVersion: true, keyCircuit: true, keyBootstrap: true,
	keyValidAfter: true, keyFreshUntil: true, keyValidUntil: true,
}

// errUnavailable: a key ctlport serves has no answer now (no Tor, Tor
// down or not answering). The reply is 551.
var errUnavailable = errors.New("not available")

// infoKey is a GETINFO key as one Tor answers it (each Tor instance
// has its own answers).
type infoKey struct {
	tor Tor
	key string
}

// cachedInfo is one of Tor's answers and when it was fetched.
type cachedInfo struct {
	val string
	at  time.Time
}

// infoValues answers keys, all of them served keys (torKeys or
// keySocks), for a workstation connected to local.
func (c *session) infoValues(keys []string) (map[string]string, error) {
	vals := make(map[string]string, len(keys))
	var ask []string
	for _, k := range keys {
		if k == keySocks {
			vals[k] = c.socksListeners()
		} else if _, ok := vals[k]; !ok && !slices.Contains(ask, k) {
			ask = append(ask, k)
		}
	}
	if len(ask) == 0 {
		return vals, nil
	}
	got, err := c.s.torInfo(c.who, ask)
	if err != nil {
		return nil, err
	}
	for k, v := range got {
		vals[k] = v
	}
	return vals, nil
}

// socksListeners is net/listeners/socks's value: each listener quoted,
// separated by spaces, as Tor writes it.
func (c *session) socksListeners() string {
	var b strings.Builder
	for i, ap := range c.s.cfg.SOCKSListeners(c.local) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(ap.String()))
	}
	return b.String()
}

// torInfo returns the values of who's Tor for keys (of torKeys), from the
// cache when younger than infoTTL.
func (s *Server) torInfo(who netip.Addr, keys []string) (map[string]string, error) {
	if s.cfg.Tor == nil {
		return s.plainInfo(keys)
	}
	tor := s.cfg.Tor(who)
	now := s.now()
	vals := make(map[string]string, len(keys))
	var ask []string
	s.infoMu.Lock()
	for _, k := range keys {
		if ci, ok := s.info[infoKey{tor, k}]; ok && now.Sub(ci.at) < infoTTL && !ci.at.After(now) {
			vals[k] = ci.val
		} else {
			ask = append(ask, k)
		}
	}
	s.infoMu.Unlock()
	if len(ask) == 0 {
		return vals, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, torTimeout)
	defer cancel()
	got, err := tor.GetInfo(ctx, ask...)
	if err != nil {
		s.m.torErrors.Inc()
		s.log.Debug("getinfo from tor failed", "err", err)
		return nil, errUnavailable
	}
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	for _, k := range ask {
		v, ok := got[k]
		if !ok {
			s.m.torErrors.Inc()
			return nil, errUnavailable
		}
		vals[k] = v
		s.info[infoKey{tor, k}] = cachedInfo{val: v, at: now}
	}
	return vals, nil
}

// plainInfo answers without a control connection (plain SOCKS mode):
// readiness is all torgate knows.
func (s *Server) plainInfo(keys []string) (map[string]string, error) {
	ready := s.cfg.Ready == nil || s.cfg.Ready() == nil
	vals := make(map[string]string, len(keys))
	for _, k := range keys {
		switch {
		case k == keyCircuit && ready:
			vals[k] = "1"
		case k == keyCircuit:
			vals[k] = "0"
		case k == keyBootstrap && ready:
			vals[k] = `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`
		default:
			return nil, errUnavailable
		}
	}
	return vals, nil
}

// torVersion is the version PROTOCOLINFO names to who: its Tor's, or
// FallbackVersion.
func (s *Server) torVersion(who netip.Addr) string {
	if s.cfg.Tor != nil {
		if v, err := s.torInfo(who, []string{keyVersion}); err == nil && isQuotable(v[keyVersion]) {
			return v[keyVersion]
		}
	}
	return FallbackVersion
}

// isQuotable: s can go inside a quoted string as it is.
func isQuotable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == '"' || r == '\\' || r == 0x7f })
}
