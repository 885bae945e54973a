package torctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/torgate/torgate/internal/defaults"
	"github.com/torgate/torgate/internal/endpoint"
	"github.com/torgate/torgate/socks"
)

// Config configures a Tor. Field comments are the reference; the zero
// value of every optional field takes the documented default.
type Config struct {
	// ControlAddr selects attach mode: the control port of a Tor that
	// already runs, as "IP:port", "/path" or "unix:/path". Empty selects
	// managed mode.
	ControlAddr string
	// ControlPassword authenticates to ControlAddr (Tor's
	// HashedControlPassword). Empty uses what Tor offers without one:
	// SAFECOOKIE (reading the cookie file Tor names) or no authentication.
	// Attach mode only.
	ControlPassword string
	// SocksAddr, in attach mode, is the SocksPort to use ("IP:port",
	// "/path" or "unix:/path") instead of asking Tor (GETINFO
	// net/listeners/socks, preferring a unix socket). Attach mode only:
	// a managed Tor's SocksPort is torctl's own.
	SocksAddr string

	// DataDir is the managed Tor's DataDirectory (created 0700, owned by
	// User). Its control socket, SOCKS socket, cookie and generated torrc
	// live beside it in DataDir+"-run", so its path must leave room for
	// "-run/control.sock" within the 107 bytes a unix socket path may
	// have. Required in managed mode.
	DataDir string
	// User is the account the managed Tor runs as, from the user database
	// (Debian's is "debian-tor"). torctl starts tor with that uid, its
	// primary gid and no supplementary groups, which needs CAP_SETUID and
	// CAP_SETGID at every (re)start; torgate needs CAP_KILL to stop it.
	// DataDir is given to User (chown -R, also migrating one left by an
	// earlier Tor run as root) and every directory above it must be
	// searchable by User. Empty, or the caller's own user: no change.
	// Managed mode only.
	User string
	// TorPath is the tor binary. Empty: "tor" from $PATH, then /usr/sbin
	// and /usr/bin (Debian installs tor in /usr/sbin). Managed mode only.
	TorPath string
	// TorrcFile holds extra torrc lines for the managed Tor, such as
	// bridges and pluggable transports (UseBridges, Bridge,
	// ClientTransportPlugin). torctl's own SocksPort, ControlSocket,
	// DataDirectory and CookieAuthentication are set on tor's command line
	// and override the file's. Optional; managed mode only.
	TorrcFile string
	// TorrcLines are more torrc lines, after TorrcFile's (for embedding and
	// tests). Managed mode only.
	TorrcLines []string

	// RestartBackoff is the wait before restarting a managed Tor that
	// exited again soon after a restart (or retrying a control port that
	// refused authentication); it doubles after each quick failure up to
	// MaxRestartBackoff and is reset after StableAfter of uptime. The
	// first restart after a stable run waits only firstRestart, so a
	// single crash costs about a second of service, not a minute, while a
	// crash loop still backs off. Defaults 1s, 1m and 1m.
	RestartBackoff, MaxRestartBackoff, StableAfter time.Duration
	// ReconnectInterval is how often attach mode retries a control port
	// that is gone (refused, or closed when Tor restarted): the attached
	// Tor is used again within about this long of coming back. Only
	// failed authentication backs off. Default 500ms.
	ReconnectInterval time.Duration
	// CommandTimeout bounds every control command, authentication and
	// startup of the control socket. A Tor that does not answer in time
	// is treated as gone. Default 30s (tor may be busy parsing a consensus
	// on a slow box).
	CommandTimeout time.Duration
	// PollInterval is how often readiness is re-read besides events; each
	// poll is also the liveness probe (one GETINFO of three keys). Default
	// 2s.
	PollInterval time.Duration
	// ProbeDeadline is how long a poll may go unanswered before Tor counts
	// as hung: not ready, and OnDown ends the flows. Tor's main loop
	// answers GETINFO within milliseconds even while it builds circuits;
	// a stopped (SIGSTOP) or wedged Tor answers nothing. Ready returns
	// with the late answer; CommandTimeout later the connection is given
	// up. Default 5s, so a hung Tor is noticed within PollInterval +
	// ProbeDeadline (7s).
	ProbeDeadline time.Duration
	// BootstrapStall is how long bootstrap may make no progress before
	// torctl logs a warning naming Tor's last problem, the likely causes
	// and the next step (also in Diagnosis). Default 60s.
	BootstrapStall time.Duration

	// OnProgress is called when the bootstrap phase changes, in order, one
	// call at a time. It must not call Close. Optional.
	OnProgress func(Bootstrap)
	// OnDown is called after Tor went away (the managed process exited or
	// the control connection was lost), once Ready already reports false:
	// the caller ends the flows that went through that Tor. It must not
	// block for long or call Close. Optional.
	OnDown func()
	// OnConnect is called on every new control connection once it is
	// authenticated and set up, before it serves (a managed Tor restarted,
	// an attached one reconnected): what was added on the previous
	// connection (ADD_ONION without Detach) ended with it. ctx bounds the
	// call (CommandTimeout). An error drops the connection, which is then
	// retried like a lost one, so return errors only for a connection that
	// is unusable. It may call c's commands, not Close. Optional.
	OnConnect func(ctx context.Context, c *Conn) error
	// Logger; nil discards. The managed tor's own log lines are logged
	// at Debug (notice), Warn and Error, with component=tor.
	Logger *slog.Logger

	// Test hooks: start replaces starting the tor process, dial replaces
	// connecting to the control port.
	start func(ctx context.Context, path string, args []string, out io.Writer) (proc, error)
	dial  func(ctx context.Context) (net.Conn, error)
}

