package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/torgate/torgate/internal/torctl"
)

// DefaultWebName is the name the network's DNS server resolves to the web
// server (Network.WebName).
const DefaultWebName = "web.test.lan"

// blockAttempts is how many random blocks Start tries before giving up
// when the chosen one is already in use.
const blockAttempts = 8

// Polling periods. Everything the harness waits for is a local TCP round
// trip, so polling is cheap; these just keep the 2-core box quiet.
const (
	pollFast = 50 * time.Millisecond  // ports coming up, bootstrap progress
	pollDir  = 200 * time.Millisecond // DirPort documents
	// descriptorWait bounds waiting for relay descriptors before the
	// trigger; past it the authorities vote on their own schedule and the
	// network still comes up, one or two intervals later. Descriptors
	// normally arrive 2-5 s after launch; on a loaded 2-core box tor's
	// start-up crypto has been seen to take 10-25 s.
	descriptorWait = 60 * time.Second
	// reholdEvery re-sends the hold offset while descriptors are still
	// missing, well before the held vote would start (interval - 2 - 4 s
	// after the previous hold), so the authorities never waste a vote on
	// an incomplete set of relays.
	reholdEvery = 15 * time.Second
)

// Network is a running private Tor network. Its exported fields are set
// by Start and must not be modified.
type Network struct {
	// SocksAddr is the client tor's SocksPort (host:port), with
	// IsolateSOCKSAuth (the default) and ExtendedErrors.
	SocksAddr string
	// ControlAddr is the client tor's ControlPort (host:port).
	ControlAddr string
	// CookiePath is the client tor's control_auth_cookie.
	CookiePath string
	// WebAddr is the HTTP test server (see WebBody and webHandler).
	WebAddr netip.AddrPort
	// WebName resolves to WebAddr's address through the exits' DNS.
	WebName string
	// DNSAddr is the DNS server the exits use.
	DNSAddr netip.AddrPort
	// OnionAddr is "<56 chars>.onion" when Config.Onion is set; its port
	// 80 maps to WebAddr.
	OnionAddr string
	// Block is the 127.A.B.0/24 the network lives in.
	Block netip.Prefix
	// Dir is Config.Dir: torrcs and logs are in Dir/nodes/<name>/.
	Dir string

	// Measured timings. Times after "launch" count from the start of
	// the first tor process.
	KeygenTime    time.Duration // key generation or cache copy
	ConsensusTime time.Duration // launch -> complete consensus served
	BootstrapTime time.Duration // launch -> client PROGRESS=100
	OnionTime     time.Duration // launch -> descriptor uploaded; 0 without Onion
	KeysCached    bool          // every key came from the key cache

	cfg       Config
	log       *slog.Logger
	files     files
	pickBlock func() netip.Prefix // randomBlock; replaced in tests

	nodes   []*node // every node, in start order
	auths   []*node
	middles []*node
	exits   []*node
	relays  []*node // auths, middles and exits
	client  *node
	onion   *node

	dirTr   *http.Transport
	dns     *dnsServer
	web     *http.Server
	webDone chan struct{} // closed when web.Serve returns

	ctlMu sync.Mutex // guards ctl
	ctl   *Control   // shared connection to the client for helpers

	setupCtls []*Control // authority and onion connections used by Start

	died     chan struct{} // closed when the first tor exits
	diedOnce sync.Once
	diedNode string // written before died is closed

	closeOnce sync.Once
	closeErr  error
}

