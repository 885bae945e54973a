package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/admin"
	"github.com/torgate/torgate/internal/endpoint"
	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/internal/privs"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/tunnel"
)

// Validation: every flag and config value, and their combinations, is
// checked before torgate touches a file, an interface, a rule or a
// process (issue 22). validate reads what it must (the LAN interfaces'
// addresses over netlink, the state directory's permissions, the tor
// binary, a password file) and changes nothing, so that "torgate config
// check" can run it on a live gateway. Each error names the flag (which
// is also the config key) and the value.

// lanChecked is one --lan interface as validation read it.
type lanChecked struct {
	name string
	info lan.Info
}

// validated is a configuration that passed validate.
type validated struct {
	cfg      torgate.Config
	mode     string // torgate.Mode*
	stateDir string // the effective state directory, "" for none
	lans     []lanChecked
	// warnings are for the log: valid, but likely not what was meant.
	warnings []string
}

// checkPrivileges refuses, before run or exec touches anything, a binary
// that links cgo and holds capabilities: it cannot drop them on every
// thread (internal/privs), so it would keep them all for its whole life.
// --keep-privileges says that is meant. (Not part of validate: config
// check judges the configuration, and the tests that drive validate in
// process run in a test binary that may link cgo.)
func (f *runFlags) checkPrivileges() error {
	if f.tor.keepPrivileges || !errors.Is(privs.CanDrop(), privs.ErrCgo) {
		return nil
	}
	if s, err := privs.Read(0); err != nil || s.Effective == 0 {
		return nil // nothing to drop
	}
	return errors.New("this torgate binary links cgo, so it could not drop its capabilities after set-up and would keep them all: build it with CGO_ENABLED=0 (CGO_ENABLED=0 go build ./cmd/torgate), or pass --keep-privileges to run with every capability")
}