// Defaults.
const (
	DefaultRestartBackoff    = time.Second
	DefaultMaxRestartBackoff = time.Minute
	DefaultStableAfter       = time.Minute
	DefaultCommandTimeout    = 30 * time.Second
	DefaultPollInterval      = 2 * time.Second
	DefaultProbeDeadline     = 5 * time.Second
	DefaultReconnectInterval = 500 * time.Millisecond
	DefaultBootstrapStall    = time.Minute
)

// firstRestart is the wait before the first restart after a stable run:
// long enough not to spin on a Tor that exits at once, short enough
// that one crash is barely noticed.
const firstRestart = 200 * time.Millisecond

// maxUnixPath is the longest unix socket path Linux accepts.
const maxUnixPath = endpoint.MaxUnixPath

// Tor is a managed or attached Tor. Its methods are safe for concurrent
// use.
type Tor struct {
	cfg     Config
	log     *slog.Logger
	managed bool
	control endpoint.Endpoint // attach: where to dial; managed: the control socket
	torPath string            // managed
	runDir  string            // managed: sockets, cookie and torrc (DataDir+"-run")
	runAs   *runAs            // managed: the user tor runs as; nil for torgate's own

	ready atomic.Bool                       // mirrors st.Ready(); read per flow
	socks atomic.Pointer[endpoint.Endpoint] // nil until known
	pid   atomic.Int64                      // managed tor's PID, 0 when none

	mu         sync.Mutex
	st         Status        // guarded by mu
	cur        *Conn         // the live session's connection; guarded by mu
	changed    chan struct{} // closed and replaced on every change; guarded by mu
	lastNewNym time.Time     // guarded by mu
	seq        uint64        // bootstrap change counter; guarded by mu
	warned     string        // last bootstrap warning logged; guarded by mu
	progressAt time.Time     // last bootstrap change or session start; guarded by mu
	stalled    string        // the stall diagnosis, once logged; guarded by mu

	confirmMu   sync.Mutex
	confirmWait []func(alive bool) // Confirm's waiters for the next command; guarded by confirmMu
	confirming  bool               // a confirmLoop runs; guarded by confirmMu

	hangs atomic.Uint64          // polls that missed ProbeDeadline
	tlog  atomic.Pointer[torLog] // managed tor's log, for diagnoses
	done  chan struct{}          // closed when the supervisor ends

	cbMu  sync.Mutex // serialises OnProgress
	cbSeq uint64     // guarded by cbMu

	startOnce sync.Once
	stop      context.CancelFunc // set by Start
	closing   atomic.Bool        // Close was called
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg and returns a Tor that has not started yet.
func New(cfg Config) (*Tor, error) {
	t := &Tor{cfg: cfg, changed: make(chan struct{}), done: make(chan struct{})}
	if err := t.validate(); err != nil {
		return nil, err
	}
	t.log = t.cfg.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	return t, nil
}

func (t *Tor) validate() error {
	c := &t.cfg
	defaults.Set(&c.RestartBackoff, DefaultRestartBackoff)
	defaults.Set(&c.MaxRestartBackoff, DefaultMaxRestartBackoff)
	defaults.Set(&c.StableAfter, DefaultStableAfter)
	defaults.Set(&c.CommandTimeout, DefaultCommandTimeout)
	defaults.Set(&c.PollInterval, DefaultPollInterval)
	defaults.Set(&c.ProbeDeadline, DefaultProbeDeadline)
	defaults.Set(&c.ReconnectInterval, DefaultReconnectInterval)
	defaults.Set(&c.BootstrapStall, DefaultBootstrapStall)
	for _, d := range []time.Duration{c.RestartBackoff, c.MaxRestartBackoff, c.StableAfter, c.CommandTimeout, c.PollInterval, c.ProbeDeadline, c.ReconnectInterval, c.BootstrapStall} {
		if d < 0 {
			return errors.New("torctl: negative duration in Config")
		}
	}
	if c.MaxRestartBackoff < c.RestartBackoff {
		return errors.New("torctl: MaxRestartBackoff below RestartBackoff")
	}
	if c.ControlAddr != "" {
		return t.validateAttach()
	}
	return t.validateManaged()
}

func (t *Tor) validateAttach() error {
	c := &t.cfg
	if c.DataDir != "" || c.TorPath != "" || c.TorrcFile != "" || len(c.TorrcLines) > 0 || c.User != "" {
		return errors.New("torctl: DataDir, TorPath, TorrcFile, TorrcLines and User are for managed mode; attach mode (ControlAddr) uses the Tor that runs")
	}
	ep, err := endpoint.Parse(c.ControlAddr)
	if err != nil {
		return fmt.Errorf("torctl: ControlAddr: %w", err)
	}
	t.control = ep
	if c.SocksAddr != "" {
		ep, err := endpoint.Parse(c.SocksAddr)
		if err != nil {
			return fmt.Errorf("torctl: SocksAddr: %w", err)
		}
		t.socks.Store(&ep)
	}
	return nil
}

func (t *Tor) validateManaged() error {
	c := &t.cfg
	t.managed = true
	if c.SocksAddr != "" || c.ControlPassword != "" {
		return errors.New("torctl: SocksAddr and ControlPassword are for attach mode (ControlAddr); a managed Tor uses its own sockets")
	}
	if c.User != "" {
		ra, err := lookupRunAs(c.User)
		if err != nil {
			return err
		}
		t.runAs = ra
	}
	if c.DataDir == "" {
		return errors.New("torctl: DataDir is required in managed mode")
	}
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("torctl: DataDir: %w", err)
	}
	// Tor's command line and torrc quoting would need escapes for these;
	// refuse them instead of getting the quoting subtly wrong.
	if strings.ContainsAny(dir, " \t\r\n\"\\'#%") {
		return fmt.Errorf("torctl: DataDir %q: use a path without spaces, quotes, '#' or '%%'", dir)
	}
	if len(dir)+len(runSuffix+"/control.sock") > maxUnixPath {
		return fmt.Errorf("torctl: DataDir %q is too long for a unix socket path beside it (at most %d bytes)", dir, maxUnixPath-len(runSuffix+"/control.sock"))
	}
	c.DataDir = dir
	t.runDir = dir + runSuffix
	if c.TorrcFile != "" {
		if c.TorrcFile, err = filepath.Abs(c.TorrcFile); err != nil {
			return fmt.Errorf("torctl: TorrcFile: %w", err)
		}
		if strings.ContainsAny(c.TorrcFile, "\r\n") {
			return fmt.Errorf("torctl: TorrcFile %q: bad path", c.TorrcFile)
		}
		if _, err := os.Stat(c.TorrcFile); err != nil {
			return fmt.Errorf("torctl: TorrcFile: %w", err)
		}
	}
	for _, l := range c.TorrcLines {
		if strings.ContainsAny(l, "\r\n") {
			return fmt.Errorf("torctl: TorrcLines: line %q contains a line break", l)
		}
	}
	if c.start == nil {
		if t.torPath, err = findTor(c.TorPath); err != nil {
			return err
		}
	} else {
		t.torPath = c.TorPath
	}
	t.control = endpoint.Endpoint{Network: "unix", Address: filepath.Join(t.runDir, "control.sock")}
	t.socks.Store(&endpoint.Endpoint{Network: "unix", Address: filepath.Join(t.runDir, "socks.sock")})
	return nil
}

