package dns

// Query flow (Handle):
//
//	query bytes ─ Parser.Start ──(short, or QR set)──────────────▶ ErrDrop
//	     │
//	     ├─ questions: exactly one, parsable ─(no)─▶ FORMERR
//	     ├─ opcode QUERY ──────────────────────(no)─▶ NOTIMP
//	     ├─ rest of message + EDNS(0) OPT ─────(bad)▶ FORMERR / BADVERS
//	     ├─ Ready() ───────────────────────────(no)─▶ SERVFAIL
//	     └─ by class and type:
//	          A, AAAA   IP literal → itself | NXDOMAIN (Policy)
//	                    name policy → localhost | NXDOMAIN | automap (src's share) | Resolver
//	          PTR       reverse name → src's automap entries | localhost | ResolvePTR
//	          HTTPS/SVCB name policy → NXDOMAIN | empty NOERROR
//	          others    NOTIMP
//	     then pack: no compression (it allocates); over the UDP limit,
//	     repack compressed; still over, header + question with TC.
//
// Everything up to pack works on the caller's query bytes and fixed-size
// values on the stack. The only allocations on the automap path are a new
// entry's name string and map growth; resolve mode allocates the name it
// passes to the Resolver and whatever the Resolver allocates.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/torgate/torgate/internal/dest"
	"golang.org/x/net/dns/dnsmessage"
)

// UDP payload limits (RFC 1035 §4.2.1, RFC 6891 §6.2.5). maxUDP is what we
// accept and advertise: 1232 bytes fit any IPv6 path without fragmentation
// (DNS Flag Day 2020).
const (
	minUDP = 512
	maxUDP = 1232
	maxTCP = 65535
)

// rcodeBadVers is the extended RCODE BADVERS (RFC 6891 §9): the low four
// bits go in the header, the rest in the OPT record.
const rcodeBadVers dnsmessage.RCode = 16

// Server answers DNS queries for the workstations: automapped virtual
// addresses, or resolution through Tor. It is safe for concurrent use.
type Server struct {
	*Map // the automap table: Lookup, Acquire, Save and Len come from it

	mode           Mode
	ttl            uint32 // seconds
	resolver       Resolver
	resolveTimeout time.Duration
	resolveSem     chan struct{} // one token per Resolver call in flight
	ready          func(netip.Addr) bool
	log            *slog.Logger
	unsafeLog      bool
	now            func() time.Time
	policy         *dest.Policy

	stats counters
	serve serving // ServeDatagram and ServeTCP (serve.go)

	exhaustedLog rateLimit
	resolveLog   rateLimit

	closed atomic.Bool
}

// New checks cfg, fills in defaults and returns a Server answering from
// cfg.Map, or from a Map of its own built from cfg (NewMap: the state
// and epoch files are read and written there, and a bad state directory
// is an error). Configuration errors are *ConfigError.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := cfg.Map
	if m == nil {
		if m, err = newMap(cfg); err != nil {
			return nil, err
		}
	}
	s := &Server{
		Map:            m,
		mode:           cfg.Mode,
		ttl:            uint32(cfg.TTL / time.Second),
		resolver:       cfg.Resolver,
		resolveTimeout: cfg.ResolveTimeout,
		resolveSem:     make(chan struct{}, cfg.MaxResolves),
		ready:          cfg.Ready,
		log:            cfg.Logger,
		unsafeLog:      cfg.LogDestinations,
		now:            cfg.Now,
		policy:         cfg.Policy,
	}
	if cfg.Proven == nil {
		cfg.Proven = m.proven // the pools' reserve follows the table's evidence
	}
	if err := s.serve.init(&cfg); err != nil {
		return nil, err
	}
	s.exhaustedLog.every = time.Minute
	s.resolveLog.every = time.Minute
	s.log.Info("dns server ready", slog.String("mode", s.mode.String()), slog.Duration("ttl", cfg.TTL))
	return s, nil
}

// Close ends the serving side: answers in flight from ServeDatagram and
// ServeTCP are cancelled and waited for (at most closeWait), later
// queries there are dropped and connections rejected. Then it saves the
// table to the state file, if one is configured (Map.Close). Handle,
// Lookup and Acquire keep working, so the order of shutdown does not
// matter. Only the first call does anything.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if !s.serve.close() {
		s.log.Warn("dns answers still in flight at close", slog.Duration("waited", closeWait))
	}
	return s.Map.Close()
}

