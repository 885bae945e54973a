package torgate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/endpoint"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// Config configures a Router. Field comments are the reference; cmd/torgate
// maps its flags onto these fields one to one.
type Config struct {
	// The TUN device: exactly one of Device (any wireguard tun.Device, for
	// embedding and tests), TUNFD (an open /dev/net/tun file descriptor
	// handed over by a parent) or TUNName (created and configured here).
	Device  tun.Device
	TUNFD   int
	TUNName string
	// LAN makes torgate the gateway of these Ethernet interfaces
	// (package lan: a passthru macvtap each, guard rules, ARP/NDP in
	// userspace) instead of using a TUN. Mutually exclusive with Device,
	// TUNFD and TUNName; MTU and Addr4/Addr6 come from the interfaces.
	LAN []string
	// MTU of the TUN. Default 1500.
	MTU int
	// Addr4 and Addr6 are the gateway-side addresses assigned to a TUN
	// created by name (optional; not used with Device or TUNFD).
	Addr4, Addr6 netip.Prefix

	// The upstream: exactly one of ManagedTor (torgate starts and
	// supervises its own tor), AttachedTor (a running Tor's control port),
	// SocksAddr or Upstream (plain SOCKS5: no control port, so readiness
	// rests on the SOCKS port answering).
	ManagedTor  *ManagedTor
	AttachedTor *AttachedTor
	// SocksAddr is a plain SOCKS5 upstream: "IP:port", "/path" or
	// "unix:/path".
	SocksAddr string
	// Upstream is a plain SOCKS5 upstream as a function that connects to
	// it (a unix socket, an in-memory pipe). It must honour ctx.
	Upstream func(ctx context.Context) (net.Conn, error)
	// OnTorProgress is called when a managed or attached Tor's bootstrap
	// phase changes, in order, one call at a time (for a progress view;
	// with several Tor instances, each reports its own: Bootstrap.Instance).
	// It must not block or call Close. Optional.
	OnTorProgress func(Bootstrap)

	// Isolation decides which flows share circuits. Default
	// IsolateSource.
	Isolation Isolation
	// IsolationSecret keys the credential derivation; nil draws a random one
	// per run.
	IsolationSecret []byte

	// DNSMode is DNSAutomap (default) or DNSResolve.
	DNSMode DNSMode
	// DNSPool4, DNSPool6 are the virtual address pools for automap.
	// Defaults: DefaultDNSPool4, DefaultDNSPool6.
	DNSPool4, DNSPool6 netip.Prefix
	// StateDir keeps state across restarts (the automap table and its
	// address epoch). Optional; New fails if it is not writable.
	StateDir string
	// DNSEpochFile keeps the automap address epoch across restarts (see
	// the package doc of dns) when there is no StateDir: a runtime file such
	// as /run/torgate/dns-epoch. Ignored with a StateDir (the epoch lives
	// there). Unset without a StateDir, each run starts at a random epoch.
	DNSEpochFile string

	// Workstation services (docs/workstations.md), served inside
	// torgate's own network stack on ServiceAddrs.
	//
	// ServiceAddrs are the gateway's addresses as workstations reach its
	// services. On a LAN they are the gateway's LAN addresses, and
	// ServiceAddrs must be empty. On a TUN there is no such address unless
	// given here: one the workstations route into the TUN (not an address
	// of the gateway's kernel, which would answer it itself); with none,
	// the services are off.
	ServiceAddrs []netip.Addr
	//
	// SOCKSPorts are SOCKS ports for applications that speak SOCKS (Tor
	// Browser, per-application ports); nil takes DefaultSOCKSPorts,
	// Whonix's layout. NoSOCKSPorts turns them off.
	SOCKSPorts   []uint16
	NoSOCKSPorts bool
	// ControlPort is the filtered Tor control port (Tor Browser's New
	// Identity, for this workstation only); 0 takes DefaultControlPort.
	// NoControlPort turns it off.
	ControlPort   uint16
	NoControlPort bool
	// Onions are onion services hosted on workstations: Tor's
	// connections to each reach torgate, which dials the declared target
	// from its own network stack. Entries with the same target address
	// are one service (one .onion address); its key is kept in StateDir,
	// which they require.
	Onions []Onion

	// Ready, if set, is one more readiness condition (for an embedder
	// that watches Tor itself); while false new flows get a RST and DNS
	// SERVFAIL. With ManagedTor or AttachedTor the router follows Tor's
	// bootstrap and liveness itself. With plain SOCKS and no Ready,
	// readiness comes from the router's own evidence: a periodic connect
	// and SOCKS greeting to the upstream and the outcome of real dials. In every mode a SOCKS port that stops
	// answering greetings makes the router not ready.
	Ready func() bool

	// Flow limits; zero takes tunnel's defaults.
	MaxFlows, MaxFlowsPerSource, MaxDialsPerSource int
	// Packet-path limits and their per-source shares: pending handshakes
	// (MaxInFlight) and port 53's workers and DNS-over-TCP connections;
	// zero takes the defaults (docs/limits.md).
	MaxInFlight, MaxInFlightPerSource int
	DNSWorkers, DNSWorkersPerSource   int
	DNSTCPConns, DNSTCPConnsPerSource int
	// KeepMemory turns off returning memory to the system
	// (debug.FreeOSMemory) after open flows fall by half from a peak.
	KeepMemory bool
	// DialTimeout, IdleTimeout, HalfCloseTimeout; zero takes tunnel's
	// defaults (sized for Tor).
	DialTimeout, IdleTimeout, HalfCloseTimeout time.Duration

	// ICMPUnreachable answers dropped UDP with ICMP port unreachable.
	ICMPUnreachable bool
	// LogDestinations lets debug logs name destinations (tunnel's and
	// dns's). Off by default.
	LogDestinations bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the router's metrics; nil registers nothing.
	Registerer prometheus.Registerer

	failAt string // a build step that fails, for tests (build_test.go)
}