// validate checks f in full for run (exec false) or exec, and returns the
// router's configuration, or every error found (errors.Join).
func (f *runFlags) validate(exec bool) (validated, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	var v validated

	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		bad("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		bad("--log-format %q: want text or json", f.logFormat)
	}

	// The device.
	var nets []namedPrefix // the gateway's networks, for the pools and onions
	switch {
	case exec && len(f.lan) > 0:
		bad("--lan: exec makes its own TUN; --lan is for run")
	case len(f.lan) > 0:
		for _, name := range []string{"tun", "tun-fd", "addr", "addr6", "mtu"} {
			if f.changed[name] {
				bad("--%s does not go with --lan (the LAN interface is the device, with its own addresses and MTU)", name)
			}
		}
		seen := map[string]bool{}
		for _, name := range f.lan {
			if seen[name] {
				bad("--lan %s: given twice", name)
				continue
			}
			seen[name] = true
			info, err := lan.Inspect(name)
			switch {
			case errors.Is(err, lan.ErrNoInterface):
				bad("--lan %s: no such interface %s (ip link lists them; a NIC that appears late at boot is taken when the unit restarts torgate)", name, name)
				continue
			case err != nil:
				bad("--lan %s: %s", name, strings.TrimPrefix(err.Error(), "lan: "))
				continue
			}
			v.lans = append(v.lans, lanChecked{name, info})
			if !info.Taken && !info.Guarded {
				// The boot unit's guard runs before the network: a LAN
				// neither guarded nor taken was open until now.
				v.warnings = append(v.warnings, fmt.Sprintf("lan %s had no guard rules and was not in its LAN namespace: it was open to the gateway's kernel until now (is torgate-lan-guard.service enabled for %s, with no typo in its name?)", name, name))
			}
			for _, p := range info.Prefixes {
				if !p.Addr().IsLinkLocalUnicast() {
					nets = append(nets, namedPrefix{p, name + "'s network " + p.Masked().String()})
				}
			}
		}
	case f.tunFD < 0:
		bad("--tun-fd %d: must be >= 0", f.tunFD)
	case f.tunFD > 0:
	default:
		if !exec {
			if err := checkIfName(f.tunName); err != nil {
				bad("--tun %q: %v", f.tunName, err)
			} else if err := tunNameFree(f.tunName); err != nil {
				bad("--tun %s: %v", f.tunName, err)
			}
		}
		for _, a := range []struct {
			flag, val string
			v4        bool
		}{{"addr", f.addr4, true}, {"addr6", f.addr6, false}} {
			p, err := parseOptPrefix(a.val)
			switch {
			case err != nil:
				bad("--%s %q: not an address/prefix, e.g. 10.152.152.10/18", a.flag, a.val)
			case p.IsValid() && p.Addr().Is4() != a.v4:
				bad("--%s %s: not an IPv%s address", a.flag, a.val, map[bool]string{true: "4", false: "6"}[a.v4])
			case p.IsValid():
				nets = append(nets, namedPrefix{p, "--" + a.flag + " " + a.val})
			}
		}
	}
	if len(f.lan) == 0 && (f.mtu < 1280 || f.mtu > 65535) {
		bad("--mtu %d: must be 1280-65535", f.mtu)
	}

	// Tor and the admin endpoint.
	v.mode = f.tor.mode(f.socks)
	if f.socks != "" {
		if _, err := endpoint.Parse(f.socks); err != nil {
			bad("--socks %q: %v", f.socks, err)
		}
	}
	if f.tor.control != "" {
		if _, err := endpoint.Parse(f.tor.control); err != nil {
			bad("--tor-control %q: %v", f.tor.control, err)
		}
	}
	if v.mode == torgate.ModeManaged {
		if _, err := torctl.FindTor(f.tor.torPath); err != nil {
			if f.tor.torPath != "" {
				bad("--tor-path %q: %v", f.tor.torPath, err)
			} else {
				bad("torgate starts its own Tor (no --socks, no --tor-control), but %v", err)
			}
		}
		if f.tor.torrc != "" {
			if err := readable(f.tor.torrc); err != nil {
				bad("--torrc %q: %v", f.tor.torrc, err)
			}
		}
		if u := f.tor.user; u != "" && u != "root" {
			if _, err := user.Lookup(u); err != nil {
				bad("--tor-user %q: no such user", u)
			}
		}
	}
	if f.tor.admin != "" {
		if err := admin.Check(f.tor.admin); err != nil {
			bad("--admin %q: %s", f.tor.admin, strings.TrimPrefix(err.Error(), "admin: "))
		}
	}

	// The state directory: the one given, or the managed Tor's default.
	v.stateDir = f.stateDir
	if v.stateDir == "" && v.mode == torgate.ModeManaged {
		v.stateDir = defaultStateDir
	}
	if v.stateDir != "" {
		if err := usableDir(v.stateDir); err != nil {
			flag := "--state-dir"
			if f.stateDir == "" {
				flag += " (default)"
			}
			bad("%s %s: %v", flag, v.stateDir, err)
		}
	}

	// DNS.
	pools := map[string]string{"Pool4": "dns-pool4", "Pool6": "dns-pool6"}
	p4, err4 := netip.ParsePrefix(f.pool4)
	if err4 != nil {
		bad("--dns-pool4 %q: not a prefix, e.g. %s", f.pool4, torgate.DefaultDNSPool4)
	}
	p6, err6 := netip.ParsePrefix(f.pool6)
	if err6 != nil {
		bad("--dns-pool6 %q: not a prefix, e.g. %s", f.pool6, torgate.DefaultDNSPool6)
	}
	if err4 == nil && err6 == nil {
		var ce *dns.ConfigError
		if err := dns.CheckPools(p4, p6); errors.As(err, &ce) && pools[ce.Field] != "" {
			bad("--%s %s", pools[ce.Field], ce.Reason)
		} else if err != nil {
			bad("--dns-pool4/--dns-pool6: %v", err)
		}
		for _, pool := range []struct {
			flag string
			p    netip.Prefix
		}{{"dns-pool4", p4}, {"dns-pool6", p6}} {
			for _, n := range nets {
				if pool.p.Overlaps(n.p) {
					bad("--%s %s overlaps %s: the virtual addresses must be on no real network", pool.flag, pool.p, n.what)
				}
			}
		}
	}
	if _, err := torgate.ParseIsolation(f.isolation); err != nil {
		bad("--isolation %q: want source, destination or none", f.isolation)
	}
	if _, err := torgate.ParseDNSMode(f.dnsMode); err != nil {
		bad("--dns-mode %q: want automap or resolve", f.dnsMode)
	}

	// Limits.
	if f.maxFlows < 0 {
		bad("--max-flows %d: must be >= 0 (0: default %d)", f.maxFlows, tunnel.DefaultMaxFlows)
	}
	if f.maxPerSource < 0 {
		bad("--max-flows-per-source %d: must be >= 0 (0: default %d)", f.maxPerSource, tunnel.DefaultMaxFlowsPerSource)
	}
	if f.maxFlows > 0 && f.maxPerSource >= 0 {
		per, note := f.maxPerSource, ""
		if per == 0 {
			per, note = tunnel.DefaultMaxFlowsPerSource, " (default)"
		}
		if per > f.maxFlows {
			bad("--max-flows-per-source %d%s is above --max-flows %d", per, note, f.maxFlows)
		}
	}

	// Workstation services.
	errs = append(errs, f.validateServices(exec, v, nets)...)

	if len(errs) > 0 {
		return v, errors.Join(errs...)
	}
	// What is left is the library's to say (it names Config fields).
	cfg, err := f.config()
	if err != nil {
		return v, err
	}
	if exec {
		cfg.ServiceAddrs = execServices // on exec's own TUN
	}
	if cfg.StateDir == "" {
		cfg.StateDir = v.stateDir
	}
	if err := cfg.Validate(); err != nil {
		return v, err
	}
	v.cfg = cfg
	return v, nil
}

