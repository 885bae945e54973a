package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate/internal/flow"
)

// blockResolver answers every name but those starting with "hang", which
// it holds until the query's context ends.
type blockResolver struct{ held atomic.Int64 }

var exitAddr = netip.MustParseAddr("93.184.215.14")

func (b *blockResolver) Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error) {
	if strings.HasPrefix(name, "hang") {
		b.held.Add(1)
		defer b.held.Add(-1)
		<-ctx.Done()
		return netip.Addr{}, ctx.Err()
	}
	return exitAddr, nil
}

func (b *blockResolver) ResolvePTR(ctx context.Context, src netip.Addr, ip netip.Addr) (string, error) {
	return "", errors.New("no PTR")
}

// replies collects the answers ServeDatagram sends.
type replies chan []byte

func (r replies) SendUDP(from, to netip.AddrPort, answer []byte) {
	if from != dnsAddr || to != querier {
		panic("answer from " + from.String() + " to " + to.String())
	}
	r <- append([]byte(nil), answer...)
}

var (
	dnsAddr = netip.MustParseAddrPort("192.0.2.53:53")
	querier = netip.MustParseAddrPort("10.152.152.11:5353")
)

// reply is the Reply to a query sent from querier to dnsAddr.
func (r replies) reply() flow.Reply { return flow.NewReply(r, dnsAddr, querier) }

