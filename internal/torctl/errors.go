package torctl

import (
	"errors"
	"fmt"
	"time"
)

// Errors. Those returned by New and Start are fatal for the caller; those
// returned by NewNym and DialSocks are per call.
var (
	// ErrTorNotFound: managed mode found no tor binary. Fatal; the message
	// carries the install command.
	ErrTorNotFound = errors.New("tor not found in PATH, /usr/sbin or /usr/bin; install it (Debian/Ubuntu: apt-get install tor) or pass its path")
	// ErrAuth: the control port refused authentication, or needs a
	// method torctl was not given. Fatal at Start.
	ErrAuth = errors.New("tor control authentication failed")
	// ErrNoSocksPort: the attached Tor has no SocksPort listener and none
	// was configured. Fatal at Start.
	ErrNoSocksPort = errors.New("tor reports no SocksPort listener (GETINFO net/listeners/socks); configure one or pass the SOCKS address")
	// ErrNotConnected: there is no control connection right now (Tor is
	// restarting or unreachable). Per call.
	ErrNotConnected = errors.New("not connected to tor's control port")
	// ErrRateLimited matches a *RateLimitError.
	ErrRateLimited = errors.New("tor rate-limits NEWNYM")
	// ErrBadTorrc: tor --verify-config rejected the configuration. Fatal.
	ErrBadTorrc = errors.New("tor rejected its configuration")
)

// NewNymInterval is Tor's minimum time between two NEWNYM signals
// (MAX_SIGNEWNYM_RATE in tor's src/core/mainloop/mainloop.c). Tor still
// answers "250 OK" to an early one and silently delays it, so torctl
// keeps the window itself, as stem does.
const NewNymInterval = 10 * time.Second

// RateLimitError is returned by NewNym within NewNymInterval of the last
// NEWNYM. Nothing was sent.
type RateLimitError struct {
	// Wait is how long until Tor accepts the next NEWNYM.
	Wait time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("tor rate-limits NEWNYM to one per %v: retry in %v", NewNymInterval, e.Wait.Round(100*time.Millisecond))
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }
