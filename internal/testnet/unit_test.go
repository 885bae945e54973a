package testnet

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate/internal/torctl"
)

// Hermetic tests: no tor needed.

func testNodes() (*torrcConfig, map[role]*node) {
	block := netip.MustParsePrefix("127.110.7.0/24")
	mk := func(name string, r role, host byte, fpr string) *node {
		return &node{name: name, role: r, addr: blockAddr(block, host), dir: "/d/" + name,
			fpr: strings.Repeat(fpr, 40), v3ident: strings.Repeat("F", 40)}
	}
	auths := []*node{
		mk("auth0", roleAuthority, hostAuth, "A"),
		mk("auth1", roleAuthority, hostAuth+1, "B"),
		mk("auth2", roleAuthority, hostAuth+2, "C"),
	}
	mid := mk("mid0", roleMiddle, hostMiddle, "D")
	exit := mk("exit0", roleExit, hostExit, "E")
	tc := &torrcConfig{
		files:       files{empty: "/d/empty", resolv: "/d/resolv.conf", bwfile: "/d/bwfile", ownerID: 4242},
		authorities: auths,
		exits:       []*node{exit},
		relays:      []*node{auths[0], auths[1], auths[2], mid, exit},
		startOffset: 7,
	}
	return tc, map[role]*node{
		roleAuthority: auths[0],
		roleMiddle:    mid,
		roleExit:      exit,
		roleClient:    mk("client0", roleClient, hostClient, "0"),
		roleOnion:     mk("hs0", roleOnion, hostOnion, "0"),
	}
}

func TestTorrc(t *testing.T) {
	tc, nodes := testNodes()
	common := []string{
		"TestingTorNetwork 1",
		"AssumeReachable 1",
		"PathsNeededToBuildCircuits 0.67",
		"GeoIPFile /d/empty",
		"GeoIPv6File /d/empty",
		"ShutdownWaitLength 0",
		"CookieAuthentication 1",
		"__OwningControllerProcess 4242",
		"DirAuthority auth0 orport=18001 no-v2 v3ident=" + strings.Repeat("F", 40) + " 127.110.7.11:18002 " + strings.Repeat("A", 40),
		"DirAuthority auth2 orport=18001 no-v2 v3ident=" + strings.Repeat("F", 40) + " 127.110.7.13:18002 " + strings.Repeat("C", 40),
	}
	relay := []string{"SocksPort 0", "ServerDNSResolvConfFile /d/resolv.conf"}
	tests := []struct {
		role    role
		want    []string
		notWant []string
	}{
		{
			role: roleAuthority,
			want: append(slices.Concat(common, relay),
				"OutboundBindAddress 127.110.7.11",
				"Address 127.110.7.11",
				"ORPort 127.110.7.11:18001",
				"DirPort 127.110.7.11:18002",
				"ControlPort 127.110.7.11:18003",
				"TestingV3AuthVotingStartOffset 7",
				"TestingDirAuthVoteGuard $"+strings.Repeat("A", 40)+",$"+strings.Repeat("B", 40)+",$"+strings.Repeat("C", 40),
				"TestingDirAuthVoteGuardIsStrict 1",
				"TestingDirAuthVoteHSDirIsStrict 1",
				"TestingDirAuthVoteExit $"+strings.Repeat("E", 40),
				"TestingDirAuthVoteExitIsStrict 1",
				"V3BandwidthsFile /d/bwfile",
				"ExitPolicy reject *:*"),
			notWant: []string{"DirCache 0", "ExitPolicy accept *:*"},
		},
		{
			role:    roleMiddle,
			want:    append(slices.Concat(common, relay), "DirCache 0", "ExitRelay 0", "ExitPolicy reject *:*", "OutboundBindAddress 127.110.7.20"),
			notWant: []string{"DirPort 127.110.7.20:18002", "ExitPolicy accept *:*"},
		},
		{
			role: roleExit,
			want: append(slices.Concat(common, relay), "DirCache 0", "ExitRelay 1",
				"ExitPolicy accept *:*", "ExitPolicyRejectPrivate 0", "RefuseUnknownExits 0",
				"ServerDNSAllowNonRFC953Hostnames 1", "ServerDNSDetectHijacking 0",
				"OutboundBindAddress 127.110.7.60"),
			notWant: []string{"ExitPolicy reject *:*"},
		},
		{
			role:    roleClient,
			want:    append(slices.Clone(common), "SocksPort 127.110.7.100:18004 ExtendedErrors", "ConfluxEnabled 0", "OutboundBindAddress 127.110.7.100"),
			notWant: []string{"ORPort 127.110.7.100:18001", "SocksPort 0"},
		},
		{
			role:    roleOnion,
			want:    append(slices.Clone(common), "SocksPort 127.110.7.101:18004", "OutboundBindAddress 127.110.7.101"),
			notWant: []string{"SocksPort 0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.role.String(), func(t *testing.T) {
			lines := strings.Split(torrc(nodes[tt.role], tc), "\n")
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("missing %q", w)
				}
			}
			for _, nw := range tt.notWant {
				if slices.Contains(lines, nw) {
					t.Errorf("unexpected %q", nw)
				}
			}
		})
	}
}