// answerKind is the answer record a reply carries, if any.
type answerKind uint8

const (
	ansNone answerKind = iota
	ansA
	ansAAAA
	ansPTR
)

// reply is everything Handle decided, ready to pack.
type reply struct {
	hdr    dnsmessage.Header
	rcode  dnsmessage.RCode // may be extended (BADVERS)
	q      dnsmessage.Question
	hasQ   bool
	kind   Kind
	result Result

	ans  answerKind
	a4   [4]byte
	a16  [16]byte
	ptr  dnsmessage.Name
	edns bool   // query had an OPT: answer with one
	do   bool   // DNSSEC OK bit, copied back (RFC 3225 §3)
	size int    // UDP payload limit for the answer
	ttl  uint32 // of the answer record
}

// set records the final rcode and its result class.
func (r *reply) set(rc dnsmessage.RCode, res Result) {
	r.rcode, r.result = rc, res
}

// Handle answers one DNS query from the workstation address src.
//
// udp selects UDP size rules: the answer fits in 512 bytes, or in the
// EDNS(0) payload size the query offers (clamped to 512..1232), else it
// carries only the question and the TC bit so the client retries over TCP.
// With udp false (TCP) the limit is 65535 and TC is never set; the caller
// adds the two-byte length prefix.
//
// The response is appended to resp (which may be nil) and the extended
// slice is returned, as append does: pass buf[:0] to reuse buf, or a slice
// holding a TCP length prefix to build behind it. query is only read, and
// not retained.
//
// The error is nil whenever there is a response, including FORMERR,
// SERVFAIL and the like. It is ErrDrop, with a nil response, for input that
// gets no answer at all (see ErrDrop). Handle never panics, whatever the
// input. In resolve mode it blocks up to Config.ResolveTimeout or until ctx
// ends.
func (s *Server) Handle(ctx context.Context, src netip.Addr, query []byte, udp bool, resp []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		s.stats.count(KindNone, ResultDropped)
		return nil, ErrDrop
	}
	r := reply{
		hdr: dnsmessage.Header{
			ID:                 h.ID,
			Response:           true,
			OpCode:             h.OpCode & 0xf,
			RecursionDesired:   h.RecursionDesired,
			RecursionAvailable: true,
			CheckingDisabled:   h.CheckingDisabled,
		},
		size: minUDP,
		ttl:  s.ttl,
	}
	s.decide(ctx, src, query, &p, &h, &r)
	limit := maxTCP
	if udp {
		limit = r.size
	}
	out, err := s.build(resp, &r, limit)
	if err != nil {
		// Unreachable: every name packed came through the parser or
		// validName. Count it, and answer nothing rather than garbage.
		s.stats.count(r.kind, ResultDropped)
		return nil, ErrDrop
	}
	s.stats.count(r.kind, r.result)
	return out, nil
}

