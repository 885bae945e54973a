package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/admin"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/torctl"
)

// Defaults for the Tor and admin flags.
const (
	// defaultAdmin is the admin endpoint of "torgate run" and the one
	// "torgate newnym" talks to. 9083 is clear of Tor's 9050/9051 and Tor
	// Browser's 9150/9151.
	defaultAdmin = "127.0.0.1:9083"
	// defaultStateDir holds the managed Tor's DataDirectory (and the
	// automap table) when --state-dir is not given.
	defaultStateDir = "/var/lib/torgate"
)

// torFlags are the flags that choose and configure Tor. The mode follows
// from them: --tor-control attaches to a running Tor; --socks alone is a
// plain SOCKS5 upstream with no control port; neither starts a managed Tor.
type torFlags struct {
	control, password, passwordFile string
	torPath, torrc                  string
	admin                           string
}

func (f *torFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.control, "tor-control", "", "attach to a running Tor's control port: IP:port, /path or unix:/path (cookie or password); its SocksPort is read from it unless --socks is given. Without --tor-control and --socks, torgate starts its own Tor")
	fs.StringVar(&f.password, "tor-control-password", "", "password for --tor-control (Tor's HashedControlPassword); visible in ps, prefer --tor-control-password-file")
	fs.StringVar(&f.passwordFile, "tor-control-password-file", "", "file whose first line is the password for --tor-control")
	fs.StringVar(&f.torPath, "tor-path", "", "managed Tor: the tor binary (default: tor from PATH, then /usr/sbin/tor)")
	fs.StringVar(&f.torrc, "torrc", "", "managed Tor: file of extra torrc lines, e.g. bridges and pluggable transports (UseBridges, Bridge, ClientTransportPlugin)")
	fs.StringVar(&f.admin, "admin", defaultAdmin, "admin endpoint (metrics, /readyz, POST /newnym): loopback IP:port, /path or unix:/path; empty disables it")
}

// torMode names how torgate reaches Tor.
type torMode string

const (
	modeManaged torMode = "managed"
	modeAttach  torMode = "attach"
	modeSocks   torMode = "socks"
)

func (f *torFlags) mode(socksAddr string) torMode {
	switch {
	case f.control != "":
		return modeAttach
	case socksAddr != "":
		return modeSocks
	}
	return modeManaged
}

// torConfig checks the flag combination and returns torctl's Config, or
// nil for a plain SOCKS upstream.
func (f *torFlags) torConfig(socksAddr, stateDir string) (*torctl.Config, error) {
	mode := f.mode(socksAddr)
	if mode != modeManaged && (f.torPath != "" || f.torrc != "") {
		return nil, errors.New("--tor-path and --torrc configure the Tor torgate starts; they do not go with --socks or --tor-control")
	}
	if mode != modeAttach && (f.password != "" || f.passwordFile != "") {
		return nil, errors.New("--tor-control-password(-file) needs --tor-control")
	}
	switch mode {
	case modeSocks:
		return nil, nil
	case modeAttach:
		c := &torctl.Config{ControlAddr: f.control, SocksAddr: socksAddr, ControlPassword: f.password}
		if f.passwordFile != "" {
			if f.password != "" {
				return nil, errors.New("--tor-control-password and --tor-control-password-file exclude each other")
			}
			b, err := os.ReadFile(f.passwordFile)
			if err != nil {
				return nil, fmt.Errorf("--tor-control-password-file: %w", err)
			}
			line, _, _ := strings.Cut(string(b), "\n")
			c.ControlPassword = strings.TrimRight(line, "\r")
			if c.ControlPassword == "" {
				return nil, fmt.Errorf("--tor-control-password-file: %s is empty", f.passwordFile)
			}
		}
		return c, nil
	}
	if stateDir == "" {
		stateDir = defaultStateDir
	}
	return &torctl.Config{
		DataDir:   filepath.Join(stateDir, "tor"),
		TorPath:   f.torPath,
		TorrcFile: f.torrc,
	}, nil
}

// torLink is the Tor side of a running router: torctl (nil for plain
// SOCKS) and the router it ends flows on when Tor goes away.
type torLink struct {
	tor    *torctl.Tor
	router atomic.Pointer[torgate.Router]
	// newnym counts new-identity requests carried out, by scope.
	newnym *prometheus.CounterVec
}

// metrics returns Tor's collectors: bootstrap progress and readiness read
// at scrape time, and new-identity events.
func (l *torLink) metrics(r *torgate.Router) []prometheus.Collector {
	progress := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tor_bootstrap_progress", Help: "Tor's bootstrap progress in percent (100 with a plain SOCKS upstream).",
	}, func() float64 {
		if l.tor == nil {
			return 100
		}
		return float64(l.tor.Status().Bootstrap.Progress)
	})
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ready", Help: "1 when torgate forwards: Tor bootstrapped with a live circuit and the TUN up; 0 while it refuses.",
	}, func() float64 {
		if l.ready() != nil || r.Healthy() != nil {
			return 0
		}
		return 1
	})
	return []prometheus.Collector{progress, ready, l.newnym}
}

