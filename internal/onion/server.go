package onion

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/torgate/torgate/internal/torctl"
)

// Server hosts the configured onion services: it keeps their keys,
// listens on their sockets, adds them to every control connection
// (OnConnect) and relays Tor's connections to the targets.
type Server struct {
	cfg  Config
	log  *slog.Logger
	svcs []*service
	own  *sockOwner // nil: Tor runs as torgate's user

	stats stats

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	held  int           // relayed connections, all services; guarded by mu
	cur   *torctl.Conn  // the control connection the services were last added on; guarded by mu
	state chan struct{} // closed and replaced when a service's Live changes; guarded by mu

	startOnce sync.Once
	closeOnce sync.Once
}

// service is one onion service: the entries for one target address.
type service struct {
	target netip.Addr
	key    ed25519.PrivateKey
	id     string // service ID (address without ".onion")
	ports  []*port

	held int    // relayed connections; guarded by Server.mu
	live bool   // added on the current control connection; guarded by Server.mu
	err  string // why the last ADD_ONION failed; guarded by Server.mu
}

// port is one entry: a virtual port, its socket and its target.
type port struct {
	Entry
	sock string
	ln   *net.UnixListener // set by New
}

// Service is the state of one onion service, for the start-up log and
// readiness details.
type Service struct {
	// Address is the .onion hostname.
	Address string
	// Target is the workstation address its ports relay to. Treat it as
	// private: it is the operator's configuration, not for logs.
	Target netip.Addr
	// Ports are the virtual ports, ascending.
	Ports []uint16
	// Live is true when Tor accepted the service on the current control
	// connection; it is false before the first one, between connections
	// and after Close.
	Live bool
	// Err is why Tor refused the service on the current connection, or
	// "".
	Err string
}

// New validates cfg, loads the services' keys (creating those missing),
// prepares the socket directory and listens on the sockets: everything
// that needs privileges (writing the state directory; CAP_CHOWN to give
// the sockets to TorUser's group) happens here, so torgate may drop them
// after New. Connections wait in the sockets' backlog until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	groups, err := group(cfg.Entries)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, state: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "onion")
	if s.own, err = lookupOwner(cfg.TorUser); err != nil {
		return nil, err
	}
	for i, es := range groups {
		key, created, err := loadOrCreateKey(cfg.StateDir, es[0].Target.Addr())
		if err != nil {
			return nil, err
		}
		svc := &service{target: es[0].Target.Addr(), key: key, id: ServiceID(key.Public().(ed25519.PublicKey))}
		if created {
			s.log.Info("onion service key created", "address", svc.id+".onion")
		}
		for _, e := range es {
			svc.ports = append(svc.ports, &port{Entry: e, sock: filepath.Join(cfg.SocketDir, "s"+strconv.Itoa(i)+"-"+strconv.Itoa(int(e.Port))+".sock")})
		}
		s.svcs = append(s.svcs, svc)
	}
	if err := s.prepareSocketDir(); err != nil {
		return nil, err
	}
	for _, svc := range s.svcs {
		for _, p := range svc.ports {
			ln, err := s.listen(p.sock)
			if err != nil {
				s.closeListeners()
				return nil, err
			}
			p.ln = ln
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start accepts Tor's connections on every entry's socket. It may be
// called once, before or after the control connection adds the services
// (a connection that came first waits in the backlog).
func (s *Server) Start() error {
	err := errors.New("onion: Start called twice")
	s.startOnce.Do(func() { err = s.start() })
	return err
}

func (s *Server) start() error {
	if s.ctx.Err() != nil {
		return errors.New("onion: Start after Close")
	}
	for _, svc := range s.svcs {
		for _, p := range svc.ports {
			s.wg.Go(func() { s.acceptLoop(svc, p) })
		}
	}
	return nil
}

// Close stops listening, removes the sockets, ends every relayed
// connection and waits for them. Tor drops the services itself when
// torgate's control connection closes.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.startOnce.Do(func() {}) // a later Start fails
		s.mu.Lock()
		s.cancel()
		s.mu.Unlock()
		s.closeListeners()
		s.wg.Wait()
		s.mu.Lock()
		s.cur = nil
		s.resetLocked()
		s.mu.Unlock()
	})
	return nil
}

func (s *Server) closeListeners() {
	for _, svc := range s.svcs {
		for _, p := range svc.ports {
			if p.ln != nil {
				p.ln.Close() // unlinks the socket (SetUnlinkOnClose defaults to true for Listen)
			}
		}
	}
}