// Start starts the managed Tor, or makes the first connection to the
// attached one; ctx bounds only that. A managed Tor is checked with tor
// --verify-config first, so a bad torrc is an error here; it is then
// started in the background and Start returns before it has
// bootstrapped. In attach mode Start returns once the control connection
// is authenticated and the SocksPort known. Start may be called once.
func (t *Tor) Start(ctx context.Context) error {
	err := errors.New("torctl: Start called twice")
	t.startOnce.Do(func() { err = t.start(ctx) })
	return err
}

func (t *Tor) start(ctx context.Context) error {
	bg, stop := context.WithCancel(context.Background())
	t.stop = stop
	if t.managed {
		args, err := t.prepareManaged(ctx)
		if err != nil {
			return err
		}
		t.wg.Go(func() {
			defer close(t.done)
			t.superviseLoop(bg, args)
		})
		return nil
	}
	c, err := t.open(ctx)
	if err != nil {
		return err
	}
	t.wg.Go(func() {
		defer close(t.done)
		t.attachLoop(bg, c)
	})
	return nil
}

// Close stops the managed Tor (SIGTERM) or drops the control connection,
// and waits for torctl's goroutines. Ready is false afterwards.
func (t *Tor) Close() error {
	t.closeOnce.Do(func() {
		t.startOnce.Do(func() {}) // a later Start fails
		t.closing.Store(true)
		if t.stop != nil {
			t.stop()
		}
		t.wg.Wait()
		t.update(func(st *Status) { st.Connected = false })
	})
	return nil
}

