package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/torgate/torgate"
)

// runFlags holds "torgate run" flags; each maps onto one torgate.Config
// field.
type runFlags struct {
	tunName, socks, isolation, dnsMode, stateDir string
	logLevel, logFormat                          string
	tunFD, mtu                                   int
	addr4, addr6, pool4, pool6                   string
	maxFlows, maxPerSource                       int
	logDest, icmpUnreach                         bool
	configFile                                   string
	lan                                          stringList
	socksPorts                                   string
	controlPort                                  int
	onions                                       stringList
	serviceAddrs                                 []netip.Addr // exec's; run has no flag for it
	tor                                          torFlags
	// changed names the flags the command line or the config file set
	// to a value other than their default.
	changed map[string]bool
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tunName, "tun", "torgate0", "name of the TUN device to create")
	fs.Var(&f.lan, "lan", "be the gateway of the Ethernet interface `IFACE` (repeatable): a passthru macvtap takes all its frames, ARP/NDP answered by torgate, the kernel never routes a LAN packet; the interface must carry the gateway address (e.g. 10.152.152.10/18). Replaces --tun/--addr/--addr6/--mtu")
	fs.IntVar(&f.tunFD, "tun-fd", 0, "use this already open TUN file descriptor instead of creating one")
	fs.IntVar(&f.mtu, "mtu", 1500, "MTU of the TUN device")
	fs.StringVar(&f.addr4, "addr", "10.152.152.10/18", "gateway IPv4 address/prefix on a created TUN (empty: none)")
	fs.StringVar(&f.addr6, "addr6", "", "gateway IPv6 address/prefix on a created TUN (empty: none)")
	fs.StringVar(&f.socks, "socks", "", "upstream SOCKS5 endpoint: IP:port, /path or unix:/path. Alone: any SOCKS5 proxy (e.g. Tor's SocksPort), no control port, always considered ready; with --tor-control: instead of the SocksPort read from Tor")
	fs.StringVar(&f.isolation, "isolation", "source", "stream isolation: source, destination (source+destination host) or none")
	fs.StringVar(&f.dnsMode, "dns-mode", "automap", "DNS: automap (virtual addresses, names resolved by the exit) or resolve (Tor RESOLVE)")
	fs.StringVar(&f.pool4, "dns-pool4", torgate.DefaultDNSPool4.String(), "IPv4 virtual address pool for automap")
	fs.StringVar(&f.pool6, "dns-pool6", torgate.DefaultDNSPool6.String(), "IPv6 virtual address pool for automap")
	fs.StringVar(&f.stateDir, "state-dir", "", "directory for state kept across restarts: the automap table and, when torgate starts its own Tor, Tor's DataDirectory (STATE_DIR/tor); default "+defaultStateDir+" then, none otherwise")
	fs.IntVar(&f.maxFlows, "max-flows", 0, "cap on open flows in all (0: default 16384)")
	fs.IntVar(&f.maxPerSource, "max-flows-per-source", 0, "cap on one source's open flows (0: default 1024)")
	fs.BoolVar(&f.logDest, "log-destinations", false, "UNSAFE: name destinations in debug logs")
	fs.BoolVar(&f.icmpUnreach, "icmp-unreachable", false, "answer dropped UDP with ICMP port unreachable instead of silence")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.socksPorts, "socks-ports", "9050,9100-9189", "SOCKS ports for workstations on the gateway's LAN address (one per application: 9100-9189, among them Tor Browser's 9150), comma-separated ports and ranges; \"off\": none")
	fs.IntVar(&f.controlPort, "control-port", int(torgate.DefaultControlPort), "filtered Tor control port for workstations on the gateway's LAN address (New Identity for that workstation only); 0: off")
	fs.Var(&f.onions, "onion", "onion service hosted on a workstation, `PORT=ADDRESS:PORT` (repeatable; in the config file [[onion]] port = 80, target = \"10.152.152.11:80\"): Tor's connections to the onion PORT reach the workstation's ADDRESS:PORT; one .onion address per workstation address, its key kept in the state dir")
	fs.StringVar(&f.configFile, "config", "", "TOML file whose keys are these flags' names; flags given here override it")
	f.tor.register(fs)
}