// Start builds and starts a network. It returns once the client tor is
// bootstrapped (PROGRESS=100) and, with Config.Onion, the onion service's
// descriptor is uploaded to every HSDir. On error it has already cleaned
// up. The caller must call Close.
func Start(ctx context.Context, cfg Config) (_ *Network, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	n := &Network{
		cfg:       cfg,
		log:       cfg.Logger,
		Dir:       cfg.Dir,
		WebName:   DefaultWebName,
		dirTr:     newDirTransport(),
		died:      make(chan struct{}),
		pickBlock: randomBlock,
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if err := n.listen(); err != nil {
		return nil, err
	}
	n.layout()
	if err := n.writeSharedFiles(); err != nil {
		return nil, err
	}

	kstart := time.Now()
	kg := &keygen{
		torPath:     cfg.TorPath,
		gencertPath: cfg.GencertPath,
		empty:       n.files.empty,
		cfg:         &n.cfg,
	}
	if !cfg.NoKeyCache {
		kg.cacheRoot = cfg.KeyCacheDir
	}
	n.KeysCached, err = kg.run(ctx, n.relays)
	if err != nil {
		return nil, &StartError{Stage: "keygen", Err: err}
	}
	n.KeygenTime = time.Since(kstart)
	n.log.Info("testnet keys ready", "duration", n.KeygenTime, "cached", n.KeysCached)

	if err := n.launch(ctx); err != nil {
		return nil, err
	}
	n.log.Info("testnet ready",
		"block", n.Block,
		"socks", n.SocksAddr,
		"keygen", n.KeygenTime,
		"consensus", n.ConsensusTime,
		"bootstrap", n.BootstrapTime,
		"onion", n.OnionTime)
	return n, nil
}

// listen claims a block by binding the DNS and web servers in it: a block
// used by another network fails here, before any tor starts.
func (n *Network) listen() error {
	attempts := blockAttempts
	if n.cfg.Block.IsValid() {
		attempts = 1
	}
	var lastErr error
	for range attempts {
		block := n.cfg.Block
		if !block.IsValid() {
			block = n.pickBlock()
		}
		err := n.listenIn(block)
		if err == nil {
			n.Block = block
			return nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		n.log.Debug("testnet block in use", "block", block)
	}
	return fmt.Errorf("testnet: claim address block: %w", lastErr)
}

func (n *Network) listenIn(block netip.Prefix) (err error) {
	dnsAddr := netip.AddrPortFrom(blockAddr(block, hostDNS), dnsPort)
	webAddr := netip.AddrPortFrom(blockAddr(block, hostWeb), webPort)
	var closers []func() error
	defer func() {
		if err != nil {
			for _, c := range closers {
				c()
			}
		}
	}()
	udp, err := net.ListenPacket("udp", dnsAddr.String())
	if err != nil {
		return err
	}
	closers = append(closers, udp.Close)
	tcp, err := net.Listen("tcp", dnsAddr.String())
	if err != nil {
		return err
	}
	closers = append(closers, tcp.Close)
	webLn, err := net.Listen("tcp", webAddr.String())
	if err != nil {
		return err
	}
	records := map[string]netip.Addr{DefaultWebName: webAddr.Addr()}
	for name, a := range n.cfg.Hosts {
		records[name] = a
	}
	n.dns = newDNSServer(n.log.With("component", "dns"), records, udp, tcp)
	n.dns.start()
	n.web = newWebServer()
	n.webDone = make(chan struct{})
	go func() {
		defer close(n.webDone)
		_ = n.web.Serve(webLn)
	}()
	n.DNSAddr, n.WebAddr = dnsAddr, webAddr
	return nil
}

// layout creates the nodes and their directories' paths.
func (n *Network) layout() {
	mk := func(name string, r role, host int) *node {
		nd := &node{
			name: name,
			role: r,
			addr: blockAddr(n.Block, byte(host)),
			dir:  filepath.Join(n.cfg.Dir, "nodes", name),
		}
		n.nodes = append(n.nodes, nd)
		return nd
	}
	for i := range numAuthorities {
		n.auths = append(n.auths, mk("auth"+strconv.Itoa(i), roleAuthority, hostAuth+i))
	}
	for i := range n.cfg.Relays {
		n.middles = append(n.middles, mk("mid"+strconv.Itoa(i), roleMiddle, hostMiddle+i))
	}
	for i := range n.cfg.Exits {
		n.exits = append(n.exits, mk("exit"+strconv.Itoa(i), roleExit, hostExit+i))
	}
	n.relays = append(append(append([]*node{}, n.auths...), n.middles...), n.exits...)
	n.client = mk("client0", roleClient, hostClient)
	if n.cfg.Onion {
		n.onion = mk("hs0", roleOnion, hostOnion)
	}
	n.SocksAddr = n.client.socksAddr()
	n.ControlAddr = n.client.controlAddr()
	n.CookiePath = n.client.cookiePath()
}

func (n *Network) writeSharedFiles() error {
	n.files = files{
		empty:   filepath.Join(n.cfg.Dir, "empty"),
		resolv:  filepath.Join(n.cfg.Dir, "resolv.conf"),
		bwfile:  filepath.Join(n.cfg.Dir, "bwfile"),
		ownerID: os.Getpid(),
	}
	for _, nd := range n.nodes {
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
	}
	// An empty regular file: tor rejects /dev/null for -f, and parsing the
	// real GeoIP files costs seconds and ~90 MB per tor.
	if err := os.WriteFile(n.files.empty, nil, 0o600); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	if err := os.WriteFile(n.files.resolv, []byte(resolvConf(n.DNSAddr)), 0o600); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	return nil
}

// launch writes the torrcs and runs the bootstrap sequence of
// /work/shared/tor-testnet.md section 6: authorities with the first vote
// held, relays, trigger the vote once every descriptor is in, wait for a
// complete consensus, then the client and onion host.
func (n *Network) launch(ctx context.Context) error {
	now := time.Now()
	tc := &torrcConfig{
		files:       n.files,
		authorities: n.auths,
		exits:       n.exits,
		relays:      n.relays,
		startOffset: holdOffset(now),
	}
	if err := os.WriteFile(n.files.bwfile, []byte(bandwidthFile(n.relays, now)), 0o600); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	for _, nd := range n.nodes {
		if err := os.WriteFile(nd.torrcPath(), []byte(torrc(nd, tc)), 0o600); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
	}

	t0 := time.Now()
	for _, nd := range n.auths {
		if err := n.startNode(nd); err != nil {
			return err
		}
	}
	// Relays retry uploads anyway, but an authority that is already
	// listening takes their first upload: about 0.4 s to wait.
	for _, nd := range n.auths {
		if err := n.poll(ctx, pollFast, func(ctx context.Context) (bool, error) {
			return dialable(ctx, nd.dirAddr()), nil
		}); err != nil {
			return n.fail("authority DirPort", nd, err)
		}
	}
	for _, nd := range append(append([]*node{}, n.middles...), n.exits...) {
		if err := n.startNode(nd); err != nil {
			return err
		}
	}
	authCtls := make([]*Control, len(n.auths))
	for i, nd := range n.auths {
		c, err := n.dialControl(ctx, nd)
		if err != nil {
			return n.fail("authority control", nd, err)
		}
		authCtls[i] = c
	}

	if err := n.waitDescriptors(ctx, authCtls); err != nil {
		if ctx.Err() != nil || errors.Is(err, errProcessExited) {
			return n.fail("relay descriptors", n.auths[0], err)
		}
		n.log.Warn("testnet descriptors incomplete, waiting for the scheduled vote", "err", err)
	} else if err := n.triggerVote(ctx, authCtls); err != nil {
		return n.fail("trigger vote", n.auths[0], err)
	}

	for _, nd := range n.auths {
		if err := n.poll(ctx, pollDir, func(ctx context.Context) (bool, error) {
			return n.consensusComplete(ctx, nd)
		}); err != nil {
			return n.fail("consensus", nd, err)
		}
	}
	n.ConsensusTime = time.Since(t0)
	n.log.Info("testnet consensus complete", "after", n.ConsensusTime)

	if err := n.startNode(n.client); err != nil {
		return err
	}
	var hsEvents <-chan torctl.Event
	if n.onion != nil {
		if err := n.startNode(n.onion); err != nil {
			return err
		}
		var err error
		if hsEvents, err = n.addOnion(ctx); err != nil {
			return n.fail("onion service", n.onion, err)
		}
	}

	ctl, err := n.dialControl(ctx, n.client)
	if err != nil {
		return n.fail("client control", n.client, err)
	}
	n.ctl = ctl
	if err := n.poll(ctx, pollFast, func(ctx context.Context) (bool, error) {
		p, err := bootstrapProgress(ctx, ctl)
		return p == 100, err
	}); err != nil {
		return n.fail("client bootstrap", n.client, err)
	}
	n.BootstrapTime = time.Since(t0)

	if n.onion != nil {
		if err := n.waitUploaded(ctx, hsEvents); err != nil {
			return n.fail("onion descriptor upload", n.onion, err)
		}
		n.OnionTime = time.Since(t0)
	}
	// The setup connections are not needed any more; the onion service
	// was added detached, so it outlives its connection.
	for _, c := range n.setupCtls {
		c.Close()
	}
	n.setupCtls = nil
	return nil
}

// startNode starts nd's tor and arranges for died to be closed if it
// exits.
func (n *Network) startNode(nd *node) error {
	p, err := startTor(n.cfg.TorPath, n.files.empty, nd)
	if err != nil {
		return &StartError{Stage: "start tor", Node: nd.name, Err: err}
	}
	nd.proc = p
	n.log.Debug("testnet tor started", "node", nd.name, "pid", p.pid(), "addr", nd.addr)
	go func() {
		<-p.done
		n.diedOnce.Do(func() {
			n.diedNode = nd.name
			close(n.died)
		})
	}()
	return nil
}

// poll calls f every period until it reports done, fails, ctx ends or a
// tor exits.
func (n *Network) poll(ctx context.Context, every time.Duration, f func(context.Context) (bool, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		done, err := f(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.died:
			return fmt.Errorf("%w: %s", errProcessExited, n.diedNode)
		case <-t.C:
		}
	}
}

// fail builds a StartError with the log tail of nd, or of the tor that
// exited if that is the cause.
func (n *Network) fail(stage string, nd *node, err error) error {
	if errors.Is(err, errProcessExited) {
		for _, x := range n.nodes {
			if x.name == n.diedNode {
				nd = x
			}
		}
	}
	tail := logTail(nd.logPath(), 15)
	if len(tail) == 0 {
		// Errors before tor reads its Log line (e.g. a bad torrc) go to
		// stdout.
		tail = logTail(filepath.Join(nd.dir, "stdout.log"), 15)
	}
	return &StartError{Stage: stage, Node: nd.name, Err: err, LogTail: tail}
}

func dialable(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// dialControl connects to nd's control port once it is up (the cookie is
// written when the port opens) and remembers the connection for cleanup.
func (n *Network) dialControl(ctx context.Context, nd *node) (*Control, error) {
	var c *Control
	err := n.poll(ctx, pollFast, func(ctx context.Context) (bool, error) {
		var err error
		c, err = DialControl(ctx, nd.controlAddr())
		return err == nil, nil
	})
	if err != nil {
		return nil, err
	}
	if nd != n.client {
		n.setupCtls = append(n.setupCtls, c)
	}
	return c, nil
}

// triggerVote moves every authority's voting schedule so that the next
// boundary is VoteDelay+DistDelay+1 s away: tor recalculates the schedule
// when TestingV3AuthVotingStartOffset changes and votes within about 1 s.
func (n *Network) triggerVote(ctx context.Context, ctls []*Control) error {
	return n.setVotingOffset(ctx, ctls, triggerOffset(time.Now()))
}

// setVotingOffset sets TestingV3AuthVotingStartOffset on every authority
// at once, so that they all vote for the same boundary.
func (n *Network) setVotingOffset(ctx context.Context, ctls []*Control, offset int) error {
	off := strconv.Itoa(offset)
	errs := make([]error, len(ctls))
	var wg sync.WaitGroup
	for i, c := range ctls {
		wg.Go(func() { errs[i] = c.SetConf(ctx, "TestingV3AuthVotingStartOffset", off) })
	}
	wg.Wait()
	n.log.Debug("testnet voting offset set", "offset", off)
	return errors.Join(errs...)
}

// addOnion subscribes to HS_DESC on the onion host and then adds the
// service, so no upload event can be missed.
func (n *Network) addOnion(ctx context.Context) (<-chan torctl.Event, error) {
	c, err := n.dialControl(ctx, n.onion)
	if err != nil {
		return nil, err
	}
	if err := c.SetEvents(ctx, "HS_DESC"); err != nil {
		return nil, err
	}
	rep, err := c.Request(ctx, fmt.Sprintf("ADD_ONION NEW:ED25519-V3 Flags=Detach,DiscardPK Port=80,%s", n.WebAddr))
	if err != nil {
		return nil, err
	}
	for _, l := range rep.Lines {
		if id, ok := strings.CutPrefix(l.Text, "ServiceID="); ok {
			n.OnionAddr = id + ".onion"
		}
	}
	if n.OnionAddr == "" {
		return nil, errors.New("ADD_ONION reply has no ServiceID")
	}
	return c.Events(), nil
}

// waitUploaded waits until every HSDir (the authorities) has acknowledged
// an upload and no upload is still in flight: the service uploads two
// descriptors (current and next time period) to each HSDir. A client that
// asks an HSDir before the upload caches the failure and backs off, so
// Start must not return earlier.
func (n *Network) waitUploaded(ctx context.Context, events <-chan torctl.Event) error {
	id := strings.TrimSuffix(n.OnionAddr, ".onion")
	uploaded := map[string]bool{} // HSDir fingerprint -> acknowledged
	for _, a := range n.auths {
		uploaded[a.fpr] = false
	}
	pending := map[string]int{} // HSDir fingerprint -> uploads in flight
	done := func() bool {
		for _, ok := range uploaded {
			if !ok {
				return false
			}
		}
		for _, p := range pending {
			if p > 0 {
				return false
			}
		}
		return true
	}
	for !done() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("uploads acknowledged %v, in flight %v: %w", uploaded, pending, ctx.Err())
		case <-n.died:
			return fmt.Errorf("%w: %s", errProcessExited, n.diedNode)
		case ev := <-events:
			// HS_DESC <action> <address> <auth type> <$FPR~nick> ...
			f := strings.Fields(ev.Raw)
			if ev.Code != "HS_DESC" || len(f) < 4 || f[1] != id {
				continue
			}
			fpr, _, _ := strings.Cut(strings.TrimPrefix(f[3], "$"), "~")
			fpr = strings.ToUpper(fpr)
			n.log.Debug("testnet hs_desc event", "action", f[0], "hsdir", f[3])
			switch f[0] {
			case "UPLOAD":
				pending[fpr]++
			case "UPLOADED":
				pending[fpr]--
				if _, ok := uploaded[fpr]; ok {
					uploaded[fpr] = true
				}
			case "FAILED":
				pending[fpr]--
			}
		}
	}
	return nil
}

// bootstrapProgress returns PROGRESS= of GETINFO status/bootstrap-phase.
func bootstrapProgress(ctx context.Context, c *Control) (int, error) {
	info, err := c.GetInfo(ctx, "status/bootstrap-phase")
	if err != nil {
		return 0, err
	}
	f, err := torctl.SplitFields(info["status/bootstrap-phase"])
	if err != nil {
		return 0, err
	}
	for _, kv := range f {
		if v, ok := strings.CutPrefix(kv, "PROGRESS="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no PROGRESS in %q", info["status/bootstrap-phase"])
}

// ClientTorrc returns the torrc lines a second client tor (for example the
// one torgate starts in managed mode) needs to join this network. The
// caller adds DataDirectory, SocksPort, ControlPort and, ideally,
// __OwningControllerProcess. The lines are:
//
//   - TestingTorNetwork 1 and the three DirAuthority lines;
//   - ConfluxEnabled 0, so the same SOCKS credentials reuse one circuit;
//   - GeoIPFile/GeoIPv6File naming an empty file in Config.Dir (the real
//     files cost seconds and ~90 MB);
//   - PathsNeededToBuildCircuits 0.67, as for the harness's own client;
//   - OutboundBindAddress on a spare address of the block, so that tor too
//     cannot connect anywhere but loopback.
func (n *Network) ClientTorrc() []string {
	lines := []string{"TestingTorNetwork 1"}
	lines = append(lines, dirAuthorityLines(n.auths)...)
	return append(lines,
		"ConfluxEnabled 0",
		"GeoIPFile "+n.files.empty,
		"GeoIPv6File "+n.files.empty,
		"PathsNeededToBuildCircuits 0.67",
		"OutboundBindAddress "+blockAddr(n.Block, hostExtra).String(),
	)
}

// Control returns a new authenticated control connection to the client
// tor. The caller closes it.
func (n *Network) Control(ctx context.Context) (*Control, error) {
	return DialControl(ctx, n.ControlAddr)
}

// control returns the shared client connection, redialling it if a
// cancelled command closed it.
func (n *Network) control(ctx context.Context) (*Control, error) {
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	if n.ctl != nil && n.ctl.Err() == nil {
		return n.ctl, nil
	}
	c, err := n.Control(ctx)
	if err != nil {
		return nil, err
	}
	n.ctl = c
	return c, nil
}

// Streams returns the client tor's current streams (GETINFO stream-status).
func (n *Network) Streams(ctx context.Context) ([]Stream, error) {
	c, err := n.control(ctx)
	if err != nil {
		return nil, err
	}
	return c.Streams(ctx)
}

// Circuits returns the client tor's current circuits (GETINFO
// circuit-status).
func (n *Network) Circuits(ctx context.Context) ([]Circuit, error) {
	c, err := n.control(ctx)
	if err != nil {
		return nil, err
	}
	return c.Circuits(ctx)
}

// StreamCircuits maps the ID of every open stream of the client tor to the
// ID of the circuit it is attached to ("0" if none yet).
func (n *Network) StreamCircuits(ctx context.Context) (map[string]string, error) {
	streams, err := n.Streams(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(streams))
	for _, s := range streams {
		m[s.ID] = s.CircuitID
	}
	return m, nil
}

// NewNym sends SIGNAL NEWNYM to the client tor: new streams get new
// circuits, and cached onion-service failures are forgotten.
func (n *Network) NewNym(ctx context.Context) error {
	c, err := n.control(ctx)
	if err != nil {
		return err
	}
	return c.Signal(ctx, "NEWNYM")
}

// Logs returns the last lines of every tor's notice log, one block per
// node, for a failing test to print.
func (n *Network) Logs(lines int) string {
	var b strings.Builder
	for _, nd := range n.nodes {
		fmt.Fprintf(&b, "--- %s (%s) %s\n", nd.name, nd.role, nd.logPath())
		for _, l := range logTail(nd.logPath(), lines) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// PIDs returns the process IDs of every tor started so far, running or
// not.
func (n *Network) PIDs() []int {
	var pids []int
	for _, nd := range n.nodes {
		if nd.proc != nil {
			pids = append(pids, nd.proc.pid())
		}
	}
	return pids
}

// RSS returns the total resident memory of the running tor processes, in
// bytes, from /proc.
func (n *Network) RSS() (int64, error) {
	var total int64
	for _, nd := range n.nodes {
		if nd.proc == nil || nd.proc.exited() {
			continue
		}
		b, err := rssBytes(nd.proc.pid())
		if err != nil {
			return 0, err
		}
		total += b
	}
	return total, nil
}

// Close stops every tor (SIGTERM, then SIGKILL after a grace period),
// waits for each, and stops the DNS and web servers. It is idempotent and
// safe to call on a partly started network.
func (n *Network) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Network) close() error {
	n.ctlMu.Lock()
	if n.ctl != nil {
		n.ctl.Close()
	}
	n.ctlMu.Unlock()
	for _, c := range n.setupCtls {
		c.Close()
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, nd := range n.nodes {
		if nd.proc == nil {
			continue
		}
		wg.Go(func() {
			if err := nd.proc.stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n.dirTr.CloseIdleConnections()
	if n.web != nil {
		if err := n.web.Close(); err != nil {
			errs = append(errs, fmt.Errorf("web server: %w", err))
		}
		<-n.webDone
	}
	if n.dns != nil {
		n.dns.close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("testnet close: %w", errors.Join(errs...))
	}
	n.log.Debug("testnet closed")
	return nil
}