// Services returns the state of each service, sorted by target address.
func (s *Server) Services() []Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Service, 0, len(s.svcs))
	for _, svc := range s.svcs {
		v := Service{Address: svc.id + ".onion", Target: svc.target, Live: svc.live, Err: svc.err}
		for _, p := range svc.ports {
			v.Ports = append(v.Ports, p.Port)
		}
		out = append(out, v)
	}
	return out
}

// Changed returns a channel closed at the next change of a service's Live
// or Err.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// ReadyErr is nil when every service is live on the current control
// connection, else an error naming those that are not and why (for
// /readyz details; it names onion addresses, not targets).
func (s *Server) ReadyErr() error {
	var bad []string
	for _, v := range s.Services() {
		if !v.Live {
			why := v.Err
			if why == "" {
				why = "not added (no control connection)"
			}
			bad = append(bad, v.Address+": "+why)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New("onion services not live: " + strings.Join(bad, "; "))
}

// ADD_ONION retries. A collision means Tor still holds the key, as when
// an attached Tor has not yet reaped torgate's previous control
// connection; the retry gives it that moment.
const (
	addAttempts  = 3
	addRetryWait = time.Second
)

// OnConnect adds every service to c: it is torctl.Config.OnConnect. A
// service Tor refuses is recorded (Services, ReadyErr) and logged, and
// the connection kept: Tor still serves the workstations' own traffic. It
// returns an error only when c itself failed. The services belong to c
// (no Flags=Detach): they end with it, and the next connection adds them
// again.
func (s *Server) OnConnect(ctx context.Context, c *torctl.Conn) error {
	if s.ctx.Err() != nil {
		return nil
	}
	s.mu.Lock()
	s.cur = c
	s.resetLocked()
	s.mu.Unlock()
	for _, svc := range s.svcs {
		err := s.add(ctx, c, svc)
		if err != nil && (c.Err() != nil || ctx.Err() != nil) {
			// torctl drops c: what was added on it is gone.
			s.mu.Lock()
			if s.cur == c {
				s.cur = nil
				s.resetLocked()
			}
			s.mu.Unlock()
			return fmt.Errorf("onion: add %s.onion: %w", svc.id, err)
		}
		s.mu.Lock()
		if s.cur == c {
			s.markLocked(svc, err)
		}
		s.mu.Unlock()
		if err != nil {
			s.stats.addFailed.Add(1)
			s.log.Warn("tor refused an onion service; it stays down until the next control connection", "address", svc.id+".onion", "err", err)
			continue
		}
		s.stats.added.Add(1)
		s.log.Info("onion service up", "address", svc.id+".onion", "ports", svc.portList())
	}
	// The services end with c: not live from then on. Close cancels
	// s.ctx holding mu, so no goroutine is added once it waits.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil
	}
	s.wg.Go(func() {
		select {
		case <-c.Done():
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		if s.cur == c {
			s.cur = nil
			s.resetLocked()
		}
		s.mu.Unlock()
	})
	return nil
}

// resetLocked marks every service down with no error (a new control
// connection, one lost, Close) and signals the change.
func (s *Server) resetLocked() {
	for _, svc := range s.svcs {
		svc.live, svc.err = false, ""
	}
	s.changedLocked()
}

// markLocked records the outcome of svc's ADD_ONION.
func (s *Server) markLocked(svc *service, err error) {
	svc.live, svc.err = err == nil, ""
	if err != nil {
		svc.err = err.Error()
	}
	s.changedLocked()
}

func (s *Server) changedLocked() {
	close(s.state)
	s.state = make(chan struct{})
}

// add sends one service's ADD_ONION, retrying a collision.
func (s *Server) add(ctx context.Context, c *torctl.Conn, svc *service) error {
	line := addOnionLine(svc)
	for attempt := 1; ; attempt++ {
		rep, err := c.Request(ctx, line)
		if err == nil {
			return checkServiceID(rep, svc.id)
		}
		var re *torctl.ReplyError
		if !errors.As(err, &re) || !strings.Contains(strings.ToLower(re.Text), "collision") || attempt == addAttempts {
			// The error quotes Tor's reply, never the command: no key.
			return err
		}
		select {
		case <-time.After(addRetryWait):
		case <-ctx.Done():
			return err
		}
	}
}

// addOnionLine builds the ADD_ONION command of a service: its key and a
// Port= line per entry to the entry's socket. No Flags=Detach: the
// service belongs to the control connection. The socket path is
// unquoted (Config.SocketDir rules out what would need quoting).
func addOnionLine(svc *service) string {
	var b strings.Builder
	b.WriteString("ADD_ONION ")
	b.WriteString(torKey(svc.key))
	for _, p := range svc.ports {
		fmt.Fprintf(&b, " Port=%d,unix:%s", p.Port, p.sock)
	}
	return b.String()
}

// errServiceID: Tor's reply named another service than the key's, or
// none. It would mean the key went into Tor wrongly.
var errServiceID = errors.New("onion: ADD_ONION reply has not the expected ServiceID")

// checkServiceID checks that Tor's reply names the service of the key.
func checkServiceID(rep torctl.Reply, want string) error {
	for _, l := range rep.Lines {
		if id, ok := strings.CutPrefix(l.Text, "ServiceID="); ok {
			if id != want {
				return fmt.Errorf("%w: Tor says %s, the key gives %s", errServiceID, id, want)
			}
			return nil
		}
	}
	return errServiceID
}

func (svc *service) portList() string {
	ps := make([]string, len(svc.ports))
	for i, p := range svc.ports {
		ps[i] = strconv.Itoa(int(p.Port))
	}
	return strings.Join(ps, ",")
}

// acquire takes a relay slot for svc: within MaxConns in all and
// MaxConnsPerService for svc.
func (s *Server) acquire(svc *service) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held >= s.cfg.MaxConns || svc.held >= s.cfg.MaxConnsPerService {
		return false
	}
	s.held++
	svc.held++
	return true
}

func (s *Server) release(svc *service) {
	s.mu.Lock()
	s.held--
	svc.held--
	s.mu.Unlock()
}

// acceptBackoff is the pause after a failed Accept that is not the
// listener's close (out of file descriptors): the loop must not spin.
const acceptBackoff = 100 * time.Millisecond

// acceptLoop takes Tor's connections to one entry's socket.
func (s *Server) acceptLoop(svc *service, p *port) {
	for {
		c, err := p.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.stats.acceptErrors.Add(1)
			select {
			case <-time.After(acceptBackoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		if !s.acquire(svc) {
			// Tor ends the stream; its client sees the service refuse.
			// Counted first, so whoever sees the close sees the count.
			s.stats.result[resultOverLimit].Add(1)
			c.Close()
			continue
		}
		s.wg.Go(func() {
			defer s.release(svc)
			s.serve(c, p.Target)
		})
	}
}

// serve dials target for Tor's connection tc and relays between them.
func (s *Server) serve(tc *net.UnixConn, target netip.AddrPort) {
	defer tc.Close()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	wc, err := s.cfg.Dial(ctx, target)
	cancel()
	if err != nil {
		s.stats.result[resultDialFailed].Add(1)
		// The error may name the target: only its class is logged.
		s.log.Debug("onion target dial failed", "timeout", errors.Is(err, context.DeadlineExceeded))
		return
	}
	defer wc.Close()
	s.stats.result[resultRelayed].Add(1)
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)
	stop := context.AfterFunc(s.ctx, func() {
		tc.Close()
		wc.Close()
	})
	defer stop()
	up, down := relay(tc, wc, s.cfg.HalfCloseTimeout)
	s.stats.bytesIn.Add(uint64(up))
	s.stats.bytesOut.Add(uint64(down))
}

// stats are the Server's counters.
type stats struct {
	result       [numResults]atomic.Uint64
	active       atomic.Int64
	added        atomic.Uint64 // ADD_ONION accepted
	addFailed    atomic.Uint64 // ADD_ONION refused
	acceptErrors atomic.Uint64
	bytesIn      atomic.Uint64 // Tor -> workstation
	bytesOut     atomic.Uint64 // workstation -> Tor
}

// result is how a connection from Tor ended its admission; a bounded
// metric label.
type result uint8

const (
	resultRelayed    result = iota // dialled and relayed
	resultOverLimit                // over MaxConns or the service's share: closed at once
	resultDialFailed               // the target refused or did not answer
	numResults
)

var resultNames = [numResults]string{
	resultRelayed:    "relayed",
	resultOverLimit:  "over_limit",
	resultDialFailed: "dial_failed",
}
