package dns

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/dest"
	"golang.org/x/net/dns/dnsmessage"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzHandle from fuzzSeeds")

// cat concatenates byte slices, so that seeds can be written one field per
// line with a comment each.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// by is shorthand for a byte slice literal.
func by(v ...byte) []byte { return v }

// wname encodes a dotted name in wire format (no compression).
func wname(s string) []byte {
	var out []byte
	for l := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if l != "" {
			out = append(out, byte(len(l)))
			out = append(out, l...)
		}
	}
	return append(out, 0)
}

// fuzzSeeds are the FuzzHandle seed corpus, one field per line. The files
// in testdata/fuzz/FuzzHandle are generated from them (go test -run
// TestFuzzCorpus -update-corpus) and carry the note as a comment.
var fuzzSeeds = []struct {
	file, note string
	query      []byte
	udp        bool
}{
	{file: "a", note: "A example.com, RD, over UDP", udp: true, query: cat(
		by(0x12, 0x34),             // ID
		by(0x01, 0x00),             // QR=0 opcode=QUERY RD=1
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1 AN=0 NS=0 AR=0
		wname("example.com"),       // QNAME
		by(0, 1, 0, 1),             // QTYPE=A QCLASS=IN
	)},
	{file: "aaaa_tcp", note: "AAAA mixed-case name over TCP", query: cat(
		by(0xbe, 0xef),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("WwW.ExAmPlE.oRg"),   // QNAME, 0x20-style case
		by(0, 28, 0, 1),            // QTYPE=AAAA QCLASS=IN
	)},
	{file: "ptr_v4", note: "PTR 1.0.192.10.in-addr.arpa, the first virtual IPv4 address", udp: true, query: cat(
		by(0x00, 0x01),                   // ID
		by(0x01, 0x00),                   // RD
		by(0, 1, 0, 0, 0, 0, 0, 0),       // QD=1
		wname("1.0.192.10.in-addr.arpa"), // QNAME
		by(0, 12, 0, 1),                  // QTYPE=PTR QCLASS=IN
	)},
	{file: "ptr_v6", note: "PTR for fd9d:7a2b:5c1e::ac0:1 (ip6.arpa, 32 nibbles)", udp: true, query: cat(
		by(0x00, 0x02),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname(reverseName(netip.MustParseAddr("fd9d:7a2b:5c1e::ac0:1"))),
		by(0, 12, 0, 1), // QTYPE=PTR QCLASS=IN
	)},
	{file: "edns", note: "A with EDNS(0) OPT: UDP size 4096, DO=1", udp: true, query: cat(
		by(0x43, 0x21),             // ID
		by(0x01, 0x20),             // RD, AD
		by(0, 1, 0, 0, 0, 0, 0, 1), // QD=1 AR=1
		wname("example.net"),       // QNAME
		by(0, 1, 0, 1),             // QTYPE=A QCLASS=IN
		by(0),                      // OPT owner: root
		by(0, 41),                  // TYPE=OPT
		by(0x10, 0x00),             // CLASS=UDP payload size 4096
		by(0, 0, 0x80, 0),          // TTL: ext-rcode 0, version 0, DO=1
		by(0, 4),                   // RDLEN=4
		by(0, 10, 0, 0),            // option COOKIE (10), length 0
	)},
	{file: "edns_badvers", note: "EDNS version 1: BADVERS", udp: true, query: cat(
		by(0x43, 0x22),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 1), // QD=1 AR=1
		wname("example.net"),       // QNAME
		by(0, 1, 0, 1),             // QTYPE=A QCLASS=IN
		by(0, 0, 41, 0x04, 0xd0),   // OPT at root, size 1232
		by(0, 1, 0, 0),             // TTL: ext-rcode 0, version 1
		by(0, 0),                   // RDLEN=0
	)},
	{file: "https", note: "HTTPS (type 65) www.example.com: empty NOERROR", udp: true, query: cat(
		by(0x55, 0x55),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("www.example.com"),   // QNAME
		by(0, 65, 0, 1),            // QTYPE=HTTPS QCLASS=IN
	)},
	{file: "onion", note: "AAAA for a v3 onion: always automapped", udp: true, query: cat(
		by(0x0a, 0x0a),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"),
		by(0, 28, 0, 1), // QTYPE=AAAA QCLASS=IN
	)},
	{file: "mx", note: "MX: NOTIMP", udp: true, query: cat(
		by(0x0b, 0x0b),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("example.com"),       // QNAME
		by(0, 15, 0, 1),            // QTYPE=MX QCLASS=IN
	)},
	{file: "long_name", note: "AAAA for a 253-character name over UDP: needs compression to fit 512", udp: true, query: cat(
		by(0x0c, 0x0c),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname(maxName("example")),  // QNAME, 255 wire bytes
		by(0, 28, 0, 1),            // QTYPE=AAAA QCLASS=IN
	)},
	{file: "sections", note: "A with an answer, an authority record and an OPT, compressed", udp: true, query: cat(
		by(0x0d, 0x0d),                      // ID
		by(0x01, 0x00),                      // RD
		by(0, 1, 0, 1, 0, 1, 0, 1),          // QD=1 AN=1 NS=1 AR=1
		wname("example.com"),                // QNAME at offset 12
		by(0, 1, 0, 1),                      // QTYPE=A QCLASS=IN
		by(0xc0, 12, 0, 1, 0, 1),            // AN: pointer to QNAME, A IN
		by(0, 0, 0, 60, 0, 4, 192, 0, 2, 1), // TTL 60, RDLEN 4, 192.0.2.1
		by(0xc0, 20, 0, 2, 0, 1),            // NS: pointer to "com", NS IN
		by(0, 0, 0, 60, 0, 2, 0xc0, 12),     // TTL 60, RDLEN 2, pointer
		by(0, 0, 41, 0x02, 0x00),            // OPT at root, size 512
		by(0, 0, 0, 0, 0, 0),                // TTL 0, RDLEN 0
	)},
	{file: "literal_loopback", note: "A for the name 127.1, an inet_aton spelling of loopback: NXDOMAIN", udp: true, query: cat(
		by(0x0e, 0x0e),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("127.1"),             // QNAME
		by(0, 1, 0, 1),             // QTYPE=A QCLASS=IN
	)},
	{file: "literal_v6", note: "AAAA for the name ::ffff:169.254.169.254 (metadata, v4-mapped): NXDOMAIN", udp: true, query: cat(
		by(0x0f, 0x0f),                  // ID
		by(0x01, 0x00),                  // RD
		by(0, 1, 0, 0, 0, 0, 0, 0),      // QD=1
		wname("::ffff:169.254.169.254"), // QNAME: labels "::ffff:169", "254", "169", "254"
		by(0, 28, 0, 1),                 // QTYPE=AAAA QCLASS=IN
	)},
	{file: "literal_allowed", note: "A for the name 192.0.2.1: answered with itself, never automapped", udp: true, query: cat(
		by(0x10, 0x10),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("192.0.2.1"),         // QNAME
		by(0, 1, 0, 1),             // QTYPE=A QCLASS=IN
	)},
	{file: "short", note: "malformed: 5 bytes, no header: dropped", udp: true, query: by(
		0x12, 0x34, 0x01, 0x00, 0x00, // ID, flags, half a count
	)},
	{file: "qr_set", note: "malformed: QR=1, a response sent as a query: dropped", udp: true, query: cat(
		by(0x12, 0x34),             // ID
		by(0x81, 0x80),             // QR=1 RD RA
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		wname("example.com"),       // QNAME
		by(0, 1, 0, 1),             // A IN
	)},
	{file: "qdcount2", note: "malformed: two questions: FORMERR", udp: true, query: cat(
		by(0x22, 0x22),             // ID
		by(0x01, 0x00),             // RD
		by(0, 2, 0, 0, 0, 0, 0, 0), // QD=2
		wname("a.example"),         // QNAME 1
		by(0, 1, 0, 1),             // A IN
		by(0xc0, 12, 0, 28, 0, 1),  // QNAME 2: pointer to 1, AAAA IN
	)},
	{file: "pointer_loop", note: "malformed: QNAME is a pointer to itself: FORMERR", udp: true, query: cat(
		by(0x33, 0x33),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		by(0xc0, 12),               // pointer to offset 12: itself
		by(0, 1, 0, 1),             // A IN
	)},
	{file: "truncated_question", note: "malformed: QNAME label runs past the end: FORMERR", query: cat(
		by(0x44, 0x44),             // ID
		by(0x01, 0x00),             // RD
		by(0, 1, 0, 0, 0, 0, 0, 0), // QD=1
		by(63, 'a', 'b', 'c'),      // label of 63 bytes, 3 present
	)},
}

