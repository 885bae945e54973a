package testnet

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsTTL is the TTL of every answer, in seconds.
const dnsTTL = 60

// dnsConnTimeout bounds one TCP DNS connection; exits answer within 1 s or
// give up (consensus parameters of a testing network).
const dnsConnTimeout = 10 * time.Second

// dnsServer is the exits' resolver: it answers a fixed set of names with
// loopback addresses and NXDOMAIN for everything else, over UDP and TCP.
// It never forwards a query anywhere.
type dnsServer struct {
	log     *slog.Logger
	records map[string]netip.Addr // lower-case FQDN ("web.test.lan.") -> address
	udp     net.PacketConn
	tcp     net.Listener

	wg    sync.WaitGroup
	mu    sync.Mutex            // guards conns
	conns map[net.Conn]struct{} // open TCP connections, closed by close
}

// newDNSServer builds a server for records (names in any case, with or
// without the trailing dot) on already-bound listeners.
func newDNSServer(log *slog.Logger, records map[string]netip.Addr, udp net.PacketConn, tcp net.Listener) *dnsServer {
	s := &dnsServer{
		log:     log,
		records: make(map[string]netip.Addr, len(records)),
		udp:     udp,
		tcp:     tcp,
		conns:   map[net.Conn]struct{}{},
	}
	for name, addr := range records {
		s.records[canonicalName(name)] = addr
	}
	return s
}

func canonicalName(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

func (s *dnsServer) start() {
	s.wg.Go(s.udpLoop)
	s.wg.Go(s.acceptLoop)
}

func (s *dnsServer) close() {
	s.udp.Close()
	s.tcp.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *dnsServer) udpLoop() {
	buf := make([]byte, 4096)
	out := make([]byte, 0, 512)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("dns udp read failed", "err", err)
			}
			return
		}
		resp, ok := s.answer(buf[:n], out[:0])
		if !ok {
			continue
		}
		_, _ = s.udp.WriteTo(resp, from)
	}
}

func (s *dnsServer) acceptLoop() {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("dns tcp accept failed", "err", err)
			}
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() { s.serveTCP(c) })
	}
}

// serveTCP answers length-prefixed queries (RFC 1035 4.2.2) until the peer
// closes, misbehaves or idles.
func (s *dnsServer) serveTCP(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var lenBuf [2]byte
	msg := make([]byte, 0, 512)
	out := make([]byte, 2, 514)
	for {
		_ = c.SetDeadline(time.Now().Add(dnsConnTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > cap(msg) {
			msg = make([]byte, n)
		}
		msg = msg[:n]
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp, ok := s.answer(msg, out[:2])
		if !ok {
			return
		}
		binary.BigEndian.PutUint16(resp, uint16(len(resp)-2))
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// answer builds the response to query, appended to buf. It returns false
// when the query is not worth answering (unparsable header, or a
// response). The question is echoed unchanged: evdns randomises the case
// of names ("wEb.TeSt.lAn") and rejects answers whose case differs.
func (s *dnsServer) answer(query, buf []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil, false
	}
	rh := dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		OpCode:             h.OpCode,
		Authoritative:      true,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: true,
	}
	q, qerr := p.Question()
	switch {
	case qerr != nil:
		rh.RCode = dnsmessage.RCodeFormatError
	case h.OpCode != 0:
		rh.RCode = dnsmessage.RCodeNotImplemented
	}
	var addr netip.Addr
	if rh.RCode == dnsmessage.RCodeSuccess {
		var found bool
		addr, found = s.records[strings.ToLower(q.Name.String())]
		if !found {
			rh.RCode = dnsmessage.RCodeNameError
		}
	}

	b := dnsmessage.NewBuilder(buf, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if qerr == nil {
		if err := b.Question(q); err != nil {
			return nil, false
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, false
	}
	if rh.RCode == dnsmessage.RCodeSuccess && q.Class == dnsmessage.ClassINET {
		rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		// Any other type, or an address of the other family, gets an
		// empty NOERROR answer (NODATA): the name exists.
		switch {
		case q.Type == dnsmessage.TypeA && addr.Is4():
			err = b.AResource(rrh, dnsmessage.AResource{A: addr.As4()})
		case q.Type == dnsmessage.TypeAAAA && addr.Is6():
			err = b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: addr.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return resp, true
}