// Done is closed when the supervisor has stopped: after Close, or (a
// bug) if it ever ended on its own. A caller that runs Tor's supervision
// alongside other parts treats the second as fatal.
func (t *Tor) Done() <-chan struct{} { return t.done }

// Hangs counts polls that went unanswered past ProbeDeadline.
func (t *Tor) Hangs() uint64 { return t.hangs.Load() }

// Ready reports whether Tor can carry traffic now. It is one atomic load,
// cheap enough to call for every flow and DNS query.
func (t *Tor) Ready() bool { return t.ready.Load() }

// Status returns a snapshot of Tor's state.
func (t *Tor) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// ReadyErr is nil when Ready, else an error saying why, for a readiness
// probe.
func (t *Tor) ReadyErr() error {
	st := t.Status()
	if st.Ready() {
		return nil
	}
	return errors.New(st.Reason())
}

// Changed returns a channel closed at the next change of what Status
// reports (readiness among it): the router's readiness gate waits on it.
func (t *Tor) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// WaitReady blocks until Tor is ready or ctx is done.
func (t *Tor) WaitReady(ctx context.Context) error {
	for {
		t.mu.Lock()
		ready, ch := t.st.Ready(), t.changed
		t.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for tor: %w (%s)", ctx.Err(), t.Status().Reason())
		}
	}
}

// DialSocks connects to Tor's SocksPort. It is the Dial of the router's
// socks.Dialer.
func (t *Tor) DialSocks(ctx context.Context) (net.Conn, error) {
	ep := t.socks.Load()
	if ep == nil {
		return nil, ErrNoSocksPort
	}
	return socks.Dial(ctx, ep.Network, ep.Address)
}

// SocksAddr returns the SocksPort in use ("unix:/path" or "IP:port"), or
// "" while it is unknown.
func (t *Tor) SocksAddr() string {
	if ep := t.socks.Load(); ep != nil {
		return ep.String()
	}
	return ""
}

// SwitchesUser reports whether the managed tor runs as another user than
// torgate (Config.User): then every restart needs CAP_SETUID and
// CAP_SETGID, and stopping it CAP_KILL.
func (t *Tor) SwitchesUser() bool { return t.runAs != nil }

// User names the account a managed Tor runs as when it is not torgate's
// own (what must reach files torgate makes for it), "" otherwise.
func (t *Tor) User() string {
	if t.runAs == nil {
		return ""
	}
	return t.runAs.name
}

// PID returns the managed tor's process ID, or 0 when none runs (or in
// attach mode).
func (t *Tor) PID() int { return int(t.pid.Load()) }

