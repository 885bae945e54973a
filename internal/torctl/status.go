package torctl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Bootstrap is Tor's bootstrap phase, from GETINFO status/bootstrap-phase
// and STATUS_CLIENT BOOTSTRAP events
// (https://spec.torproject.org/control-spec/bootstrap-phases.html).
type Bootstrap struct {
	// Progress is 0 to 100; 100 means Tor has built its first circuit.
	Progress int
	// Tag is the machine-readable phase ("conn", "loading_descriptors",
	// "done", ...).
	Tag string
	// Summary is Tor's human-readable phase description.
	Summary string
	// Warning is the last problem Tor reported while bootstrapping ("" if
	// none since the last progress).
	Warning string
}

// Status is a snapshot of what torctl knows about Tor.
type Status struct {
	// Connected: a control connection is up (managed: and tor runs).
	Connected bool
	// Unresponsive: the last poll went unanswered past ProbeDeadline (Tor
	// stopped or hung) and has not been answered since.
	Unresponsive bool
	// Bootstrap is the last bootstrap phase seen on this connection.
	Bootstrap Bootstrap
	// CircuitEstablished mirrors GETINFO status/circuit-established and the
	// CIRCUIT_ESTABLISHED / CIRCUIT_NOT_ESTABLISHED client events.
	CircuitEstablished bool
	// NetworkLive mirrors GETINFO network-liveness and NETWORK_LIVENESS
	// events: Tor has seen recent network activity.
	NetworkLive bool
}

// Ready reports whether Tor can carry traffic: connected, bootstrapped and
// with the network up.
func (s Status) Ready() bool {
	return s.Connected && !s.Unresponsive && s.Bootstrap.Progress >= 100 && s.CircuitEstablished && s.NetworkLive
}

// Reason says why s is not ready ("" when it is), for probes and logs.
func (s Status) Reason() string {
	switch {
	case !s.Connected:
		return "no connection to tor"
	case s.Unresponsive:
		return "tor does not answer on its control port (stopped or hung)"
	case s.Bootstrap.Progress < 100:
		r := fmt.Sprintf("tor bootstrapping %d%% (%s)", s.Bootstrap.Progress, s.Bootstrap.Tag)
		if s.Bootstrap.Warning != "" {
			r += ": " + s.Bootstrap.Warning
		}
		return r
	case !s.CircuitEstablished:
		return "tor has no working circuit"
	case !s.NetworkLive:
		return "tor reports the network down"
	}
	return ""
}

// ErrSyntax is returned for malformed control-port text: by SplitFields
// (an unterminated quoted string or a dangling escape) and by torctl's
// parsers of what Tor reports. Per reply: the supervisor treats it as a
// failed poll.
var ErrSyntax = errors.New("malformed tor control reply")

// SplitFields splits a control-protocol line into space-separated fields,
// where a field may be or contain a quoted string with C-style escapes
// (KEY="some value"). Quotes are removed and escapes resolved. It is the
// one parser of reply fields for torctl and the test network.
func SplitFields(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	inField, inQuote := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case inQuote && ch == '\\':
			i++
			if i == len(s) {
				return nil, fmt.Errorf("%w: dangling escape in %q", ErrSyntax, s)
			}
			b.WriteByte(unescape(s[i]))
		case inQuote && ch == '"':
			inQuote = false
		case inQuote:
			b.WriteByte(ch)
		case ch == '"':
			inQuote, inField = true, true
		case ch == ' ':
			if inField {
				out = append(out, b.String())
				b.Reset()
				inField = false
			}
		default:
			b.WriteByte(ch)
			inField = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("%w: unterminated quoted string in %q", ErrSyntax, s)
	}
	if inField {
		out = append(out, b.String())
	}
	return out, nil
}

func unescape(ch byte) byte {
	switch ch {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return ch
}

// parseStatus parses the text of a STATUS_* event or of GETINFO
// status/bootstrap-phase: "SEVERITY ACTION KEY=VALUE ...".
func parseStatus(s string) (severity, action string, args map[string]string, err error) {
	f, err := SplitFields(s)
	if err != nil {
		return "", "", nil, err
	}
	if len(f) < 2 {
		return "", "", nil, fmt.Errorf("%w: status needs a severity and an action", ErrSyntax)
	}
	args = make(map[string]string, len(f)-2)
	for _, kv := range f[2:] {
		k, v, _ := strings.Cut(kv, "=")
		args[k] = v
	}
	return f[0], f[1], args, nil
}

// parseBootstrap reads a BOOTSTRAP status. ok is false for any other
// action. A WARN or ERR status reports a problem; its progress is the
// phase where Tor is stuck.
func parseBootstrap(s string) (b Bootstrap, ok bool, err error) {
	sev, action, args, err := parseStatus(s)
	if err != nil || action != "BOOTSTRAP" {
		return Bootstrap{}, false, err
	}
	p, err := strconv.Atoi(args["PROGRESS"])
	if err != nil || p < 0 || p > 100 {
		return Bootstrap{}, false, fmt.Errorf("%w: bootstrap PROGRESS %q", ErrSyntax, args["PROGRESS"])
	}
	b = Bootstrap{Progress: p, Tag: args["TAG"], Summary: args["SUMMARY"]}
	if sev == "WARN" || sev == "ERR" {
		b.Warning = args["WARNING"]
		if b.Warning == "" {
			b.Warning = args["REASON"]
		}
	}
	return b, true, nil
}

// parseListeners reads GETINFO net/listeners/socks: a space-separated
// list of quoted addresses ("127.0.0.1:9050" "unix:/run/tor/socks").
func parseListeners(s string) ([]string, error) {
	f, err := SplitFields(s)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// pickSocks chooses the SocksPort torgate dials from Tor's listeners: a
// unix socket if there is one (no TCP port other local users can reach,
// and the kernel's credentials check), else the first TCP listener. A
// listener on an unspecified address is dialled on loopback.
func pickSocks(listeners []string) (network, address string, err error) {
	for _, l := range listeners {
		if p, ok := strings.CutPrefix(l, "unix:"); ok && p != "" {
			return "unix", p, nil
		}
	}
	for _, l := range listeners {
		ap, err := netip.ParseAddrPort(l)
		if err != nil || ap.Port() == 0 {
			continue
		}
		a := ap.Addr()
		if a.IsUnspecified() {
			if a.Is4() {
				a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			} else {
				a = netip.IPv6Loopback()
			}
		}
		return "tcp", netip.AddrPortFrom(a, ap.Port()).String(), nil
	}
	return "", "", ErrNoSocksPort
}

// parseBool01 reads a "0"/"1" GETINFO value.
func parseBool01(s string) (bool, error) {
	switch s {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%w: want 0 or 1, got %q", ErrSyntax, s)
}

// parseLiveness reads GETINFO network-liveness ("up"/"down") or a
// NETWORK_LIVENESS event ("UP"/"DOWN").
func parseLiveness(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "up":
		return true, nil
	case "down":
		return false, nil
	}
	return false, fmt.Errorf("%w: network liveness %q", ErrSyntax, s)
}