// corpusFile renders a seed in Go's fuzz corpus format.
func corpusFile(note string, query []byte, udp bool) []byte {
	return []byte("go test fuzz v1\n" +
		"[]byte(" + strconv.Quote(string(query)) + ") // " + note + "\n" +
		"bool(" + strconv.FormatBool(udp) + ") // udp\n")
}

// TestFuzzCorpus checks that testdata/fuzz/FuzzHandle matches fuzzSeeds,
// and rewrites it with -update-corpus.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	for _, sd := range fuzzSeeds {
		want := corpusFile(sd.note, sd.query, sd.udp)
		path := filepath.Join(dir, sd.file)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzCorpus -update-corpus", path, err)
		}
	}
}

// fuzzResolver answers deterministically from the name, without a
// testing.TB: fuzz targets may not call *F methods.
type fuzzResolver struct{}

func (fuzzResolver) Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error) {
	if name == "onion" || strings.HasSuffix(name, ".onion") {
		panic("Resolver called for " + name)
	}
	switch len(name) % 4 {
	case 0:
		return netip.AddrFrom4([4]byte{192, 0, 2, byte(len(name))}), nil
	case 1:
		return netip.MustParseAddr("2001:db8::1"), nil
	case 2:
		return netip.Addr{}, notFound{}
	}
	return netip.Addr{}, errors.New("general failure")
}