// Onion is one port of an onion service hosted on a workstation.
type Onion struct {
	// Port is the onion service's (virtual) port.
	Port uint16
	// Target is the workstation's address and port that Port leads to.
	Target netip.AddrPort
}

// String returns the flag spelling, PORT=TARGET.
func (o Onion) String() string { return fmt.Sprintf("%d=%s", o.Port, o.Target) }

// The workstation services' defaults: Whonix-Gateway's layout, so that
// Whonix-Workstation and Tor Browser work unchanged.
const DefaultControlPort uint16 = 9051

// DefaultSOCKSPorts returns 9050 and 9100-9189: Tor's usual port and
// Whonix's per-application ports, among them Tor Browser's 9150.
func DefaultSOCKSPorts() []uint16 {
	ports := []uint16{9050}
	for p := uint16(9100); p <= 9189; p++ {
		ports = append(ports, p)
	}
	return ports
}

// Isolation decides which flows share Tor circuits. Tor isolates streams
// by SOCKS username and password, so the mode decides which flows get the
// same credentials.
type Isolation int

const (
	// IsolateSource gives each workstation its own circuits (on a LAN a
	// workstation is a machine: its MAC); its flows and DNS lookups share
	// them. The default.
	IsolateSource Isolation = iota
	// IsolateDestination gives each (workstation, destination host) pair
	// its own circuits: stronger unlinkability, more circuits.
	IsolateDestination
	// IsolateNone puts every workstation on the same credentials. Only
	// for a gateway with a single workstation, or for benchmarks.
	IsolateNone
)

// ParseIsolation parses the flag spelling of an Isolation: "source",
// "destination" or "none".
func ParseIsolation(s string) (Isolation, error) {
	m, err := tunnel.ParseIsolationMode(s)
	return Isolation(m), err
}

// String returns the flag spelling.
func (m Isolation) String() string { return tunnel.IsolationMode(m).String() }

// DNSMode selects how DNS questions for ordinary names are answered.
type DNSMode int

