package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/torgate/torgate"
)

// This file only maps the Tor flags onto torgate.Config: the policy that
// ties Tor to the router (readiness, ending flows when Tor goes away, new
// identities) is the library's (torgate's tor.go).

// Defaults for the Tor and admin flags.
const (
	// defaultAdmin is the admin endpoint of "torgate run" and the one
	// "torgate newnym" talks to. 9083 is clear of Tor's 9050/9051 and Tor
	// Browser's 9150/9151.
	defaultAdmin = "127.0.0.1:9083"
	// defaultStateDir holds the managed Tor's DataDirectory (and the
	// automap table) when --state-dir is not given.
	defaultStateDir = "/var/lib/torgate"
	// defaultTorUser is the account Debian's tor package creates for tor.
	defaultTorUser = "debian-tor"
)

// torFlags are the flags that choose and configure Tor. The mode follows
// from them: --tor-control attaches to a running Tor; --socks alone is a
// plain SOCKS5 upstream with no control port; neither starts a managed Tor.
//
// They also hold the privilege flags (--tor-user, --keep-privileges),
// which are about the managed Tor and torgate's own capabilities.
type torFlags struct {
	control, password, passwordFile string
	torPath, torrc, user            string
	instances                       int
	admin                           string
	keepPrivileges                  bool
	// dataDir, if set, replaces STATE_DIR/tor as the managed Tor's
	// DataDirectory (exec's persistent one). Not a flag.
	dataDir string
}

func (f *torFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.control, "tor-control", "", "attach to a running Tor's control port: IP:port, /path or unix:/path (cookie or password); its SocksPort is read from it unless --socks is given. Without --tor-control and --socks, torgate starts its own Tor")
	fs.StringVar(&f.password, "tor-control-password", "", "password for --tor-control (Tor's HashedControlPassword); visible in ps, prefer --tor-control-password-file")
	fs.StringVar(&f.passwordFile, "tor-control-password-file", "", "file whose first line is the password for --tor-control")
	fs.StringVar(&f.torPath, "tor-path", "", "managed Tor: the tor binary (default: tor from PATH, then /usr/sbin/tor)")
	fs.StringVar(&f.torrc, "torrc", "", "managed Tor: file of extra torrc lines, e.g. bridges and pluggable transports (UseBridges, Bridge, ClientTransportPlugin)")
	fs.StringVar(&f.user, "tor-user", "", "managed Tor: run tor as this user (default: "+defaultTorUser+" when torgate runs as root and that user exists, else torgate's own user; \"root\" keeps it as root)")
	fs.IntVar(&f.instances, "tor-instances", 1, fmt.Sprintf("managed Tor: run this many tor processes (1-%d; 0 is 1); each workstation is served by one of them for good, and an instance that dies fails closed for its own workstations only. Instance 0 uses the DataDirectory STATE_DIR/tor, instance k STATE_DIR/tor-k (docs/operations.md)", torgate.MaxTorInstances))
	fs.BoolVar(&f.keepPrivileges, "keep-privileges", false, "debugging: keep every capability after set-up instead of only those still needed (CAP_NET_ADMIN, and CAP_SETUID/SETGID/KILL to restart a managed Tor as --tor-user)")
	fs.StringVar(&f.admin, "admin", defaultAdmin, "admin endpoint (metrics, /readyz, POST /newnym): loopback IP:port, /path or unix:/path; empty disables it")
}

// mode is how the flags have torgate reach Tor (torgate.Mode*).
func (f *torFlags) mode(socksAddr string) string {
	switch {
	case f.control != "":
		return torgate.ModeAttach
	case socksAddr != "":
		return torgate.ModeSocks
	}
	return torgate.ModeManaged
}

// upstream checks the flag combination and sets cfg's upstream: a
// ManagedTor, an AttachedTor, or the plain SOCKS address.
func (f *torFlags) upstream(cfg *torgate.Config, socksAddr, stateDir string) error {
	mode := f.mode(socksAddr)
	if mode != torgate.ModeManaged && (f.torPath != "" || f.torrc != "" || f.user != "") {
		return errors.New("--tor-path, --torrc and --tor-user configure the Tor torgate starts; they do not go with --socks or --tor-control")
	}
	if mode != torgate.ModeManaged && f.instances > 1 {
		return errors.New("--tor-instances runs several Tors that torgate starts; it does not go with --socks or --tor-control (one Tor that torgate does not own)")
	}
	if f.instances < 0 || f.instances > torgate.MaxTorInstances {
		return fmt.Errorf("--tor-instances %d: want 1 to %d", f.instances, torgate.MaxTorInstances)
	}
	if mode != torgate.ModeAttach && (f.password != "" || f.passwordFile != "") {
		return errors.New("--tor-control-password(-file) needs --tor-control")
	}
	switch mode {
	case torgate.ModeSocks:
		cfg.SocksAddr = socksAddr
		return nil
	case torgate.ModeAttach:
		a := &torgate.AttachedTor{ControlAddr: f.control, SocksAddr: socksAddr, ControlPassword: f.password}
		if f.passwordFile != "" {
			if f.password != "" {
				return errors.New("--tor-control-password and --tor-control-password-file exclude each other")
			}
			b, err := os.ReadFile(f.passwordFile)
			if err != nil {
				return fmt.Errorf("--tor-control-password-file: %w", err)
			}
			line, _, _ := strings.Cut(string(b), "\n")
			a.ControlPassword = strings.TrimRight(line, "\r")
			if a.ControlPassword == "" {
				return fmt.Errorf("--tor-control-password-file: %s is empty", f.passwordFile)
			}
		}
		cfg.AttachedTor = a
		return nil
	}
	if stateDir == "" {
		stateDir = defaultStateDir
	}
	dataDir := f.dataDir
	if dataDir == "" {
		dataDir = filepath.Join(stateDir, "tor")
	}
	cfg.ManagedTor = &torgate.ManagedTor{
		DataDir:   dataDir,
		TorPath:   f.torPath,
		TorrcFile: f.torrc,
		User:      torUser(f.user),
		Instances: f.instances,
	}
	return nil
}

// torUser picks the managed Tor's user: the flag's, else Debian's tor
// user when torgate is root and that user exists (tor warns against
// running as root, and nothing it does needs root), else torgate's own.
func torUser(flag string) string {
	if flag != "" || os.Geteuid() != 0 {
		return flag
	}
	if _, err := user.Lookup(defaultTorUser); err == nil {
		return defaultTorUser
	}
	return ""
}