// config turns flags into a torgate.Config, naming the flag on error.
func (f *runFlags) config() (torgate.Config, error) {
	var c torgate.Config
	var err error
	switch {
	case len(f.lan) > 0:
		if f.tunFD > 0 {
			return c, errors.New("--lan and --tun-fd exclude each other")
		}
		c.LAN = f.lan
	case f.tunFD > 0:
		c.TUNFD = f.tunFD
	default:
		c.TUNName = f.tunName
		if c.Addr4, err = parseOptPrefix(f.addr4); err != nil {
			return c, fmt.Errorf("--addr: %w", err)
		}
		if c.Addr6, err = parseOptPrefix(f.addr6); err != nil {
			return c, fmt.Errorf("--addr6: %w", err)
		}
	}
	c.MTU = f.mtu
	if err := f.tor.upstream(&c, f.socks, f.stateDir); err != nil {
		return c, err
	}
	if c.Isolation, err = torgate.ParseIsolation(f.isolation); err != nil {
		return c, fmt.Errorf("--isolation: %w", err)
	}
	if c.DNSMode, err = torgate.ParseDNSMode(f.dnsMode); err != nil {
		return c, fmt.Errorf("--dns-mode: %w", err)
	}
	if c.DNSPool4, err = netip.ParsePrefix(f.pool4); err != nil {
		return c, fmt.Errorf("--dns-pool4: %w", err)
	}
	if c.DNSPool6, err = netip.ParsePrefix(f.pool6); err != nil {
		return c, fmt.Errorf("--dns-pool6: %w", err)
	}
	c.StateDir = f.stateDir
	if err := f.services(&c); err != nil {
		return c, err
	}
	c.MaxFlows = f.maxFlows
	c.MaxFlowsPerSource = f.maxPerSource
	c.LogDestinations = f.logDest
	c.ICMPUnreachable = f.icmpUnreach
	return c, nil
}

// services sets the workstation services from --socks-ports,
// --control-port and --onion.
func (f *runFlags) services(c *torgate.Config) error {
	switch f.socksPorts {
	case "off", "":
		c.NoSOCKSPorts = true
	default:
		ports, err := parsePorts(f.socksPorts)
		if err != nil {
			return fmt.Errorf("--socks-ports %q: %w", f.socksPorts, err)
		}
		c.SOCKSPorts = ports
	}
	switch {
	case f.controlPort == 0:
		c.NoControlPort = true
	case f.controlPort < 0 || f.controlPort > 65535:
		return fmt.Errorf("--control-port %d: not a port (0 turns it off)", f.controlPort)
	default:
		c.ControlPort = uint16(f.controlPort)
	}
	for _, o := range f.onions {
		on, err := parseOnion(o)
		if err != nil {
			return fmt.Errorf("--onion %q: %w", o, err)
		}
		c.Onions = append(c.Onions, on)
	}
	return nil
}

// parsePorts parses "9050,9100-9189,9150".
func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %s runs backwards", part)
			}
		}
		for p := int(a); p <= int(b); p++ {
			out = append(out, uint16(p))
		}
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// parseOnion parses PORT=ADDRESS:PORT.
func parseOnion(s string) (torgate.Onion, error) {
	port, target, ok := strings.Cut(s, "=")
	if !ok {
		return torgate.Onion{}, errors.New("want PORT=ADDRESS:PORT, e.g. 80=10.152.152.11:80")
	}
	p, err := parsePort(port)
	if err != nil {
		return torgate.Onion{}, fmt.Errorf("onion port: %w", err)
	}
	t, err := netip.ParseAddrPort(target)
	if err != nil {
		return torgate.Onion{}, fmt.Errorf("target: %w", err)
	}
	return torgate.Onion{Port: p, Target: t}, nil
}

func parseOptPrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(s)
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f runFlags
	f.register(fs)
	if err := parseRunFlags(fs, &f, args); err != nil {
		return err
	}
	// A stray word is a mistake to stop at, not to ignore: with the
	// flags after it unparsed, a forgotten --torrc would start a stock
	// Tor.
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q: every setting is a flag (-h lists them) or a --config file key", fs.Arg(0))
	}
	// Everything is checked before anything is touched.
	v, err := f.validate(false)
	if err != nil {
		return err
	}
	if err := f.checkPrivileges(); err != nil {
		return err
	}
	began := time.Now()
	a, err := startApp(ctx, &f, stderr, nil, v.warnings...)
	if err != nil {
		return err
	}
	defer a.close()
	err = a.run(ctx)
	a.close()
	a.logStopped(ctx, err, began)
	return err
}