const (
	// DNSAutomap answers A and AAAA with a virtual address that stands
	// for the name (like Tor's AutomapHostsOnResolve); the flow to it
	// asks Tor for the name, so the exit resolves it. Nothing is resolved
	// before a connection. The default.
	DNSAutomap DNSMode = iota
	// DNSResolve resolves A, AAAA and PTR through Tor (SOCKS RESOLVE and
	// RESOLVE_PTR) on the asking workstation's circuits.
	DNSResolve
)

// ParseDNSMode parses "automap" or "resolve" (case-insensitive).
func ParseDNSMode(s string) (DNSMode, error) {
	m, err := dns.ParseMode(strings.TrimSpace(s))
	return DNSMode(m), err
}

// String returns the flag spelling.
func (m DNSMode) String() string { return dns.Mode(m).String() }

// The default DNS virtual address pools.
var (
	// DefaultDNSPool4 is Whonix-Gateway's VirtualAddrNetworkIPv4.
	DefaultDNSPool4 = netip.MustParsePrefix("10.192.0.0/10")
	// DefaultDNSPool6 is a unique-local /64 chosen at random for torgate.
	DefaultDNSPool6 = netip.MustParsePrefix("fd9d:7a2b:5c1e::/64")
)

// Bootstrap is a managed or attached Tor's bootstrap progress.
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
	// Instance is the Tor instance that reports (ManagedTor.Instances):
	// always 0 with one Tor.
	Instance int
}

func bootstrapOf(b torctl.Bootstrap) Bootstrap {
	return Bootstrap{Progress: b.Progress, Tag: b.Tag, Summary: b.Summary, Warning: b.Warning}
}

// socksDialer turns SocksAddr ("IP:port", "/path" or "unix:/path") into
// a dialer.
func socksDialer(s string) (*socks.Dialer, error) {
	ep, err := endpoint.Parse(s)
	if err != nil {
		return nil, err
	}
	return socks.NewDialer(ep.Network, ep.Address)
}

// Validate checks c as NewContext does before it touches anything, and
// nothing more: it opens, creates and starts nothing (the LAN
// interfaces' addresses, a state directory's permissions and the Tor
// binary are checked by NewContext as it goes). c is not changed.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return err
	}
	return dns.CheckPools(c.DNSPool4, c.DNSPool6)
}

func (c *Config) validate() error {
	n := 0
	if c.Device != nil {
		n++
	}
	if c.TUNFD > 0 {
		n++
	}
	if c.TUNName != "" {
		n++
	}
	if len(c.LAN) > 0 {
		n++
	}
	if n != 1 {
		return errors.New("config: exactly one of Device, TUNFD, TUNName and LAN must be set")
	}
	if c.TUNFD < 0 {
		return errors.New("config: TUNFD negative")
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("config: MTU %d out of range 1280-65535", c.MTU)
	}
	if c.Addr4.IsValid() && !c.Addr4.Addr().Is4() {
		return fmt.Errorf("config: Addr4 %s is not IPv4", c.Addr4)
	}
	if c.Addr6.IsValid() && !c.Addr6.Addr().Is6() {
		return fmt.Errorf("config: Addr6 %s is not IPv6", c.Addr6)
	}
	if c.Isolation < IsolateSource || c.Isolation > IsolateNone {
		return fmt.Errorf("config: unknown Isolation %d", int(c.Isolation))
	}
	if c.DNSMode != DNSAutomap && c.DNSMode != DNSResolve {
		return fmt.Errorf("config: unknown DNSMode %d", int(c.DNSMode))
	}
	n = 0
	for _, set := range []bool{c.ManagedTor != nil, c.AttachedTor != nil, c.SocksAddr != "", c.Upstream != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("config: exactly one of ManagedTor, AttachedTor, SocksAddr and Upstream must be set")
	}
	if m := c.ManagedTor; m != nil && (m.Instances < 0 || m.Instances > MaxTorInstances) {
		return fmt.Errorf("config: ManagedTor.Instances %d out of range 1-%d", m.Instances, MaxTorInstances)
	}
	if c.SocksAddr != "" {
		d, err := socksDialer(c.SocksAddr)
		if err != nil {
			return fmt.Errorf("config: SocksAddr: %w", err)
		}
		c.Upstream = d.Dial
	}
	if !c.DNSPool4.IsValid() {
		c.DNSPool4 = DefaultDNSPool4
	}
	if !c.DNSPool6.IsValid() {
		c.DNSPool6 = DefaultDNSPool6
	}
	for _, p := range []netip.Prefix{c.Addr4, c.Addr6} {
		if p.IsValid() && (c.DNSPool4.Overlaps(p) || c.DNSPool6.Overlaps(p)) {
			return fmt.Errorf("config: gateway address %s overlaps a DNS virtual pool", p)
		}
	}
	return c.validateServices()
}