// ProcessState reports whether Tor's process is exiting or gone right
// now (none runs, or its process is exiting, PF_EXITING, or a zombie),
// and whether it knows: it answers from the process itself, not from the
// supervisor's view, so a stream that a dying tor closed can be told from
// one the exit ended at the moment its end is read (see
// tunnel.Config.UpstreamState). known is false for an attached Tor,
// whose process torgate did not start (its ends of stream are decided by
// Confirm alone), and when /proc hides a managed tor's process (hidepid,
// with tor running as another user): then callers must find their
// evidence elsewhere. It does not allocate.
func (t *Tor) ProcessState() (exiting, known bool) {
	if !t.managed {
		return false, false
	}
	pid := t.PID()
	if pid == 0 {
		return true, true
	}
	return procState(pid)
}

// NewNymWait returns how long until Tor accepts the next NEWNYM (0: now).
func (t *Tor) NewNymWait() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.newNymWaitLocked(time.Now())
}

func (t *Tor) newNymWaitLocked(now time.Time) time.Duration {
	if t.lastNewNym.IsZero() {
		return 0
	}
	return max(0, t.lastNewNym.Add(NewNymInterval).Sub(now))
}

// NewNym sends SIGNAL NEWNYM: Tor marks every circuit dirty, so new
// streams get new circuits, and forgets its DNS and onion-service caches.
// Within NewNymInterval of the last one it sends nothing and returns a
// *RateLimitError.
func (t *Tor) NewNym(ctx context.Context) error {
	now := time.Now()
	t.mu.Lock()
	c := t.cur
	if c == nil || !t.st.Connected {
		t.mu.Unlock()
		return ErrNotConnected
	}
	if w := t.newNymWaitLocked(now); w > 0 {
		t.mu.Unlock()
		return &RateLimitError{Wait: w}
	}
	prev := t.lastNewNym
	t.lastNewNym = now
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, t.cfg.CommandTimeout)
	defer cancel()
	if err := c.Signal(ctx, "NEWNYM"); err != nil {
		t.mu.Lock()
		if t.lastNewNym.Equal(now) {
			t.lastNewNym = prev
		}
		t.mu.Unlock()
		return err
	}
	t.log.Info("tor new identity")
	return nil
}