// decide parses the rest of the query and fills in r.
func (s *Server) decide(ctx context.Context, src netip.Addr, query []byte, p *dnsmessage.Parser, h *dnsmessage.Header, r *reply) {
	// The Parser does not expose the section counts; Start has checked
	// that the 12-byte header is there. Anything but exactly one question
	// is malformed, and reading the count saves parsing (and the error
	// allocations of) a second question.
	if qdcount := uint16(query[4])<<8 | uint16(query[5]); qdcount == 1 {
		q, err := p.Question()
		r.q, r.hasQ = q, err == nil
	}
	if h.OpCode != 0 {
		// NOTIFY, UPDATE, IQUERY, STATUS, DSO...: nothing to do for
		// any of them here.
		r.set(dnsmessage.RCodeNotImplemented, ResultNotImp)
		return
	}
	if !r.hasQ {
		r.set(dnsmessage.RCodeFormatError, ResultFormErr)
		return
	}
	r.kind = kindOf(r.q.Type)
	if !s.parseEDNS(p, r) {
		return
	}
	if s.ready != nil && !s.ready(src) {
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	if r.q.Class != dnsmessage.ClassINET {
		r.set(dnsmessage.RCodeNotImplemented, ResultNotImp)
		return
	}
	switch r.q.Type {
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		s.address(ctx, src, r)
	case dnsmessage.TypePTR:
		s.pointer(ctx, src, r)
	case dnsmessage.TypeHTTPS, dnsmessage.TypeSVCB:
		// No service bindings to offer; an empty answer makes browsers
		// fall back to A/AAAA at once. Names that don't exist for A
		// don't exist for HTTPS either.
		var kb [255]byte
		key, ok := normalize(&r.q.Name, &kb)
		if !ok || classify(key) == nameBlocked {
			r.set(dnsmessage.RCodeNameError, ResultNXDomain)
			return
		}
		r.set(dnsmessage.RCodeSuccess, ResultNoData)
	default:
		// MX, TXT, NS, SOA, SRV, ANY, ...: a workstation behind Tor can
		// only open TCP connections to names, so these would only leak.
		r.set(dnsmessage.RCodeNotImplemented, ResultNotImp)
	}
}

// parseEDNS skips the rest of the question, answer and authority sections
// and reads the OPT record from the additional section, if any (RFC 6891).
// It returns false after setting the response code if the query is
// malformed or asks for an EDNS version other than 0.
func (s *Server) parseEDNS(p *dnsmessage.Parser, r *reply) bool {
	if p.SkipAllQuestions() != nil || p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		r.set(dnsmessage.RCodeFormatError, ResultFormErr)
		return false
	}
	var version uint32
	for {
		h, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil || p.SkipAdditional() != nil {
			r.set(dnsmessage.RCodeFormatError, ResultFormErr)
			r.edns = false // RFC 6891 §7: no OPT in a FORMERR for a bad OPT
			return false
		}
		if h.Type != dnsmessage.TypeOPT {
			continue
		}
		if r.edns || h.Name.Length != 1 || h.Name.Data[0] != '.' {
			// RFC 6891 §6.1.1: at most one OPT, owned by the root.
			r.set(dnsmessage.RCodeFormatError, ResultFormErr)
			r.edns = false
			return false
		}
		r.edns = true
		r.do = h.DNSSECAllowed()
		version = h.TTL >> 16 & 0xff
		r.size = min(max(int(h.Class), minUDP), maxUDP)
	}
	if r.edns && version != 0 {
		r.set(rcodeBadVers, ResultBadVers)
		return false
	}
	return true
}