func (r replies) next(t *testing.T) *dnsmessage.Message {
	t.Helper()
	select {
	case b := <-r:
		var m dnsmessage.Message
		must(t, m.Unpack(b))
		return &m
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
		return nil
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestServeDatagram: a UDP query is answered through reply, counted as a
// message; an answer over maxAnswer goes out as the header with TC set.
func TestServeDatagram(t *testing.T) {
	s := newServer(t, Config{})
	r := make(replies, 1)
	q := buildQuery(t, "www.example.com.", dnsmessage.TypeA, queryOpts{id: 7})
	s.ServeDatagram(srcA, q, 1472, r.reply())
	clear(q) // the caller's buffer is its own again
	m := r.next(t)
	if m.Header.ID != 7 || !s.IsVirtual(answerAddr(t, m)) {
		t.Fatalf("answer %+v", m)
	}
	s.ServeDatagram(srcA, buildQuery(t, "www.example.com.", dnsmessage.TypeA, queryOpts{id: 8}), headerLen+1, r.reply())
	if m := r.next(t); !m.Header.Truncated || len(m.Questions) != 0 || len(m.Answers) != 0 {
		t.Fatalf("over maxAnswer: %+v, want the header with TC", m)
	}
	// No answer at all (ErrDrop): reply is not called.
	s.ServeDatagram(srcA, []byte{1, 2, 3}, 1472, r.reply())
	if st := s.Stats(); st.Messages != 3 {
		t.Fatalf("Messages = %d, want 3", st.Messages)
	}
	select {
	case b := <-r:
		t.Fatalf("an answer % x to a short query", b)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestServeDatagramShare: one workstation's queries that hang hold at most
// its share of the workers; the excess is dropped and counted as over its
// share; another workstation is still answered.
func TestServeDatagramShare(t *testing.T) {
	res := &blockResolver{}
	s := newServer(t, Config{Mode: ModeResolve, Resolver: res})
	r := make(replies, 100)
	for i := range 40 {
		s.ServeDatagram(srcA, buildQuery(t, "hang.example.", dnsmessage.TypeA, queryOpts{id: uint16(i)}), 1472, r.reply())
	}
	waitUntil(t, "32 queries in the resolver", func() bool { return res.held.Load() == DefaultWorkersPerSource })
	st := s.Stats()
	if got := st.Refused[TransportUDP][RefusedShare]; got != 40-DefaultWorkersPerSource {
		t.Fatalf("Refused[udp][share] = %d, want %d", got, 40-DefaultWorkersPerSource)
	}
	if held, total := s.serve.udp.Held(srcA); held != DefaultWorkersPerSource || total != DefaultWorkersPerSource {
		t.Fatalf("srcA holds %d of %d workers", held, total)
	}
	s.ServeDatagram(srcB, buildQuery(t, "ok.example.", dnsmessage.TypeA, queryOpts{id: 99}), 1472, r.reply())
	if m := r.next(t); m.Header.ID != 99 || answerAddr(t, m) != exitAddr {
		t.Fatalf("other workstation: %+v", m)
	}
}

// TestServeDatagramReserve: unproven workstations (a crowd of spoofed
// sources) take the bulk of the workers and are then refused as overload;
// a proven one still gets its share of the reserve.
func TestServeDatagramReserve(t *testing.T) {
	res := &blockResolver{}
	proven := netip.MustParseAddr("10.152.152.200")
	s := newServer(t, Config{Mode: ModeResolve, Resolver: res, Workers: 128, WorkersPerSource: 8,
		Proven: func(a netip.Addr) bool { return a == proven }})
	r := make(replies, 10)
	for i := range 200 {
		src := netip.AddrFrom4([4]byte{10, 152, 153, byte(i)})
		s.ServeDatagram(src, buildQuery(t, "hang.example.", dnsmessage.TypeA, queryOpts{id: uint16(i)}), 1472, r.reply())
	}
	bulk := 128 - 128/4
	waitUntil(t, "the bulk held", func() bool { return res.held.Load() == int64(bulk) })
	if got := s.Stats().Refused[TransportUDP][RefusedOverload]; got != uint64(200-bulk) {
		t.Fatalf("Refused[udp][overload] = %d, want %d", got, 200-bulk)
	}
	s.ServeDatagram(proven, buildQuery(t, "ok.example.", dnsmessage.TypeA, queryOpts{id: 1}), 1472, r.reply())
	if m := r.next(t); answerAddr(t, m) != exitAddr {
		t.Fatalf("proven workstation: %+v", m)
	}
}

// TestServeDatagramClose: Close cancels the answers in flight and waits
// for them; nothing is sent after, and later queries are dropped.
func TestServeDatagramClose(t *testing.T) {
	res := &blockResolver{}
	s, err := New(Config{Mode: ModeResolve, Resolver: res})
	must(t, err)
	r := make(replies, 20)
	reply := r.reply()
	for i := range 10 {
		s.ServeDatagram(srcA, buildQuery(t, "hang.example.", dnsmessage.TypeA, queryOpts{id: uint16(i)}), 1472, reply)
	}
	waitUntil(t, "10 queries in the resolver", func() bool { return res.held.Load() == 10 })
	start := time.Now()
	must(t, s.Close())
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if _, total := s.serve.udp.Held(srcA); total != 0 || res.held.Load() != 0 {
		t.Fatalf("after Close: %d workers held, %d resolves", total, res.held.Load())
	}
	s.ServeDatagram(srcA, buildQuery(t, "ok.example.", dnsmessage.TypeA, queryOpts{}), 1472, reply)
	time.Sleep(50 * time.Millisecond)
	if n := len(r); n != 0 {
		t.Fatalf("%d answers sent around Close", n)
	}
}

// fakeRequest is a flow.Request over a loopback TCP connection.
type fakeRequest struct {
	who      netip.Addr
	conn     net.Conn // the server's side, returned by Accept
	rejected atomic.Bool
}

var _ flow.Request = (*fakeRequest)(nil)

func (f *fakeRequest) Who() netip.Addr           { return f.who }
func (f *fakeRequest) Src() netip.AddrPort       { return netip.AddrPortFrom(f.who, 40000) }
func (f *fakeRequest) Dst() netip.AddrPort       { return netip.MustParseAddrPort("192.0.2.53:53") }
func (f *fakeRequest) Accept() (net.Conn, error) { return f.conn, nil }
func (f *fakeRequest) Reject()                   { f.rejected.Store(true); f.conn.Close() }

// tcpPair returns a request whose Accept gives the server's end of a
// loopback connection, and the client's end.
func tcpPair(t *testing.T, who netip.Addr) (*fakeRequest, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	sc, err := ln.Accept()
	must(t, err)
	t.Cleanup(func() { c.Close(); sc.Close() })
	return &fakeRequest{who: who, conn: sc}, c
}

func tcpQuery(t *testing.T, c net.Conn, q []byte) *dnsmessage.Message {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
	must(t, err)
	var l [2]byte
	_, err = io.ReadFull(c, l[:])
	must(t, err)
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err = io.ReadFull(c, b)
	must(t, err)
	var m dnsmessage.Message
	must(t, m.Unpack(b))
	return &m
}

// TestServeTCPShare: a workstation's TCP/53 connections take its share of
// TCPConns; one more is rejected (RST) and counted; another workstation
// still gets an answer over TCP. Close ends the connections held.
func TestServeTCPShare(t *testing.T) {
	s, err := New(Config{TCPConnsPerSource: 2})
	must(t, err)
	var clients []net.Conn
	done := make(chan struct{}, 4)
	for range 2 {
		req, c := tcpPair(t, srcA)
		clients = append(clients, c)
		go func() { s.ServeTCP(req); done <- struct{}{} }()
		m := tcpQuery(t, c, buildQuery(t, "held.example.", dnsmessage.TypeA, queryOpts{id: 3}))
		if m.Header.ID != 3 || !s.IsVirtual(answerAddr(t, m)) {
			t.Fatalf("TCP answer %+v", m)
		}
	}
	req, _ := tcpPair(t, srcA)
	s.ServeTCP(req)
	if !req.rejected.Load() {
		t.Fatal("a third connection over a share of 2 was not rejected")
	}
	if got := s.Stats().Refused[TransportTCP][RefusedShare]; got != 1 {
		t.Fatalf("Refused[tcp][share] = %d, want 1", got)
	}
	reqB, cB := tcpPair(t, srcB)
	go func() { s.ServeTCP(reqB); done <- struct{}{} }()
	if m := tcpQuery(t, cB, buildQuery(t, "other.example.", dnsmessage.TypeA, queryOpts{id: 4})); m.Header.ID != 4 {
		t.Fatalf("other workstation: %+v", m)
	}
	if st := s.Stats(); st.Messages != 3 {
		t.Fatalf("Messages = %d, want 3", st.Messages)
	}
	must(t, s.Close())
	for range 3 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeTCP still running after Close")
		}
	}
	if _, total := s.serve.tcp.Held(srcA); total != 0 {
		t.Fatalf("%d TCP/53 slots held after Close", total)
	}
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection open after Close")
		}
	}
	// After Close a connection is rejected, not served.
	req, _ = tcpPair(t, srcB)
	s.ServeTCP(req)
	if !req.rejected.Load() {
		t.Fatal("a connection after Close was not rejected")
	}
}

