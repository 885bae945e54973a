package dns

import (
	"errors"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// mapName automaps name through Handle and returns its IPv4 address.
func mapName(t testing.TB, s *Server, name string) netip.Addr {
	t.Helper()
	return answerAddr(t, askName(t, s, srcA, name+".", dnsmessage.TypeA))
}

func TestLookupAndAcquire(t *testing.T) {
	s := newServer(t, Config{})
	ip := mapName(t, s, "example.com")
	ip6 := answerAddr(t, askName(t, s, srcA, "example.com.", dnsmessage.TypeAAAA))
	tests := []struct {
		ip            string
		virtual, ok   bool
		wantName      string
		wantIsVirtual bool
	}{
		{ip: ip.String(), virtual: true, ok: true, wantName: "example.com"},
		{ip: ip6.String(), virtual: true, ok: true, wantName: "example.com"},
		{ip: "::ffff:" + ip.String(), virtual: true, ok: true, wantName: "example.com"},
		{ip: ip6.String() + "%eth0", virtual: true, ok: true, wantName: "example.com"},
		{ip: "10.200.0.1", virtual: true},                // in the pool, never handed out
		{ip: "10.192.1.0", virtual: true},                // .0 is never handed out
		{ip: "10.255.255.255", virtual: true},            // nor .255
		{ip: "10.192.0.0", virtual: true},                // nor the pool's first address
		{ip: "fd9d:7a2b:5c1e:0:1::ac0:1", virtual: true}, // middle bits set
		{ip: "fd9d:7a2b:5c1e::b00:1", virtual: true},     // low bits outside Pool4
		{ip: "10.191.255.1"},
		{ip: "192.0.2.1"},
		{ip: "2001:db8::1"},
		{ip: "fd9d:7a2b:5c1f::ac0:1"},
	}
	for _, tt := range tests {
		addr := netip.MustParseAddr(tt.ip)
		name, virtual, ok := s.Lookup(srcA, addr)
		if name != tt.wantName || virtual != tt.virtual || ok != tt.ok {
			t.Errorf("Lookup(%s) = %q, %v, %v; want %q, %v, %v", tt.ip, name, virtual, ok, tt.wantName, tt.virtual, tt.ok)
		}
		if s.IsVirtual(addr) != tt.virtual {
			t.Errorf("IsVirtual(%s) = %v", tt.ip, !tt.virtual)
		}
		name, release, virtual, ok := s.Acquire(srcA, addr)
		if name != tt.wantName || virtual != tt.virtual || ok != tt.ok || release == nil {
			t.Errorf("Acquire(%s) = %q, %v, %v, %v", tt.ip, name, release != nil, virtual, ok)
		}
		release()
		release()
	}
	if st := s.Stats(); st.Pinned != 0 {
		t.Errorf("Pinned = %d after releases", st.Pinned)
	}
}

func TestLRU(t *testing.T) {
	s := newServer(t, Config{MaxEntries: 3})
	a, b := mapName(t, s, "a.example"), mapName(t, s, "b.example")
	mapName(t, s, "c.example")
	s.Lookup(srcA, a) // a is now more recent than b
	mapName(t, s, "d.example")
	if _, _, ok := s.Lookup(srcA, b); ok {
		t.Errorf("b survived; the LRU entry should have been recycled")
	}
	if n, _, ok := s.Lookup(srcA, a); !ok || n != "a.example" {
		t.Errorf("a recycled")
	}
	if s.Len() != 3 || s.Stats().Recycled != 1 {
		t.Errorf("Len %d, Recycled %d", s.Len(), s.Stats().Recycled)
	}
	// A recycled name comes back at a new address: the permutation walks on
	// rather than reusing the freed one.
	if b2 := mapName(t, s, "b.example"); b2 == b {
		t.Errorf("b got its recycled address %v back immediately", b)
	}
}

func TestPinnedNeverRecycled(t *testing.T) {
	s := newServer(t, Config{MaxEntries: 4})
	var ips []netip.Addr
	var releases []func()
	for i := range 4 {
		ip := mapName(t, s, "pin"+strconv.Itoa(i)+".example")
		_, release, _, ok := s.Acquire(srcA, ip)
		if !ok {
			t.Fatalf("Acquire(%v) failed", ip)
		}
		ips, releases = append(ips, ip), append(releases, release)
	}
	// A second pin on the same entry needs two releases.
	_, extra, _, _ := s.Acquire(srcA, ips[0])
	wantRCode(t, askName(t, s, srcA, "new.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	if st := s.Stats(); st.Exhausted != 1 || st.Pinned != 4 {
		t.Errorf("Exhausted %d, Pinned %d", st.Exhausted, st.Pinned)
	}
	// Known names still answer.
	if got := mapName(t, s, "pin2.example"); got != ips[2] {
		t.Errorf("pinned name moved: %v -> %v", ips[2], got)
	}
	releases[0]()
	releases[0]()
	wantRCode(t, askName(t, s, srcA, "new.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	extra()
	mapName(t, s, "new.example")
	if _, _, ok := s.Lookup(srcA, ips[0]); ok {
		t.Errorf("released entry not recycled")
	}
	for _, ip := range ips[1:] {
		if _, _, ok := s.Lookup(srcA, ip); !ok {
			t.Errorf("pinned %v recycled", ip)
		}
	}
}

func TestBoundUnderManyNames(t *testing.T) {
	// Many sources, each under its share, together fill the table: the
	// global bound holds, and pinned entries survive.
	const perSource, sources = 1000, 100
	s := newServer(t, Config{})
	max := DefaultMaxEntries
	pinned := map[netip.Addr]string{}
	for i := range 10 {
		name := "pinned" + strconv.Itoa(i) + ".example"
		ip := mapName(t, s, name)
		_, release, _, ok := s.Acquire(srcA, ip)
		if !ok {
			t.Fatal("Acquire failed")
		}
		t.Cleanup(release)
		pinned[ip] = name
	}
	q := buildQuery(t, "n0000000.example.", dnsmessage.TypeA, queryOpts{})
	resp := make([]byte, 0, 512)
	for j := range sources {
		src := netip.AddrFrom4([4]byte{10, 152, 153, byte(j)})
		for i := range perSource {
			copy(q[14:21], strconv.Itoa(1000000+i)) // after the length byte and "n"
			out, err := s.Handle(t.Context(), src, q, true, resp)
			if err != nil || out[3]&0xf != 0 {
				t.Fatalf("query %d failed: %v, rcode %d", i, err, out[3]&0xf)
			}
		}
		if s.Len() > max {
			t.Fatalf("Len %d > %d after %d sources", s.Len(), max, j)
		}
	}
	if s.Len() != max {
		t.Errorf("Len = %d, want %d", s.Len(), max)
	}
	for ip, name := range pinned {
		if got, _, ok := s.Lookup(srcA, ip); !ok || got != name {
			t.Errorf("pinned %v: Lookup = %q, %v", ip, got, ok)
		}
	}
	st := s.Stats()
	if want := uint64(perSource*sources + len(pinned) - max); st.Recycled != want {
		t.Errorf("Recycled = %d, want %d", st.Recycled, want)
	}
}

func TestAllocationSkipsAndWraps(t *testing.T) {
	// A /24 holds 254 entries: .1 to .254. It has no room for epochs.
	s := newServer(t, Config{Pool4: netip.MustParsePrefix("192.0.2.0/24"), Pool6: netip.MustParsePrefix("2001:db8::/96"), MaxEntries: 254})
	seen := map[netip.Addr]bool{}
	var first netip.Addr
	for i := range 254 {
		ip := mapName(t, s, "h"+strconv.Itoa(i)+".example")
		a := ip.As4()
		if seen[ip] || a[3] == 0 || a[3] == 255 || !s.pool4.Contains(ip) {
			t.Fatalf("name %d got %v", i, ip)
		}
		if i == 0 {
			first = ip
		}
		seen[ip] = true
	}
	// Full: the next name recycles h0 and takes its address, the only
	// free one.
	if ip := mapName(t, s, "late.example"); ip != first {
		t.Errorf("late.example = %v, want %v", ip, first)
	}
	if n, _, _ := s.Lookup(srcA, first); n != "late.example" {
		t.Errorf("Lookup(%v) = %q", first, n)
	}
}

func TestMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates about 10 MB")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("host-0000000.example.com") // typical length: 24
	for i := range DefaultMaxEntries {
		copy(key[5:12], strconv.Itoa(1000000+i))
		src := netip.AddrFrom4([4]byte{10, 152, 152, byte(i % 16)}) // 16 workstations, 4096 names each
		if _, r := s.tab.assign(src, true, key); r != refusedNone {
			t.Fatal("assign failed")
		}
	}
	if s.Len() != DefaultMaxEntries {
		t.Fatalf("Len %d", s.Len())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / DefaultMaxEntries
	t.Logf("%d entries: %.0f bytes/entry (names of %d bytes), %.1f MiB", s.Len(), per, len(key),
		float64(after.HeapAlloc-before.HeapAlloc)/(1<<20))
	if per > 256 {
		t.Errorf("%.0f bytes per entry; the documented bound is ~11 MiB for 65536", per)
	}
	runtime.KeepAlive(s)
}

func TestConfig(t *testing.T) {
	bad := []struct {
		field string
		cfg   Config
	}{
		{"Mode", Config{Mode: 7}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("10.192.0.1/10")}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("10.192.0.0/25")}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("10.0.0.0/7")}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("127.0.0.0/16")}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("224.0.0.0/8")}},
		{"Pool4", Config{Pool4: netip.MustParsePrefix("fd00::/64")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("10.0.0.0/8")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("fd00::1/64")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("fd00::/97")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("::ffff:0:0/96")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("::/64")}},
		{"Pool6", Config{Pool6: netip.MustParsePrefix("fe80::/64")}},
		{"MaxEntries", Config{MaxEntries: -1}},
		{"MaxEntries", Config{Pool4: netip.MustParsePrefix("192.0.2.0/24"), MaxEntries: 255}},
		{"MaxEntriesPerSource", Config{MaxEntriesPerSource: -1}},
		{"MaxEntriesPerSource", Config{MaxEntries: 10, MaxEntriesPerSource: 11}},
		{"TTL", Config{TTL: time.Millisecond}},
		{"TTL", Config{TTL: 2 * time.Hour}},
		{"ResolveTimeout", Config{ResolveTimeout: -1}},
		{"MaxResolves", Config{MaxResolves: -1}},
		{"Resolver", Config{Mode: ModeResolve}},
	}
	for _, tt := range bad {
		_, err := New(tt.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("New(%+v) = %v, want a ConfigError for %s", tt.cfg, err, tt.field)
		}
	}
	s := newServer(t, Config{Pool4: netip.MustParsePrefix("192.0.2.0/24")})
	if s.tab.max != 127 || s.tab.perSrc != 127 {
		t.Errorf("MaxEntries, MaxEntriesPerSource defaulted to %d, %d for a /24, want 127", s.tab.max, s.tab.perSrc)
	}
	s = newServer(t, Config{})
	if s.tab.max != DefaultMaxEntries || s.tab.perSrc != DefaultMaxEntries/4 {
		t.Errorf("defaults %d, %d", s.tab.max, s.tab.perSrc)
	}
	s = newServer(t, Config{Pool6: netip.MustParsePrefix("fc00::/7")}) // Whonix's
	ip := answerAddr(t, askName(t, s, srcA, "example.com.", dnsmessage.TypeAAAA))
	ip4 := answerAddr(t, askName(t, s, srcA, "example.com.", dnsmessage.TypeA))
	if !netip.MustParsePrefix("fc00::/96").Contains(ip) || [4]byte(ip.AsSlice()[12:]) != ip4.As4() {
		t.Errorf("AAAA = %v, A = %v", ip, ip4)
	}
}

func TestMode(t *testing.T) {
	for _, m := range []Mode{ModeAutomap, ModeResolve} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
		txt, err := m.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Mode
		if err := back.UnmarshalText(txt); err != nil || back != m {
			t.Errorf("round trip %v: %v, %v", m, back, err)
		}
	}
	if m, err := ParseMode(" Resolve "); err != nil || m != ModeResolve {
		t.Errorf("ParseMode(Resolve) = %v, %v", m, err)
	}
	if _, err := ParseMode("tor"); err == nil {
		t.Errorf("ParseMode(tor) succeeded")
	}
	if _, err := Mode(5).MarshalText(); err == nil || Mode(5).String() != "Mode(5)" {
		t.Errorf("Mode(5) marshals")
	}
	var zero Config
	if zero.Mode != ModeAutomap {
		t.Errorf("zero Mode is not automap")
	}
}