// address answers A and AAAA.
func (s *Server) address(ctx context.Context, src netip.Addr, r *reply) {
	if s.literal(r) {
		return
	}
	var kb [255]byte
	key, ok := normalize(&r.q.Name, &kb)
	if !ok {
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return
	}
	switch classify(key) {
	case nameBlocked:
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
	case nameLocalhost:
		// RFC 6761 §6.3: answer loopback, never ask anyone.
		if r.q.Type == dnsmessage.TypeA {
			s.answerAddr(r, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
		} else {
			s.answerAddr(r, netip.IPv6Loopback())
		}
	case nameOnion:
		s.automap(src, key, r)
	default:
		if s.mode == ModeResolve {
			s.resolve(ctx, src, key, r)
		} else {
			s.automap(src, key, r)
		}
	}
}

// literal answers a question whose name is an IP address literal, in any
// spelling a resolver library or Tor might read as an address (see
// dest.ParseLiteral), and reports whether it did. Such a name is never
// automapped or resolved: a virtual address for "127.0.0.1" would leave
// later as CONNECT "127.0.0.1", an address by another road. An allowed
// literal is its own answer (A for IPv4, AAAA for IPv6, NODATA for the
// other family); a forbidden one is NXDOMAIN, counted by reason. NXDOMAIN
// rather than REFUSED: stub resolvers retry REFUSED on the next server,
// and "no such name" is what the workstation should conclude.
func (s *Server) literal(r *reply) bool {
	n := &r.q.Name
	l := int(n.Length)
	if l > len(n.Data) || l == 0 {
		return false
	}
	// Cheap pre-check, so that most names never reach the parser (and
	// its string conversion): an IPv4 literal starts with a digit, an
	// IPv6 one has a colon.
	if c := n.Data[0]; !(c >= '0' && c <= '9') && bytes.IndexByte(n.Data[:l], ':') < 0 {
		return false
	}
	ip, ok := dest.ParseLiteral(string(n.Data[:l]))
	if !ok {
		return false
	}
	why := s.policy.Forbidden(ip)
	if why == dest.ReasonAllowed && s.IsVirtual(ip) {
		why = dest.ReasonOperator // a pool outside the built-in ranges
	}
	if why != dest.ReasonAllowed {
		s.stats.forbidden[why].Add(1)
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return true
	}
	s.answerAddr(r, ip.Unmap())
	return true
}

// automap answers A or AAAA for key from src's share of the table.
func (s *Server) automap(src netip.Addr, key []byte, r *reply) {
	src = srcKey(src)
	// Asked here, outside the table lock: this is the common call.
	proven := s.proven == nil || s.proven(src)
	off, why := s.tab.assign(src, proven, key)
	if why != refusedNone {
		// reason pinned: every entry that could be recycled is pinned by
		// a flow; epoch_file: the epoch file cannot be written;
		// unproven: an unproven source, its share full, every unproven
		// entry pinned.
		if s.exhaustedLog.allow(s.now()) {
			s.log.Warn("dns automap entry refused", slog.String("reason", why.String()),
				slog.Int("max_entries", s.tab.max), slog.Int("max_entries_per_source", s.tab.perSrc),
				slog.Int("max_unproven_entries", s.tab.unprovenCap))
		}
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	if r.q.Type == dnsmessage.TypeA {
		r.ans, r.a4 = ansA, s.addr4(off)
	} else {
		r.ans, r.a16 = ansAAAA, s.addr6(off)
	}
	r.set(dnsmessage.RCodeSuccess, ResultAnswered)
}

// answerAddr answers with ip if its family matches the question, else
// with an empty NOERROR.
func (s *Server) answerAddr(r *reply, ip netip.Addr) {
	switch {
	case r.q.Type == dnsmessage.TypeA && ip.Is4():
		r.ans, r.a4 = ansA, ip.As4()
	case r.q.Type == dnsmessage.TypeAAAA && ip.Is6():
		r.ans, r.a16 = ansAAAA, ip.As16()
	default:
		r.ans = ansNone
		r.set(dnsmessage.RCodeSuccess, ResultNoData)
		return
	}
	r.set(dnsmessage.RCodeSuccess, ResultAnswered)
}

// resolve answers A or AAAA for key through the Resolver.
func (s *Server) resolve(ctx context.Context, src netip.Addr, key []byte, r *reply) {
	if !s.acquireResolve() {
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	defer s.releaseResolve()
	ctx, cancel := context.WithTimeout(ctx, s.resolveTimeout)
	defer cancel()
	ip, err := s.resolver.Resolve(ctx, src, string(key))
	if err != nil {
		s.resolveFailed(ctx, err, key, r)
		return
	}
	ip = ip.WithZone("").Unmap()
	why := s.policy.Forbidden(ip)
	if why == dest.ReasonAllowed && s.IsVirtual(ip) {
		why = dest.ReasonOperator
	}
	if why != dest.ReasonAllowed {
		// An exit must not point a name at our own virtual addresses
		// (that would hand the flow to another name's mapping), at the
		// workstation's or the gateway's networks, or at anything else
		// a flow may not reach (DNS rebinding). Tor rejects most of
		// these already (ClientDNSRejectInternalAddresses); this is the
		// backstop, by the same rules as the flows.
		s.stats.forbidden[why].Add(1)
		s.stats.resolveErrors.Add(1)
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	s.answerAddr(r, ip)
}

// pointer answers PTR.
func (s *Server) pointer(ctx context.Context, src netip.Addr, r *reply) {
	var kb [255]byte
	key, ok := normalize(&r.q.Name, &kb)
	if !ok {
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return
	}
	ip, ok := parseReverse(key)
	if !ok {
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return
	}
	ip = ip.Unmap()
	if off, virtual, mappable := s.offset(ip); virtual {
		// In both modes: the pools are ours, and no exit knows them.
		name, ok := "", false
		if mappable {
			name, ok = s.tab.lookup(srcKey(src), off)
		}
		if !ok || !setName(&r.ptr, name) {
			r.set(dnsmessage.RCodeNameError, ResultNXDomain)
			return
		}
		r.ans = ansPTR
		r.set(dnsmessage.RCodeSuccess, ResultAnswered)
		return
	}
	if ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || ip == netip.IPv6Loopback() {
		setName(&r.ptr, "localhost")
		r.ans = ansPTR
		r.set(dnsmessage.RCodeSuccess, ResultAnswered)
		return
	}
	if s.mode != ModeResolve || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		// Automap mode never sends DNS through Tor. Private, link-local
		// and other non-global addresses are the workstation's own
		// business; asking an exit about them only leaks that.
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return
	}
	if !s.acquireResolve() {
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	defer s.releaseResolve()
	ctx, cancel := context.WithTimeout(ctx, s.resolveTimeout)
	defer cancel()
	name, err := s.resolver.ResolvePTR(ctx, src, ip)
	if err != nil {
		s.resolveFailed(ctx, err, key, r)
		return
	}
	if n := len(name); n > 1 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if !validPTR(name) || !setName(&r.ptr, name) {
		s.stats.resolveErrors.Add(1)
		r.set(dnsmessage.RCodeServerFailure, ResultServFail)
		return
	}
	r.ans = ansPTR
	r.set(dnsmessage.RCodeSuccess, ResultAnswered)
}

// validPTR reports whether a name from ResolvePTR is fit to put in an
// answer: a well-formed hostname of at most 253 characters, either case.
func validPTR(name string) bool {
	if len(name) == 0 || len(name) > maxNameLen {
		return false
	}
	var buf [maxNameLen]byte
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return validName(string(buf[:len(name)]))
}

// acquireResolve takes a Resolver slot without waiting.
func (s *Server) acquireResolve() bool {
	select {
	case s.resolveSem <- struct{}{}:
		return true
	default:
		s.stats.resolveBusy.Add(1)
		return false
	}
}

func (s *Server) releaseResolve() { <-s.resolveSem }

// resolveFailed maps a Resolver error to NXDOMAIN or SERVFAIL.
func (s *Server) resolveFailed(ctx context.Context, err error, key []byte, r *reply) {
	if nf, ok := errors.AsType[NotFoundError](err); ok && nf.NotFound() {
		r.set(dnsmessage.RCodeNameError, ResultNXDomain)
		return
	}
	s.stats.resolveErrors.Add(1)
	r.set(dnsmessage.RCodeServerFailure, ResultServFail)
	if !s.log.Enabled(ctx, slog.LevelDebug) || !s.resolveLog.allow(s.now()) {
		return
	}
	kind := "error"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		kind = "timeout"
	case errors.Is(err, context.Canceled):
		kind = "canceled"
	}
	if s.unsafeLog {
		s.log.Debug("dns resolve failed", slog.String("kind", kind),
			slog.String("name", string(key)), slog.String("error", err.Error()))
	} else {
		s.log.Debug("dns resolve failed", slog.String("kind", kind))
	}
}

// build packs r into resp. It tries without compression (which costs a map
// and a string per name), then with it if the answer is over limit, then
// without the answer and with TC set.
func (s *Server) build(resp []byte, r *reply, limit int) ([]byte, error) {
	out, err := pack(resp, r, false, false)
	if err != nil || len(out)-len(resp) <= limit {
		return out, err
	}
	out, err = pack(resp, r, true, false)
	if err != nil || len(out)-len(resp) <= limit {
		return out, err
	}
	s.stats.truncated.Add(1)
	return pack(resp, r, true, true)
}

// pack builds the response message for r after resp.
func pack(resp []byte, r *reply, compress, truncate bool) ([]byte, error) {
	hdr := r.hdr
	hdr.RCode = r.rcode & 0xf
	hdr.Truncated = truncate
	b := dnsmessage.NewBuilder(resp, hdr)
	if compress {
		b.EnableCompression()
	}
	err := b.StartQuestions()
	if err == nil && r.hasQ {
		err = b.Question(r.q)
	}
	if err == nil {
		err = b.StartAnswers()
	}
	if err == nil && !truncate && r.ans != ansNone {
		rh := dnsmessage.ResourceHeader{Name: r.q.Name, Class: dnsmessage.ClassINET, TTL: r.ttl}
		switch r.ans {
		case ansA:
			rh.Type = dnsmessage.TypeA
			err = b.AResource(rh, dnsmessage.AResource{A: r.a4})
		case ansAAAA:
			rh.Type = dnsmessage.TypeAAAA
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: r.a16})
		case ansPTR:
			rh.Type = dnsmessage.TypePTR
			err = b.PTRResource(rh, dnsmessage.PTRResource{PTR: r.ptr})
		}
	}
	if err == nil && r.edns {
		err = b.StartAdditionals()
		if err == nil {
			var oh dnsmessage.ResourceHeader
			err = oh.SetEDNS0(maxUDP, r.rcode, r.do)
			if err == nil {
				err = b.OPTResource(oh, dnsmessage.OPTResource{})
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return b.Finish()
}