func (fuzzResolver) ResolvePTR(ctx context.Context, src netip.Addr, ip netip.Addr) (string, error) {
	if ip.Is4() {
		return "ptr.example.", nil
	}
	return strings.Repeat("x", 300), nil // invalid: must become SERVFAIL
}

func FuzzHandle(f *testing.F) {
	servers := []*Server{
		newServer(f, Config{MaxEntries: 16}),
		newServer(f, Config{Mode: ModeResolve, Resolver: fuzzResolver{}, MaxEntries: 16}),
		// srcA unproven: its names recycle within a share of 2.
		newServer(f, Config{MaxEntries: 16, Proven: func(netip.Addr) bool { return false }}),
	}
	f.Fuzz(func(t *testing.T, query []byte, udp bool) {
		for _, s := range servers {
			checkHandle(t, s, query, udp)
		}
	})
}

// checkHandle runs one query and checks the invariants of any answer.
func checkHandle(t *testing.T, s *Server, query []byte, udp bool) {
	orig := bytes.Clone(query)
	prefix := []byte{0xab}
	resp, err := s.Handle(context.Background(), srcA, query, udp, prefix)
	if !bytes.Equal(orig, query) {
		t.Fatalf("Handle modified the query")
	}
	if err != nil {
		if !errors.Is(err, ErrDrop) || resp != nil {
			t.Fatalf("Handle = %x, %v", resp, err)
		}
		if len(query) >= 12 && query[2]&0x80 == 0 {
			t.Fatalf("dropped a query with a header and QR=0")
		}
		return
	}
	if len(resp) < 1 || resp[0] != 0xab {
		t.Fatalf("prefix clobbered")
	}
	msg := resp[1:]
	var m dnsmessage.Message
	if err := m.Unpack(msg); err != nil {
		t.Fatalf("response does not parse: %v\n%x", err, msg)
	}
	if m.Header.ID != uint16(query[0])<<8|uint16(query[1]) {
		t.Fatalf("ID %#x not echoed", m.Header.ID)
	}
	if !m.Header.Response || !m.Header.RecursionAvailable || m.Header.RecursionDesired != (query[2]&1 == 1) {
		t.Fatalf("header %+v for flags %#x", m.Header, query[2:4])
	}
	limit := maxTCP
	if udp {
		limit = minUDP
		for _, a := range m.Additionals {
			if a.Header.Type == dnsmessage.TypeOPT {
				limit = maxUDP
			}
		}
	}
	if len(msg) > limit {
		t.Fatalf("%d-byte response over a %d limit", len(msg), limit)
	}
	if len(m.Questions) > 1 || len(m.Answers) > 1 || len(m.Authorities) != 0 || len(m.Additionals) > 1 {
		t.Fatalf("sections %d/%d/%d/%d", len(m.Questions), len(m.Answers), len(m.Authorities), len(m.Additionals))
	}
	if len(m.Questions) == 1 {
		var p dnsmessage.Parser
		p.Start(query)
		q, err := p.Question()
		if err != nil || q != m.Questions[0] {
			t.Fatalf("question %v echoed for %v (%v)", m.Questions[0], q, err)
		}
	}
	if len(m.Answers) == 1 {
		a := m.Answers[0].Header
		if len(m.Questions) != 1 || a.Name != m.Questions[0].Name || a.Type != m.Questions[0].Type ||
			m.Header.RCode != dnsmessage.RCodeSuccess {
			t.Fatalf("answer %v for question %v", a, m.Questions)
		}
		// An automap answer is virtual, loopback (localhost) or the
		// question's own literal, which must then be allowed.
		lit, isLit := dest.ParseLiteral(m.Questions[0].Name.String())
		var ip netip.Addr
		switch body := m.Answers[0].Body.(type) {
		case *dnsmessage.AResource:
			ip = netip.AddrFrom4(body.A)
		case *dnsmessage.AAAAResource:
			ip = netip.AddrFrom16(body.AAAA)
		}
		switch {
		case !ip.IsValid():
		case isLit:
			if ip != lit.Unmap() || dest.Forbidden(ip) != dest.ReasonAllowed || s.IsVirtual(ip) {
				t.Fatalf("literal %v answered %v", lit, ip)
			}
		case s.mode == ModeAutomap && !s.IsVirtual(ip) && !ip.IsLoopback():
			t.Fatalf("automap answered %v", ip)
		}
	}
	if n := s.Len(); n > s.tab.max {
		t.Fatalf("Len %d > %d", n, s.tab.max)
	}
}