// validateServices checks the workstation services' ports and onion
// entries as far as they can be checked before the LAN is known (the
// targets' prefixes are checked once the interfaces are taken).
func (c *Config) validateServices() error {
	if c.SOCKSPorts == nil && !c.NoSOCKSPorts {
		c.SOCKSPorts = DefaultSOCKSPorts()
	}
	if c.NoSOCKSPorts {
		c.SOCKSPorts = nil
	}
	// A port listed twice ("9100-9189,9150") is one port.
	c.SOCKSPorts = slices.Compact(slices.Sorted(slices.Values(c.SOCKSPorts)))
	if c.ControlPort == 0 {
		c.ControlPort = DefaultControlPort
	}
	seen := map[uint16]string{}
	taken := func(p uint16, what string) error {
		switch {
		case p == 0:
			return fmt.Errorf("config: %s: port 0", what)
		case p == 53:
			return fmt.Errorf("config: %s: port 53 is DNS's (intercepted to every address)", what)
		case seen[p] != "":
			return fmt.Errorf("config: %s: port %d is also %s", what, p, seen[p])
		}
		seen[p] = what
		return nil
	}
	for _, p := range c.SOCKSPorts {
		if err := taken(p, "SOCKSPorts"); err != nil {
			return err
		}
	}
	if !c.NoControlPort {
		if err := taken(c.ControlPort, "ControlPort"); err != nil {
			return err
		}
	}
	if len(c.LAN) > 0 && len(c.ServiceAddrs) > 0 {
		return errors.New("config: ServiceAddrs is for a TUN: on a LAN the services are on the gateway's LAN addresses")
	}
	for _, a := range c.ServiceAddrs {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || c.DNSPool4.Contains(a) || c.DNSPool6.Contains(a) {
			return fmt.Errorf("config: ServiceAddrs: %s cannot be the gateway's address", a)
		}
	}
	if len(c.Onions) > 0 && c.StateDir == "" {
		return errors.New("config: Onions need a StateDir (their keys, so that each .onion address survives restarts)")
	}
	type svcPort struct {
		ip   netip.Addr
		port uint16
	}
	onions := map[svcPort]bool{}
	for _, o := range c.Onions {
		t := o.Target.Addr().Unmap()
		switch {
		case o.Port == 0:
			return fmt.Errorf("config: onion %s: port 0", o)
		case !t.IsValid() || o.Target.Port() == 0:
			return fmt.Errorf("config: onion %s: target must be a workstation's address:port", o)
		case t.Zone() != "" || t.IsUnspecified() || t.IsMulticast() || t.IsLoopback() || t.IsLinkLocalUnicast():
			return fmt.Errorf("config: onion %s: target %s is no workstation address", o, t)
		case c.DNSPool4.Contains(t) || c.DNSPool6.Contains(t):
			return fmt.Errorf("config: onion %s: target %s is in a DNS virtual pool", o, t)
		case onions[svcPort{t, o.Port}]:
			return fmt.Errorf("config: onion %s: port %d of the service of %s declared twice", o, o.Port, t)
		}
		if slices.Contains(c.ServiceAddrs, t) {
			return fmt.Errorf("config: onion %s: target %s is the gateway, not a workstation", o, t)
		}
		onions[svcPort{t, o.Port}] = true
	}
	return nil
}