// validateServices checks --socks-ports, --control-port and --onion.
func (f *runFlags) validateServices(exec bool, v validated, nets []namedPrefix) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	socksPorts := map[uint16]bool{}
	if f.socksPorts != "off" && f.socksPorts != "" {
		ports, err := parsePorts(f.socksPorts)
		if err != nil {
			bad("--socks-ports %q: %v", f.socksPorts, err)
		}
		for _, p := range ports {
			if p == 53 {
				bad("--socks-ports %q: port 53 is DNS's (intercepted to every address)", f.socksPorts)
			}
			socksPorts[p] = true
		}
	}
	switch {
	case f.controlPort < 0 || f.controlPort > 65535:
		bad("--control-port %d: not a port (0 turns it off)", f.controlPort)
	case f.controlPort == 53:
		bad("--control-port 53: port 53 is DNS's (intercepted to every address)")
	case f.controlPort != 0 && socksPorts[uint16(f.controlPort)]:
		bad("--control-port %d: also one of --socks-ports %q", f.controlPort, f.socksPorts)
	}
	if len(f.onions) == 0 {
		return errs
	}
	if v.mode == torgate.ModeSocks {
		bad("--onion needs a Tor control port to publish the services: not with --socks alone (add --tor-control, or let torgate start its Tor)")
	}
	if v.stateDir == "" && !exec {
		bad("--onion needs --state-dir (the services' keys, so that each .onion address survives restarts)")
	}
	if !exec && len(f.lan) == 0 {
		bad("--onion needs --lan: on a TUN the gateway has no address of its own to reach the workstations from")
	}
	for _, o := range f.onions {
		on, err := parseOnion(o)
		if err != nil {
			bad("--onion %q: %v", o, err)
			continue
		}
		if len(v.lans) == 0 {
			continue
		}
		t := on.Target.Addr().Unmap()
		onLAN := false
		for _, n := range nets {
			if n.p.Addr() == t {
				bad("--onion %q: %s is the gateway, not a workstation", o, t)
			}
			if n.p.Masked().Contains(t) {
				onLAN = true
			}
		}
		if !onLAN {
			bad("--onion %q: %s is on none of the LANs (%s)", o, t, describe(nets))
		}
	}
	return errs
}

// namedPrefix is a network of the gateway's, with how to name it.
type namedPrefix struct {
	p    netip.Prefix
	what string
}

func describe(nets []namedPrefix) string {
	var s []string
	for _, n := range nets {
		s = append(s, n.p.Masked().String())
	}
	return strings.Join(s, ", ")
}

// checkIfName checks a Linux interface name as the kernel does
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or
// white space.
func checkIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface names have at most 15 bytes, this one %d", len(name))
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r"):
		return errors.New("not an interface name")
	}
	return nil
}

// readable reports whether path is a regular file this process can read
// (it is opened and closed, nothing more).
func readable(path string) error {
	fl, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fl.Close()
	fi, err := fl.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	return nil
}

// usableDir reports whether dir is, or could be made, a directory this
// process writes in: an existing one must be a writable directory; a
// missing one needs its nearest existing ancestor to be one. Nothing is
// created.
func usableDir(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) && d != "/" {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			if d == dir {
				return errors.New("not a directory")
			}
			return fmt.Errorf("cannot be created: %s is not a directory", d)
		}
		if err := writableDir(d); err != nil {
			if d == dir {
				return fmt.Errorf("not writable: %w", err)
			}
			return fmt.Errorf("cannot be created in %s: %w", d, err)
		}
		return nil
	}
}