// dialControl connects to the control port.
func (t *Tor) dialControl(ctx context.Context) (net.Conn, error) {
	if t.cfg.dial != nil {
		return t.cfg.dial(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, t.control.Network, t.control.Address)
}

// open dials the control port and sets the connection up: authenticate,
// take ownership of a managed Tor, learn the SocksPort of an attached one,
// and subscribe to the events readiness follows. It does not yet make the
// connection current; serve does.
func (t *Tor) open(ctx context.Context) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.CommandTimeout)
	defer cancel()
	nc, err := t.dialControl(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to tor control port %s: %w", t.control.Address, err)
	}
	var c *Conn
	c = NewConn(nc, func(ev Event) { t.onEvent(c, ev) })
	if err := t.setup(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (t *Tor) setup(ctx context.Context, c *Conn) error {
	if err := c.Authenticate(ctx, t.cfg.ControlPassword); err != nil {
		return fmt.Errorf("tor control port %s: %w", t.control.Address, err)
	}
	if t.managed {
		// Tor exits when this connection closes, so it never outlives
		// torgate, even after a crash.
		if err := c.takeOwnership(ctx); err != nil {
			return err
		}
	} else if t.cfg.SocksAddr == "" {
		info, err := c.GetInfo(ctx, "net/listeners/socks")
		if err != nil {
			return err
		}
		ls, err := parseListeners(info["net/listeners/socks"])
		if err != nil {
			return fmt.Errorf("net/listeners/socks: %w", err)
		}
		n, a, err := pickSocks(ls)
		if err != nil {
			return err
		}
		if old := t.socks.Load(); old == nil || *old != (endpoint.Endpoint{Network: n, Address: a}) {
			t.log.Info("tor socks port", "network", n, "address", a)
		}
		t.socks.Store(&endpoint.Endpoint{Network: n, Address: a})
	}
	t.mu.Lock()
	t.cur = c
	t.mu.Unlock()
	err := c.SetEvents(ctx, evStatusClient, evNetworkLiveness)
	if err == nil && t.cfg.OnConnect != nil {
		err = t.cfg.OnConnect(ctx, c)
	}
	if err != nil {
		t.mu.Lock()
		t.cur = nil
		t.mu.Unlock()
		return err
	}
	return nil
}

// serve runs the session on an open connection until it ends or ctx is
// done, then closes the connection, marks Tor not ready and calls OnDown.
func (t *Tor) serve(ctx context.Context, c *Conn) error {
	defer t.lost(c)
	defer c.Close()
	t.update(func(st *Status) {
		st.Connected = true
		st.Unresponsive = false
		st.Bootstrap = Bootstrap{}
		st.CircuitEstablished, st.NetworkLive = false, false
	})
	t.mu.Lock()
	t.progressAt, t.stalled = time.Now(), ""
	t.mu.Unlock()
	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()
	for {
		if err := t.probe(ctx, c); err != nil {
			return err
		}
		t.checkStall(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return c.Err()
		case <-tick.C:
		}
	}
}

// probe polls with a deadline. A poll unanswered after ProbeDeadline
// makes Tor unresponsive: not ready, and OnDown ends the flows (they are
// stuck behind the same main loop). The poll goes on waiting, up to
// CommandTimeout: its answer makes Tor responsive (and ready) again.
func (t *Tor) probe(ctx context.Context, c *Conn) error {
	res := make(chan error, 1)
	go func() { res <- t.poll(ctx, c) }()
	timer := time.NewTimer(t.cfg.ProbeDeadline)
	defer timer.Stop()
	select {
	case err := <-res:
		return err
	case <-timer.C:
	}
	t.hangs.Add(1)
	t.apply(c, func(st *Status) { st.Unresponsive = true })
	if t.cfg.OnDown != nil {
		t.cfg.OnDown()
	}
	return <-res
}

// lost marks the session of c over.
func (t *Tor) lost(c *Conn) {
	t.mu.Lock()
	if t.cur == c {
		t.cur = nil
	}
	t.mu.Unlock()
	t.update(func(st *Status) { st.Connected, st.Unresponsive = false, false })
	if t.cfg.OnDown != nil {
		t.cfg.OnDown()
	}
}

// poll reads the readiness state with one GETINFO.
func (t *Tor) poll(ctx context.Context, c *Conn) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.CommandTimeout)
	defer cancel()
	info, err := c.GetInfo(ctx, "status/bootstrap-phase", "status/circuit-established", "network-liveness")
	if err != nil {
		return err
	}
	b, ok, err := parseBootstrap(info["status/bootstrap-phase"])
	if err != nil || !ok {
		return fmt.Errorf("status/bootstrap-phase %q: %w", info["status/bootstrap-phase"], errors.Join(err, ErrSyntax))
	}
	circ, err := parseBool01(info["status/circuit-established"])
	if err != nil {
		return fmt.Errorf("status/circuit-established: %w", err)
	}
	live, err := parseLiveness(info["network-liveness"])
	if err != nil {
		return fmt.Errorf("network-liveness: %w", err)
	}
	t.apply(c, func(st *Status) {
		t.setBootstrap(st, b)
		st.CircuitEstablished = circ
		st.NetworkLive = live
		st.Unresponsive = false
	})
	return nil
}

// onEvent applies an event of connection c. Called from c's event loop.
func (t *Tor) onEvent(c *Conn, ev Event) {
	switch ev.Code {
	case evNetworkLiveness:
		live, err := parseLiveness(ev.Raw)
		if err != nil {
			t.log.Debug("tor event ignored", "code", ev.Code, "err", err)
			return
		}
		t.apply(c, func(st *Status) { st.NetworkLive = live })
	case evStatusClient:
		_, action, args, err := parseStatus(ev.Raw)
		if err != nil {
			t.log.Debug("tor event ignored", "code", ev.Code, "err", err)
			return
		}
		switch action {
		case "BOOTSTRAP":
			b, _, err := parseBootstrap(ev.Raw)
			if err != nil {
				t.log.Debug("tor event ignored", "code", ev.Code, "err", err)
				return
			}
			t.apply(c, func(st *Status) { t.setBootstrap(st, b) })
		case "CIRCUIT_ESTABLISHED":
			t.apply(c, func(st *Status) { st.CircuitEstablished = true })
		case "CIRCUIT_NOT_ESTABLISHED":
			t.log.Warn("tor lost its circuits", "reason", args["REASON"])
			t.apply(c, func(st *Status) { st.CircuitEstablished = false })
		}
	}
}