// TestServingConfig: the limits are checked like the rest of Config.
func TestServingConfig(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{name: "negative workers", cfg: Config{Workers: -1}, field: "Workers"},
		{name: "negative share", cfg: Config{WorkersPerSource: -1}, field: "WorkersPerSource"},
		{name: "share over pool", cfg: Config{Workers: 8, WorkersPerSource: 9}, field: "WorkersPerSource"},
		{name: "negative tcp", cfg: Config{TCPConns: -1}, field: "TCPConns"},
		{name: "tcp share over pool", cfg: Config{TCPConns: 4, TCPConnsPerSource: 5}, field: "TCPConnsPerSource"},
		{name: "negative timeout", cfg: Config{QueryTimeout: -time.Second}, field: "QueryTimeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			ce, ok := errors.AsType[*ConfigError](err)
			if !ok || ce.Field != c.field {
				t.Fatalf("New: %v, want a ConfigError for %s", err, c.field)
			}
		})
	}
	cfg, err := Config{Workers: 8, TCPConns: 4}.withDefaults()
	must(t, err)
	if cfg.WorkersPerSource != 8 || cfg.TCPConnsPerSource != 4 || cfg.QueryTimeout != DefaultQueryTimeout {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = Config{}.withDefaults()
	must(t, err)
	if cfg.Workers != DefaultWorkers || cfg.WorkersPerSource != DefaultWorkersPerSource ||
		cfg.TCPConns != DefaultTCPConns || cfg.TCPConnsPerSource != DefaultTCPConnsPerSource {
		t.Fatalf("defaults: %+v", cfg)
	}
}
