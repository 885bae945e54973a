package testnet

// Tor's view of streams and circuits, for tests to assert on: the
// client's GETINFO stream-status and circuit-status, and STREAM events.

import (
	"context"
	"fmt"
	"strings"

	"github.com/torgate/torgate/internal/torctl"
)

// Stream is one stream from GETINFO stream-status or a STREAM event.
type Stream struct {
	ID        string
	Status    string // e.g. "NEW", "SENTCONNECT", "SUCCEEDED"
	CircuitID string // "0" while unattached
	Target    string // host:port; a REMAP event may change it
	// From STREAM events only:
	SourceAddr    string // the SOCKS client's address (its LocalAddr)
	SocksUsername string
	SocksPassword string
}

// Streams returns the tor's current streams.
func (c *Control) Streams(ctx context.Context) ([]Stream, error) {
	info, err := c.GetInfo(ctx, "stream-status")
	if err != nil {
		return nil, err
	}
	var out []Stream
	for _, line := range nonEmptyLines(info["stream-status"]) {
		s, err := parseStream(line)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Circuit is one circuit from GETINFO circuit-status.
type Circuit struct {
	ID            string
	Status        string   // e.g. "BUILT", "EXTENDED", "LAUNCHED"
	Path          []string // "$FPR~nick" per hop; the last hop is the exit
	Purpose       string   // e.g. "GENERAL", "HS_CLIENT_REND"
	SocksUsername string   // isolation credentials the circuit is bound to
	SocksPassword string
	Keywords      map[string]string // every KEY=VALUE, unquoted
}

// Circuits returns the tor's current circuits.
func (c *Control) Circuits(ctx context.Context) ([]Circuit, error) {
	info, err := c.GetInfo(ctx, "circuit-status")
	if err != nil {
		return nil, err
	}
	var out []Circuit
	for _, line := range nonEmptyLines(info["circuit-status"]) {
		circ, err := parseCircuit(line)
		if err != nil {
			return nil, err
		}
		out = append(out, circ)
	}
	return out, nil
}

// ParseStreamEvent parses a STREAM event.
func ParseStreamEvent(ev torctl.Event) (Stream, bool) {
	if ev.Code != "STREAM" {
		return Stream{}, false
	}
	s, err := parseStream(ev.Raw)
	if err != nil {
		return Stream{}, false
	}
	return s, true
}

// parseStream parses "ID STATUS CIRCID TARGET [KEY=VALUE ...]".
func parseStream(line string) (Stream, error) {
	f, err := torctl.SplitFields(line)
	if err != nil {
		return Stream{}, err
	}
	if len(f) < 4 {
		return Stream{}, fmt.Errorf("control: bad stream line %q", line)
	}
	s := Stream{ID: f[0], Status: f[1], CircuitID: f[2], Target: f[3]}
	for _, kv := range f[4:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "SOURCE_ADDR":
			s.SourceAddr = v
		case "SOCKS_USERNAME":
			s.SocksUsername = v
		case "SOCKS_PASSWORD":
			s.SocksPassword = v
		}
	}
	return s, nil
}

// parseCircuit parses "ID STATUS [PATH] [KEY=VALUE ...]".
func parseCircuit(line string) (Circuit, error) {
	f, err := torctl.SplitFields(line)
	if err != nil {
		return Circuit{}, err
	}
	if len(f) < 2 {
		return Circuit{}, fmt.Errorf("control: bad circuit line %q", line)
	}
	circ := Circuit{ID: f[0], Status: f[1], Keywords: map[string]string{}}
	rest := f[2:]
	if len(rest) > 0 && !strings.Contains(rest[0], "=") {
		circ.Path = strings.Split(rest[0], ",")
		rest = rest[1:]
	}
	for _, kv := range rest {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		circ.Keywords[k] = v
	}
	circ.Purpose = circ.Keywords["PURPOSE"]
	circ.SocksUsername = circ.Keywords["SOCKS_USERNAME"]
	circ.SocksPassword = circ.Keywords["SOCKS_PASSWORD"]
	return circ, nil
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