// startTor starts or attaches Tor as the flags say and points cfg at it:
// cfg.Upstream dials Tor's SocksPort and cfg.Ready is Tor's readiness, so
// the router refuses flows and DNS until Tor is bootstrapped. With plain
// --socks it returns a link with no Tor and leaves cfg alone. progress
// receives bootstrap changes. The caller calls setRouter once the router
// exists, and close at the end.
func startTor(ctx context.Context, tc *torctl.Config, cfg *torgate.Config, log *slog.Logger, progress func(torctl.Bootstrap)) (*torLink, error) {
	l := &torLink{newnym: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "new_identity_total", Help: "New identities carried out, by scope (source or all).",
	}, []string{"scope"})}
	l.newnym.WithLabelValues("source")
	l.newnym.WithLabelValues("all")
	if tc == nil {
		return l, nil
	}
	tc.Logger = log.With("component", "torctl")
	tc.OnProgress = progress
	tc.OnDown = func() {
		// Flows through a Tor that is gone cannot continue; end them now
		// rather than let each time out.
		if r := l.router.Load(); r != nil {
			r.Tunnel().EndAll()
		}
	}
	t, err := torctl.New(*tc)
	if err != nil {
		return nil, err
	}
	if err := t.Start(ctx); err != nil {
		t.Close()
		return nil, err
	}
	l.tor = t
	cfg.SocksAddr = ""
	cfg.Upstream = &socks.Dialer{Dial: t.DialSocks}
	cfg.Ready = t.Ready
	if tc.ControlAddr == "" {
		log.Info("starting tor", "mode", modeManaged, "data_dir", tc.DataDir, "socks", t.SocksAddr())
	} else {
		log.Info("attached to tor", "mode", modeAttach, "control", tc.ControlAddr, "socks", t.SocksAddr())
	}
	return l, nil
}

func (l *torLink) setRouter(r *torgate.Router) { l.router.Store(r) }

func (l *torLink) close() {
	if l.tor != nil {
		l.tor.Close()
	}
}

// ready is the admin /readyz check.
func (l *torLink) ready() error {
	if l.tor == nil {
		return nil
	}
	return l.tor.ReadyErr()
}

// newIdentityAll rotates every source's credentials and, with a control
// port, sends NEWNYM. Within Tor's NEWNYM rate limit it does neither, so
// that a retry does both.
func (l *torLink) newIdentityAll(ctx context.Context, r *torgate.Router) error {
	if l.tor != nil {
		if w := l.tor.NewNymWait(); w > 0 {
			return &torctl.RateLimitError{Wait: w}
		}
	}
	r.Tunnel().Isolator().NewIdentityAll()
	if l.tor == nil {
		return nil
	}
	if err := l.tor.NewNym(ctx); err != nil {
		return fmt.Errorf("new flows use new circuits, but NEWNYM was not sent: %w", err)
	}
	return nil
}

// adminTimeout bounds one admin request (NEWNYM waits for Tor).
const adminTimeout = 30 * time.Second

// serveAdmin starts the admin endpoint for r on addr; stop shuts it down.
func serveAdmin(addr string, r *torgate.Router, l *torLink, gatherer prometheus.Gatherer, log *slog.Logger) (stop func(), err error) {
	ln, err := admin.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("--admin: %w", err)
	}
	h := admin.Handler(admin.Config{
		Gatherer: gatherer,
		Ready: func() error {
			if err := r.Healthy(); err != nil {
				return err
			}
			if err := r.LANReady(); err != nil {
				return err
			}
			return l.ready()
		},
		Healthy: r.Healthy,
		NewIdentity: func(src netip.Addr) error {
			r.Tunnel().Isolator().NewIdentity(src)
			l.newnym.WithLabelValues("source").Inc()
			return nil
		},
		NewIdentityAll: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			if err := l.newIdentityAll(ctx, r); err != nil {
				return err
			}
			l.newnym.WithLabelValues("all").Inc()
			return nil
		},
		Logger: log.With("component", "admin"),
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("admin endpoint", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// newnymUsage is printed by "torgate newnym -h".
const newnymUsage = `usage: torgate newnym [--admin ADDR] [SOURCE]

Asks a running torgate for a new identity. With SOURCE (a workstation's
address), only that workstation's next connections get new circuits;
other workstations keep theirs. Without SOURCE, every workstation's
connections get new circuits and Tor is sent NEWNYM (at most once per 10
seconds, Tor's limit).

`

// cmdNewnym is "torgate newnym [SOURCE]": a client of the admin endpoint.
func cmdNewnym(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate newnym", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, newnymUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("admin", defaultAdmin, "torgate's admin endpoint: loopback IP:port, /path or unix:/path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Let flags follow the source too: "torgate newnym 10.0.0.5 --admin X".
	var pos []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		pos = append(pos, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
	}
	if len(pos) > 1 {
		fs.Usage()
		return fmt.Errorf("newnym: one SOURCE at most, got %d", len(pos))
	}
	q := ""
	if len(pos) == 1 {
		a, err := netip.ParseAddr(pos[0])
		if err != nil {
			return fmt.Errorf("newnym: SOURCE %q is not an IP address", pos[0])
		}
		q = "?source=" + a.String()
	}
	client, base, err := admin.Client(*addr)
	if err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/newnym"+q, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("newnym: torgate's admin endpoint %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("newnym: %s", strings.TrimSpace(string(body)))
	}
	if len(pos) == 1 {
		fmt.Fprintf(stdout, "new identity for %s: its next connections use new circuits\n", pos[0])
	} else {
		fmt.Fprintln(stdout, "new identity for every source")
	}
	return nil
}
