package testnet

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest/gate"
)

// Config describes the network to build. The zero value of every field
// except Dir is usable.
type Config struct {
	// Dir is the working directory for torrcs, data directories and logs.
	// Required; tests pass t.TempDir(). Start creates it if it is missing.
	Dir string

	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger

	// Block is the 127.A.B.0/24 the network lives in. Every node gets its
	// own address in it (see doc.go for the layout), so ports are fixed per
	// role. The zero value picks a random block in 127.100.0.0–127.191.255.0
	// and retries with another one if the first is taken, so that several
	// networks (e.g. from two test binaries) run side by side. Blocks in
	// 127.192.0.0/10 are rejected: that is tor's default
	// VirtualAddrNetworkIPv4, and a client refuses CONNECTs to IP literals
	// there ("Missing mapping for virtual address").
	Block netip.Prefix

	// Relays is the number of middle relays, at most 20. 0 means 2.
	Relays int

	// Exits is the number of exit relays, at most 20. 0 means 1.
	Exits int

	// Onion starts an onion-service host whose virtual port 80 maps to the
	// web server, and makes Start wait until its descriptor is uploaded.
	Onion bool

	// Hosts are extra names the network's DNS server (the exits' resolver)
	// answers, in addition to WebName. Addresses must be loopback; names are
	// matched case-insensitively.
	Hosts map[string]netip.Addr

	// TorPath and GencertPath locate tor and tor-gencert. Empty means
	// search $PATH, then /usr/sbin and /usr/bin (Debian installs tor in
	// /usr/sbin, which is not on every user's $PATH).
	TorPath     string
	GencertPath string

	// KeyCacheDir holds generated relay and authority keys across runs,
	// which saves several seconds of RSA key generation per Start. Empty
	// means os.UserCacheDir()/torgate-testnet-keys, or
	// os.TempDir()/torgate-testnet-keys when there is no user cache dir.
	KeyCacheDir string

	// NoKeyCache generates fresh keys and neither reads nor writes the
	// cache (used to measure a cold start).
	NoKeyCache bool

	// Timeout bounds Start. 0 means 90 s: a healthy network is up in about
	// 15 s, a loaded 2-core box may need one extra 30 s voting interval.
	Timeout time.Duration
}

// Defaults for Config fields left zero.
const (
	defaultRelays  = 2
	defaultExits   = 1
	defaultTimeout = 90 * time.Second
	// maxPerRole is set by the address layout (20 hosts per role range).
	maxPerRole = 20
)

// ErrTorNotFound means tor or tor-gencert is not installed. Tests skip on it
// (except under CI=true); it is fatal for Start.
var ErrTorNotFound = errors.New("testnet: tor or tor-gencert not found (apt-get install tor)")

// Binaries returns the paths of tor and tor-gencert that a zero Config would
// use, or an error wrapping ErrTorNotFound.
func Binaries() (tor, gencert string, err error) {
	tor, err = findBinary("tor", "")
	if err != nil {
		return "", "", err
	}
	gencert, err = findBinary("tor-gencert", "")
	if err != nil {
		return "", "", err
	}
	return tor, gencert, nil
}

func findBinary(name, configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", fmt.Errorf("%w: %w", ErrTorNotFound, err)
		}
		return configured, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrTorNotFound, name)
}

// validate fills in defaults and checks every field before anything starts.
func (c *Config) validate() error {
	if c.Dir == "" {
		return errors.New("testnet: Config.Dir is required")
	}
	if !filepath.IsAbs(c.Dir) {
		abs, err := filepath.Abs(c.Dir)
		if err != nil {
			return fmt.Errorf("testnet: Config.Dir: %w", err)
		}
		c.Dir = abs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Block.IsValid() {
		if err := checkBlock(c.Block); err != nil {
			return err
		}
	}
	if c.Relays == 0 {
		c.Relays = defaultRelays
	}
	if c.Exits == 0 {
		c.Exits = defaultExits
	}
	if c.Relays < 1 || c.Relays > maxPerRole {
		return fmt.Errorf("testnet: Config.Relays %d out of range 1..%d", c.Relays, maxPerRole)
	}
	if c.Exits < 1 || c.Exits > maxPerRole {
		return fmt.Errorf("testnet: Config.Exits %d out of range 1..%d", c.Exits, maxPerRole)
	}
	for name, addr := range c.Hosts {
		if !validName(name) {
			return fmt.Errorf("testnet: Config.Hosts: bad name %q", name)
		}
		if !addr.IsLoopback() {
			// The network must never be pointed at anything but loopback.
			return fmt.Errorf("testnet: Config.Hosts[%q] = %v is not a loopback address", name, addr)
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("testnet: Config.Timeout %v is negative", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	var err error
	if c.TorPath, err = findBinary("tor", c.TorPath); err != nil {
		return err
	}
	if c.GencertPath, err = findBinary("tor-gencert", c.GencertPath); err != nil {
		return err
	}
	if c.KeyCacheDir == "" && !c.NoKeyCache {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		c.KeyCacheDir = filepath.Join(base, "torgate-testnet-keys")
	}
	return nil
}

// torVirtualNet is tor's default VirtualAddrNetworkIPv4.
var torVirtualNet = netip.MustParsePrefix("127.192.0.0/10")

// checkBlock accepts a masked /24 inside 127.0.0.0/8 and outside
// torVirtualNet.
func checkBlock(p netip.Prefix) error {
	a := p.Addr()
	if !a.Is4() || p.Bits() != 24 || p.Masked() != p || !a.IsLoopback() {
		return fmt.Errorf("testnet: Config.Block %v is not a 127.A.B.0/24 block", p)
	}
	if torVirtualNet.Contains(a) {
		return fmt.Errorf("testnet: Config.Block %v is inside tor's VirtualAddrNetworkIPv4 %v", p, torVirtualNet)
	}
	return nil
}

// randomBlock picks 127.A.B.0/24 with A in 100..191: away from
// 127.0.0.0/24, where system services (127.0.0.1, 127.0.0.53) live, and
// below tor's virtual address range.
func randomBlock() netip.Prefix {
	a := byte(100 + rand.IntN(92))
	b := byte(rand.IntN(256))
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, a, b, 0}), 24)
}

// validName accepts a DNS name of letters, digits, '-', '_' and dots.
func validName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			ok := r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
			if !ok {
				return false
			}
		}
	}
	return true
}

// Require gates a test that starts tor: it is an integration test
// (nstest.Integration, through its gate: it runs under CI=true or
// TORGATE_TEST_INTEGRATION=1, and skips otherwise). Opted in, it skips
// tb when tor or tor-gencert is missing, except under CI=true, where a
// missing tor is a failure.
func Require(tb testing.TB) {
	tb.Helper()
	gate.Integration(tb)
	if _, _, err := Binaries(); err != nil {
		if gate.CI() {
			tb.Fatalf("CI=true and tor is missing: %v", err)
		}
		tb.Skipf("tor not installed: %v", err)
	}
}
