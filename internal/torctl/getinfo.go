package torctl

import (
	"context"
	"fmt"
	"strings"
)

// GetInfo runs GETINFO for keys on the live control connection and
// returns the value of each, bounded by CommandTimeout. It returns
// ErrNotConnected while there is no connection (Tor restarting or
// unreachable). It is for callers that answer others from what Tor
// knows (internal/ctlport): a key that is not one token of printable
// ASCII is refused before anything is sent, so no caller can smuggle a
// second command onto torgate's privileged connection.
func (t *Tor) GetInfo(ctx context.Context, keys ...string) (map[string]string, error) {
	if len(keys) == 0 {
		return map[string]string{}, nil
	}
	for _, k := range keys {
		if !isInfoKey(k) {
			return nil, fmt.Errorf("getinfo: %w: bad key %q", ErrSyntax, k)
		}
	}
	t.mu.Lock()
	c, connected := t.cur, t.st.Connected
	t.mu.Unlock()
	if c == nil || !connected {
		return nil, ErrNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.CommandTimeout)
	defer cancel()
	return c.GetInfo(ctx, keys...)
}

// isInfoKey reports whether k is one GETINFO keyword: printable ASCII
// without spaces or quotes.
func isInfoKey(k string) bool {
	return k != "" && !strings.ContainsFunc(k, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || r == '"'
	})
}