// setBootstrap records b. Progress only moves forward within a session:
// an event relayed before a GETINFO reply may be delivered after it.
func (t *Tor) setBootstrap(st *Status, b Bootstrap) {
	if b.Warning != "" {
		if b.Warning != t.warned {
			t.warned = b.Warning
			t.log.Warn("tor bootstrap problem", "progress", b.Progress, "tag", b.Tag, "warning", b.Warning)
		}
		if b.Progress > st.Bootstrap.Progress {
			// A session that starts on a warning learns its phase from it.
			st.Bootstrap = b
			return
		}
		st.Bootstrap.Warning = b.Warning
		return
	}
	if b.Progress < st.Bootstrap.Progress {
		return
	}
	if b.Progress > st.Bootstrap.Progress {
		t.warned = ""
		b.Warning = ""
	} else {
		b.Warning = st.Bootstrap.Warning
	}
	st.Bootstrap = b
}

// apply changes the status if c is still the current connection.
func (t *Tor) apply(c *Conn, f func(*Status)) {
	t.mu.Lock()
	if t.cur != c {
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.update(f)
}

// update changes the status, keeps the atomic Ready in step, logs
// readiness transitions and reports bootstrap changes.
func (t *Tor) update(f func(*Status)) {
	t.mu.Lock()
	old := t.st
	f(&t.st)
	st := t.st
	t.ready.Store(st.Ready())
	if st != old {
		close(t.changed)
		t.changed = make(chan struct{})
	}
	progressed := st.Bootstrap != old.Bootstrap
	if progressed {
		t.seq++
		if st.Bootstrap.Progress != old.Bootstrap.Progress {
			t.progressAt, t.stalled = time.Now(), ""
		}
	}
	seq := t.seq
	t.mu.Unlock()

	switch {
	case st.Ready() && !old.Ready():
		t.log.Info("tor ready")
	case !st.Ready() && old.Ready() && !t.closing.Load():
		t.log.Warn("tor not ready", "reason", st.Reason())
	}
	// A session's start clears the phase (Tag ""); the poll that follows
	// reports the real one, so the cleared value is not worth a call.
	if progressed && st.Bootstrap.Tag != "" && t.cfg.OnProgress != nil {
		t.cbMu.Lock()
		if seq > t.cbSeq {
			t.cbSeq = seq
			t.cfg.OnProgress(st.Bootstrap)
		}
		t.cbMu.Unlock()
	}
}

// sleep waits d or until ctx is done, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff tracks the restart delay: firstRestart for the first failure
// (or the first after a run of at least stable), then base, doubling up
// to max.
type backoff struct {
	base, max, stable time.Duration
	cur               time.Duration // the delay after the next quick failure; 0 before the first
}

// next returns the delay before the next attempt after a run that lasted
// up; a long enough run resets it.
func (b *backoff) next(up time.Duration) time.Duration {
	if b.cur == 0 || up >= b.stable {
		b.cur = b.base
		return min(firstRestart, b.base)
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

// attachLoop serves the attached Tor's control connection and reconnects
// when it is lost: every ReconnectInterval while the control port is
// gone (an attached Tor that restarts is used again within about that
// long), with backoff only while it refuses authentication (retrying a
// wrong password fast helps nobody).
func (t *Tor) attachLoop(ctx context.Context, c *Conn) {
	for {
		err := t.serve(ctx, c)
		if ctx.Err() != nil {
			return
		}
		lostAt := time.Now()
		t.log.Warn("tor control connection lost", "err", err, "retry_every", t.cfg.ReconnectInterval)
		bo := backoff{base: t.cfg.RestartBackoff, max: t.cfg.MaxRestartBackoff, stable: t.cfg.StableAfter}
		wait, logged := t.cfg.ReconnectInterval, false
		for {
			if !sleep(ctx, wait) {
				return
			}
			c, err = t.open(ctx)
			if err == nil {
				t.log.Info("tor control connection restored", "down_for", time.Since(lostAt).Round(time.Millisecond))
				break
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrAuth) {
				wait = max(bo.next(0), t.cfg.ReconnectInterval)
				t.log.Warn("tor control connection refused authentication", "err", err, "retry_in", wait)
				continue
			}
			wait = t.cfg.ReconnectInterval
			if !logged {
				// Once per outage: the retries are frequent.
				logged = true
				t.log.Warn("tor control connection failed; retrying", "err", err, "retry_every", wait)
			}
		}
	}
}