func TestVotingOffsets(t *testing.T) {
	for _, sec := range []int64{0, 1, 2, 29, 30, 86399, 1795744024} {
		now := time.Unix(sec, 0)
		hold, trig := holdOffset(now), triggerOffset(now)
		if hold < 0 || hold >= votingInterval || trig < 0 || trig >= votingInterval {
			t.Fatalf("now %d: offsets %d, %d out of range", sec, hold, trig)
		}
		// Seconds until the next boundary, as tor computes it.
		next := func(off int) int64 {
			d := ((int64(off)-sec%86400)%votingInterval + votingInterval) % votingInterval
			if d == 0 {
				d = votingInterval
			}
			return d
		}
		if d := next(hold); d != votingInterval-2 {
			t.Errorf("now %d: hold boundary in %d s, want %d", sec, d, votingInterval-2)
		}
		if d := next(trig); d != 1+voteDelay+distDelay {
			t.Errorf("now %d: trigger boundary in %d s, want %d", sec, d, 1+voteDelay+distDelay)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no dir", cfg: Config{}, wantErr: "Dir is required"},
		{name: "not /24", cfg: Config{Dir: "/x", Block: netip.MustParsePrefix("127.1.0.0/16")}, wantErr: "not a 127.A.B.0/24"},
		{name: "not loopback", cfg: Config{Dir: "/x", Block: netip.MustParsePrefix("10.1.2.0/24")}, wantErr: "not a 127.A.B.0/24"},
		{name: "virtual range", cfg: Config{Dir: "/x", Block: netip.MustParsePrefix("127.200.1.0/24")}, wantErr: "VirtualAddrNetworkIPv4"},
		{name: "too many relays", cfg: Config{Dir: "/x", Relays: 21}, wantErr: "Relays"},
		{name: "negative exits", cfg: Config{Dir: "/x", Exits: -1}, wantErr: "Exits"},
		{name: "non-loopback host", cfg: Config{Dir: "/x", Hosts: map[string]netip.Addr{"a.lan": netip.MustParseAddr("192.0.2.1")}}, wantErr: "not a loopback"},
		{name: "bad host name", cfg: Config{Dir: "/x", Hosts: map[string]netip.Addr{"a b": netip.MustParseAddr("127.0.0.1")}}, wantErr: "bad name"},
		{name: "missing tor", cfg: Config{Dir: "/x", TorPath: "/nonexistent/tor"}, wantErr: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	for range 100 {
		if err := checkBlock(randomBlock()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBandwidthFileAndResolvConf(t *testing.T) {
	tc, _ := testNodes()
	got := bandwidthFile(tc.relays[:2], time.Unix(1700000000, 0))
	want := "1700000000\nnode_id=$" + strings.Repeat("A", 40) + " bw=1000\nnode_id=$" + strings.Repeat("B", 40) + " bw=1000\n"
	if got != want {
		t.Errorf("bandwidthFile = %q, want %q", got, want)
	}
	if got := resolvConf(netip.MustParseAddrPort("127.110.7.53:18053")); got != "nameserver 127.110.7.53:18053\n" {
		t.Errorf("resolvConf = %q", got)
	}
}

func TestConsensusParsing(t *testing.T) {
	doc := "network-status-version 3 microdesc\n" +
		"r auth0 AAAA 2026-01-01 00:00:00 127.0.0.11 18001 0\n" +
		"m xyz\n" +
		"s Authority Guard HSDir Running Stable V2Dir Valid\n" +
		"r exit0 BBBB 2026-01-01 00:00:00 127.0.0.60 18001 0\n" +
		"s Exit Fast Running Valid\n"
	f := consensusFlags(doc)
	if !f["auth0"]["Guard"] || !f["auth0"]["HSDir"] || !f["exit0"]["Exit"] || f["exit0"]["Guard"] {
		t.Errorf("consensusFlags = %v", f)
	}
	nicks := routerNicknames("router mid0 127.0.0.20 18001 0 0\nplatform Tor\nrouter exit0 127.0.0.60 18001 0 0\n")
	if !nicks["mid0"] || !nicks["exit0"] || len(nicks) != 2 {
		t.Errorf("routerNicknames = %v", nicks)
	}
}

func TestParseCircuitAndStream(t *testing.T) {
	c, err := parseCircuit(`8 BUILT $AAA~auth0,$BBB~mid0,$CCC~exit0 BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL TIME_CREATED=2026-11-27T02:01:46.1 SOCKS_USERNAME="u 1" SOCKS_PASSWORD="p\"q"`)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "8" || c.Status != "BUILT" || len(c.Path) != 3 || c.Path[2] != "$CCC~exit0" ||
		c.Purpose != "GENERAL" || c.SocksUsername != "u 1" || c.SocksPassword != `p"q` {
		t.Errorf("parseCircuit = %+v", c)
	}
	c, err = parseCircuit("9 LAUNCHED BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL")
	if err != nil || c.Path != nil || c.Purpose != "GENERAL" {
		t.Errorf("parseCircuit(no path) = %+v, %v", c, err)
	}
	s, ok := ParseStreamEvent(torctl.Event{Code: "STREAM", Raw: `12 NEW 0 web.test.lan:18080 SOURCE_ADDR=127.0.0.1:40000 PURPOSE=USER SOCKS_USERNAME="u1"`})
	if !ok || s.ID != "12" || s.Status != "NEW" || s.CircuitID != "0" || s.Target != "web.test.lan:18080" ||
		s.SourceAddr != "127.0.0.1:40000" || s.SocksUsername != "u1" {
		t.Errorf("ParseStreamEvent = %+v, %v", s, ok)
	}
	if _, ok := ParseStreamEvent(torctl.Event{Code: "CIRC", Raw: "1 BUILT"}); ok {
		t.Error("ParseStreamEvent accepted a CIRC event")
	}
	if _, err := parseStream(`1 NEW 0 "a`); err == nil {
		t.Error("parseStream accepted an unterminated quote")
	}
}

func dnsQuery(t *testing.T, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestDNSServer(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := netip.MustParseAddr("127.110.7.80")
	s := newDNSServer(slog.New(slog.DiscardHandler), map[string]netip.Addr{
		"web.test.lan": web,
		"v6.test.lan.": netip.IPv6Loopback(),
	}, udp, tcp)
	s.start()
	defer s.close()

	tests := []struct {
		name   string
		typ    dnsmessage.Type
		rcode  dnsmessage.RCode
		answer netip.Addr
	}{
		{name: "wEb.TeSt.lAn.", typ: dnsmessage.TypeA, rcode: dnsmessage.RCodeSuccess, answer: web},
		{name: "web.test.lan.", typ: dnsmessage.TypeAAAA, rcode: dnsmessage.RCodeSuccess},
		{name: "V6.test.lan.", typ: dnsmessage.TypeAAAA, rcode: dnsmessage.RCodeSuccess, answer: netip.IPv6Loopback()},
		{name: "nx.test.lan.", typ: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		{name: "example.com.", typ: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
	}
	check := func(t *testing.T, resp []byte, id uint16, name string, rcode dnsmessage.RCode, answer netip.Addr) {
		t.Helper()
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		if m.ID != id || !m.Response || m.RCode != rcode {
			t.Fatalf("header %+v, want id %d rcode %v", m.Header, id, rcode)
		}
		if len(m.Questions) != 1 || m.Questions[0].Name.String() != name {
			t.Fatalf("question %+v not echoed as %q", m.Questions, name)
		}
		if !answer.IsValid() {
			if len(m.Answers) != 0 {
				t.Fatalf("answers %+v, want none", m.Answers)
			}
			return
		}
		if len(m.Answers) != 1 || m.Answers[0].Header.TTL != dnsTTL || m.Answers[0].Header.Name.String() != name {
			t.Fatalf("answers %+v", m.Answers)
		}
		var got netip.Addr
		switch r := m.Answers[0].Body.(type) {
		case *dnsmessage.AResource:
			got = netip.AddrFrom4(r.A)
		case *dnsmessage.AAAAResource:
			got = netip.AddrFrom16(r.AAAA)
		}
		if got != answer {
			t.Fatalf("answer %v, want %v", got, answer)
		}
	}
	for i, tt := range tests {
		id := uint16(1000 + i)
		q := dnsQuery(t, id, tt.name, tt.typ)
		t.Run("udp/"+tt.name, func(t *testing.T) {
			c, err := net.Dial("udp", udp.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(q)
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			check(t, buf[:n], id, tt.name, tt.rcode, tt.answer)
		})
		t.Run("tcp/"+tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tcp.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(q))))
			c.Write(q)
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				t.Fatal(err)
			}
			resp := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, resp); err != nil {
				t.Fatal(err)
			}
			check(t, resp, id, tt.name, tt.rcode, tt.answer)
		})
	}
}

func TestWebHandler(t *testing.T) {
	h := webHandler()
	for _, tt := range []struct {
		method, path string
		code         int
		bodyLen      int
	}{
		{method: "GET", path: "/", code: 200, bodyLen: len(WebBody)},
		{method: "GET", path: "/bytes?n=70000", code: 200, bodyLen: 70000},
		{method: "GET", path: "/bytes?n=-1", code: 400, bodyLen: -1},
		{method: "GET", path: "/nope", code: 404, bodyLen: -1},
		{method: "GET", path: "/whoami", code: 200, bodyLen: -1},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.code || (tt.bodyLen >= 0 && rec.Body.Len() != tt.bodyLen) {
			t.Errorf("%s %s = %d, %d bytes; want %d, %d", tt.method, tt.path, rec.Code, rec.Body.Len(), tt.code, tt.bodyLen)
		}
	}
}

func FuzzDNSAnswer(f *testing.F) {
	s := newDNSServer(slog.New(slog.DiscardHandler), map[string]netip.Addr{"web.test.lan": netip.MustParseAddr("127.1.2.3")}, nil, nil)
	f.Fuzz(func(t *testing.T, query []byte) {
		resp, ok := s.answer(query, nil)
		if !ok {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil {
			t.Fatalf("unparsable response: %v", err)
		}
		if !h.Response || h.ID != binary.BigEndian.Uint16(query) {
			t.Fatalf("bad response header %+v", h)
		}
	})
}

// FuzzStatusLines: the parsers of stream-status and circuit-status lines
// and of STREAM events never panic. The control client's own fuzz test is
// torctl's FuzzConnReply.
func FuzzStatusLines(f *testing.F) {
	f.Add(`8 BUILT $AAAA~auth0,$BBBB~mid0,$CCCC~exit0 BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL SOCKS_USERNAME="u1" SOCKS_PASSWORD="p\"1"`)
	f.Add(`12 NEW 0 web.test.lan:18080 SOURCE_ADDR=127.0.0.1:40000 PURPOSE=USER SOCKS_USERNAME="u1"`)
	f.Add(`1 NEW 0 "a`)
	f.Fuzz(func(t *testing.T, line string) {
		if c, err := parseCircuit(line); err == nil && c.Keywords == nil {
			t.Fatalf("parseCircuit(%q) = %+v with no keyword map", line, c)
		}
		parseStream(line)
		ParseStreamEvent(torctl.Event{Code: "STREAM", Raw: line})
	})
}

// TestListenBlockInUse checks that a taken block is detected before any tor
// starts: an explicit Block fails, a random one is replaced.
func TestListenBlockInUse(t *testing.T) {
	taken := netip.MustParsePrefix("127.111.222.0/24")
	free := netip.MustParsePrefix("127.111.223.0/24")
	squat, err := net.ListenPacket("udp", netip.AddrPortFrom(blockAddr(taken, hostDNS), dnsPort).String())
	if err != nil {
		t.Fatalf("bind in 127.0.0.0/8: %v", err)
	}
	defer squat.Close()

	n := &Network{cfg: Config{Block: taken, Logger: slog.New(slog.DiscardHandler)}, log: slog.New(slog.DiscardHandler), dirTr: newDirTransport()}
	if err := n.listen(); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen on taken explicit block: %v, want EADDRINUSE", err)
	}

	blocks := []netip.Prefix{taken, free}
	n = &Network{cfg: Config{Logger: slog.New(slog.DiscardHandler)}, log: slog.New(slog.DiscardHandler), dirTr: newDirTransport(),
		pickBlock: func() netip.Prefix { b := blocks[0]; blocks = blocks[1:]; return b }}
	if err := n.listen(); err != nil {
		t.Fatalf("listen with a taken then a free random block: %v", err)
	}
	if n.Block != free || n.WebAddr.Addr() != blockAddr(free, hostWeb) {
		t.Errorf("Block %v WebAddr %v, want block %v", n.Block, n.WebAddr, free)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartFailsCleanly runs Start with a "tor" that always fails: Start
// must return a StartError and release the block's listeners.
func TestStartFailsCleanly(t *testing.T) {
	block := netip.MustParsePrefix("127.111.224.0/24")
	_, err := Start(t.Context(), Config{
		Dir:         t.TempDir(),
		Block:       block,
		TorPath:     "/bin/false",
		GencertPath: "/bin/false",
		NoKeyCache:  true,
	})
	var se *StartError
	if !errors.As(err, &se) || se.Stage != "keygen" {
		t.Fatalf("Start = %v, want StartError at keygen", err)
	}
	t.Logf("Start error: %v", err)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(blockAddr(block, hostWeb), webPort).String())
	if err != nil {
		t.Fatalf("web address still taken after failed Start: %v", err)
	}
	ln.Close()
}

func TestKeyCache(t *testing.T) {
	cache := t.TempDir()
	entry := cache + "/" + keyCacheVersion + "/auth0"
	cert := func(expires time.Time) string {
		return "dir-key-certificate-version 3\nfingerprint " + strings.Repeat("B", 40) +
			"\ndir-key-published 2026-01-01 00:00:00\ndir-key-expires " + expires.UTC().Format(time.DateTime) + "\n"
	}
	src := &node{name: "auth0", role: roleAuthority, dir: t.TempDir(), fpr: strings.Repeat("A", 40)}
	os.MkdirAll(src.dir+"/keys", 0o700)
	os.WriteFile(src.dir+"/keys/secret_id_key", []byte("id"), 0o600)
	os.WriteFile(src.dir+"/keys/authority_certificate", []byte(cert(time.Now().Add(365*24*time.Hour))), 0o600)
	if err := storeCachedKeys(entry, src); err != nil {
		t.Fatal(err)
	}

	dst := &node{name: "auth0", role: roleAuthority, dir: t.TempDir()}
	if err := loadCachedKeys(entry, dst); err != nil {
		t.Fatal(err)
	}
	if dst.fpr != src.fpr || dst.v3ident != strings.Repeat("B", 40) {
		t.Errorf("loaded fpr %q v3ident %q", dst.fpr, dst.v3ident)
	}
	if b, err := os.ReadFile(dst.dir + "/keys/secret_id_key"); err != nil || string(b) != "id" {
		t.Errorf("secret_id_key = %q, %v", b, err)
	}
	if st, err := os.Stat(dst.dir + "/keys"); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("keys dir mode %v, %v; tor wants 0700", st.Mode(), err)
	}

	// A missing entry is ErrNotExist; an expiring certificate is replaced.
	if err := loadCachedKeys(cache+"/"+keyCacheVersion+"/mid0", &node{role: roleMiddle, dir: t.TempDir()}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing entry: %v, want ErrNotExist", err)
	}
	os.WriteFile(entry+"/keys/authority_certificate", []byte(cert(time.Now().Add(time.Hour))), 0o600)
	if err := loadCachedKeys(entry, &node{role: roleAuthority, dir: t.TempDir()}); err == nil {
		t.Error("loaded an entry whose certificate expires within the hour")
	}
	if err := storeCachedKeys(entry, src); err != nil {
		t.Fatal(err)
	}
	if err := loadCachedKeys(entry, &node{role: roleAuthority, dir: t.TempDir()}); err != nil {
		t.Errorf("after replacing the stale entry: %v", err)
	}
	if ents, _ := os.ReadDir(cache + "/" + keyCacheVersion); len(ents) != 1 {
		t.Errorf("cache holds %d entries, want 1 (temporary directories left behind?)", len(ents))
	}
}
