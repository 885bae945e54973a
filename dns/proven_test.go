package dns

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// provenSet is a Config.Proven for tests: the sources in it are proven.
type provenSet struct {
	mu    sync.Mutex
	addrs map[netip.Addr]bool
	calls int
}

func newProvenSet(addrs ...netip.Addr) *provenSet {
	p := &provenSet{addrs: map[netip.Addr]bool{}}
	for _, a := range addrs {
		p.addrs[a] = true
	}
	return p
}

func (p *provenSet) proven(src netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	return p.addrs[src]
}

func (p *provenSet) set(src netip.Addr, proven bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addrs[src] = proven
}

// spoofed returns the i-th made-up source of a flood: 10.152.x.y, outside
// the workstations' 10.152.152.0/24.
func spoofed(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 152, byte(160 + i>>8), byte(i)})
}

// flood sends names queries for distinct names from each of sources
// made-up sources, and fails on anything but an answer.
func flood(t testing.TB, s *Server, sources, names int, tag string) {
	t.Helper()
	resp := make([]byte, 0, 512)
	q := buildQuery(t, "f0000000."+tag+".example.", dnsmessage.TypeA, queryOpts{})
	for j := range sources {
		src := spoofed(j)
		for i := range names {
			copy(q[14:21], strconv.Itoa(1000000+j*names+i)) // after the length byte and "f"
			out, err := s.Handle(t.Context(), src, q, true, resp)
			if err != nil || out[3]&0xf != 0 {
				t.Fatalf("flood query %d from %v: %v, rcode %d", i, src, err, out[3]&0xf)
			}
		}
	}
}

// mapMany maps n names for src and returns them by address.
func mapMany(t testing.TB, s *Server, src netip.Addr, prefix string, n int) map[netip.Addr]string {
	t.Helper()
	m := make(map[netip.Addr]string, n)
	for i := range n {
		name := prefix + strconv.Itoa(i) + ".example"
		m[mapFrom(t, s, src, name)] = name
	}
	return m
}

// checkIntact fails unless every name of src still maps to its address,
// both ways: Lookup, and a new A query answering the same address.
func checkIntact(t testing.TB, s *Server, src netip.Addr, names map[netip.Addr]string) {
	t.Helper()
	for ip, name := range names {
		if got, _, ok := s.Lookup(src, ip); !ok || got != name {
			t.Fatalf("%v's %s (%v) lost: Lookup = %q, %v", src, name, ip, got, ok)
		}
	}
	for ip, name := range names {
		if got := mapFrom(t, s, src, name); got != ip {
			t.Fatalf("%v's %s moved from %v to %v", src, name, ip, got)
		}
	}
}

// TestUnprovenFlood (issue 19: 8,000 spoofed sources filled the table and
// every real workstation was left with a handful of names): with the
// table full, proven workstations holding their whole share and a flood
// from thousands of made-up sources turning over the rest, every proven
// name still resolves, to the same address.
func TestUnprovenFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the default 65536-entry table")
	}
	ws := []netip.Addr{srcA, srcB, netip.MustParseAddr("10.152.152.13"), netip.MustParseAddr("10.152.152.14")}
	p := newProvenSet(ws...)
	s := newServer(t, Config{Proven: p.proven})
	share := DefaultMaxEntries - DefaultMaxEntries/unprovenShare
	names := make([]map[netip.Addr]string, len(ws))
	for k, w := range ws {
		names[k] = mapMany(t, s, w, "w"+strconv.Itoa(k)+"-", share/len(ws))
	}
	if st := s.Stats(); st.Entries != share || st.Recycled != 0 {
		t.Fatalf("proven fill: Entries %d, Recycled %d; want %d, 0", st.Entries, st.Recycled, share)
	}
	// The flood of the issue: 8,000 sources, and more names than the
	// whole table holds.
	const sources, each = 8000, 10
	flood(t, s, sources, each, "a")
	st := s.Stats()
	if st.Entries != DefaultMaxEntries || st.Unproven != DefaultMaxEntries/unprovenShare {
		t.Errorf("after the flood: Entries %d, Unproven %d; want %d, %d",
			st.Entries, st.Unproven, DefaultMaxEntries, DefaultMaxEntries/unprovenShare)
	}
	if want := uint64(sources*each - DefaultMaxEntries/unprovenShare); st.Recycled != want {
		t.Errorf("Recycled %d, want %d (the flood's own entries only)", st.Recycled, want)
	}
	if st.UnprovenRefused != 0 || st.Total(ResultServFail) != 0 {
		t.Errorf("UnprovenRefused %d, SERVFAIL %d: the flood's share has room to turn over", st.UnprovenRefused, st.Total(ResultServFail))
	}
	for k, w := range ws {
		checkIntact(t, s, w, names[k])
	}
	t.Logf("%d proven names intact after %d names from %d made-up sources; %d recycled, all the flood's",
		share, sources*each, sources, st.Recycled)
}

// TestUnprovenShare: unproven sources together never hold more than
// MaxUnprovenEntries; proven ones fill the rest without recycling; and the
// unproven share stays theirs: a proven source with a full share
// recycles a proven entry, and a new unproven source still gets an answer.
func TestUnprovenShare(t *testing.T) {
	const max, share = 64, 8
	p := newProvenSet(srcA, srcB)
	s := newServer(t, Config{Proven: p.proven, MaxEntries: max, MaxUnprovenEntries: share})
	flood(t, s, 40, 3, "a")
	if st := s.Stats(); st.Unproven != share || st.Entries != share {
		t.Fatalf("after the flood: Unproven %d, Entries %d; want %d", st.Unproven, st.Entries, share)
	}
	before := s.Stats().Recycled
	a := mapMany(t, s, srcA, "a", 30)
	b := mapMany(t, s, srcB, "b", max-share-30)
	if st := s.Stats(); st.Recycled != before || st.Entries != max {
		t.Fatalf("proven fill recycled %d; Entries %d", st.Recycled-before, st.Entries)
	}
	// The table is full. An unproven source's name recycles an unproven
	// entry...
	newcomer := netip.MustParseAddr("10.152.152.50")
	n := mapFrom(t, s, newcomer, "first.example")
	if st := s.Stats(); st.Unproven != share || st.Recycled != before+1 {
		t.Errorf("newcomer: Unproven %d, Recycled %d", st.Unproven, st.Recycled-before)
	}
	// ... and a proven source's recycles a proven one: the largest
	// holder's (A), not the unproven share.
	mapFrom(t, s, srcB, "b-more.example")
	if st := s.Stats(); st.Unproven != share {
		t.Errorf("a proven name took from the unproven share: Unproven %d", st.Unproven)
	}
	if got, _, ok := s.Lookup(newcomer, n); !ok || got != "first.example" {
		t.Errorf("newcomer's entry recycled by a proven source")
	}
	lost := 0
	for ip := range a {
		if _, _, ok := s.Lookup(srcA, ip); !ok {
			lost++
		}
	}
	if lost != 1 {
		t.Errorf("A lost %d entries, want 1 (the largest proven holder gives way)", lost)
	}
	checkIntact(t, s, srcB, b)
	// More flood: A and B untouched.
	flood(t, s, 100, 2, "b")
	if st := s.Stats(); st.Unproven != share || st.Entries != max {
		t.Errorf("Unproven %d, Entries %d", st.Unproven, st.Entries)
	}
	checkIntact(t, s, srcB, b)
}

// TestUnprovenRefused: an unproven source whose share is full of pinned
// entries gets SERVFAIL, counted; it never takes a proven entry.
func TestUnprovenRefused(t *testing.T) {
	p := newProvenSet(srcA)
	s := newServer(t, Config{Proven: p.proven, MaxEntries: 8, MaxUnprovenEntries: 2})
	a := mapMany(t, s, srcA, "a", 6)
	for i := range 2 {
		ip := mapFrom(t, s, srcB, "b"+strconv.Itoa(i)+".example")
		_, release, _, ok := s.Acquire(srcB, ip)
		if !ok {
			t.Fatal("Acquire failed")
		}
		defer release()
	}
	wantRCode(t, askName(t, s, spoofed(1), "x.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	wantRCode(t, askName(t, s, srcB, "b9.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	if st := s.Stats(); st.UnprovenRefused != 2 || st.Exhausted != 0 || st.Entries != 8 {
		t.Errorf("UnprovenRefused %d, Exhausted %d, Entries %d", st.UnprovenRefused, st.Exhausted, st.Entries)
	}
	checkIntact(t, s, srcA, a)
}

// TestProvenRecyclesRestoredFirst: after a restart, a proven source's new
// name recycles the entries of workstations not heard from since (restored
// from the state file) before any proven workstation's; unproven sources
// cannot recycle restored entries at all.
func TestProvenRecyclesRestoredFirst(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "automap.state")
	srcC := netip.MustParseAddr("10.152.152.13")
	p := newProvenSet(srcA, srcB, srcC)
	cfg := Config{Proven: p.proven, MaxEntries: 32, MaxUnprovenEntries: 4, StateFile: file}
	s1 := newServer(t, cfg)
	old := mapMany(t, s1, srcC, "c", 4) // C: restored, and not back
	b := mapMany(t, s1, srcB, "b", 10)  // B: restored, back later
	must(t, s1.Close())

	p.set(srcC, false) // C is not back
	p.set(srcB, false) // nor B yet
	s := newServer(t, cfg)
	if s.Len() != 14 {
		t.Fatalf("loaded %d entries, want 14", s.Len())
	}
	// A, proven, holds more than anyone but fills only the rest of the
	// proven share; nothing is recycled.
	a := mapMany(t, s, srcA, "a", 28-14)
	if st := s.Stats(); st.Recycled != 0 {
		t.Fatalf("Recycled %d before the proven share is full", st.Recycled)
	}
	// The flood cannot touch restored entries.
	flood(t, s, 50, 2, "a")
	checkIntact(t, s, srcC, old)
	// B comes back (proven, no query since). A's next names recycle
	// restored entries before A's own, although A holds the most; and
	// not B's, although B holds more than C: asked again as the
	// candidate, B is proven now, so C gives way.
	p.set(srcB, true)
	for i := range 3 {
		mapFrom(t, s, srcA, "a-more"+strconv.Itoa(i)+".example")
	}
	lost := 0
	for ip := range old {
		if _, _, ok := s.Lookup(srcC, ip); !ok {
			lost++
		}
	}
	if lost != 3 {
		t.Errorf("C lost %d entries, want 3", lost)
	}
	checkIntact(t, s, srcA, a)
	checkIntact(t, s, srcB, b)
	if s.tab.sources[srcB].class != classProven {
		t.Errorf("B, proven again, not promoted when it was a candidate")
	}
	// C asks before it is proven: it recycles its own entries, and
	// grows only once proven.
	n := s.Len()
	mapFrom(t, s, srcC, "c-new.example")
	if s.Len() != n || s.tab.sources[srcC].n != 1 {
		t.Errorf("restored C grew while unproven: Len %d -> %d, C holds %d", n, s.Len(), s.tab.sources[srcC].n)
	}
}

// TestPromotion: a source that asks before its proof (a workstation's first
// query comes before its handshake) is promoted by its next query, or,
// without one, when the flood is about to recycle its entry; its entries
// are then out of the flood's reach, and the unproven share gets its room
// back.
func TestPromotion(t *testing.T) {
	const max, share = 32, 8
	for _, tt := range []struct {
		name  string
		query bool // C asks again after its proof
	}{
		{name: "by its own query", query: true},
		{name: "as a candidate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srcC := netip.MustParseAddr("10.152.152.13")
			p := newProvenSet(srcA)
			s := newServer(t, Config{Proven: p.proven, MaxEntries: max, MaxUnprovenEntries: share})
			a := mapMany(t, s, srcA, "a", max-share)
			c := mapMany(t, s, srcC, "c", 3) // before its handshake
			if st := s.Stats(); st.Unproven != 3 {
				t.Fatalf("Unproven %d", st.Unproven)
			}
			p.set(srcC, true) // the handshake
			if tt.query {
				if ip := mapFrom(t, s, srcC, "c0.example"); c[ip] != "c0.example" {
					t.Fatalf("c0 moved")
				}
				// The proven share was full: C's 3 entries pushed it
				// over, and A, its largest holder, gave 3 back.
				if st := s.Stats(); st.Unproven != 0 || st.Entries != max-share {
					t.Errorf("after promotion: Unproven %d, Entries %d", st.Unproven, st.Entries)
				}
			}
			flood(t, s, 20, 2, "a")
			if s.tab.sources[srcC].class != classProven {
				t.Fatalf("C not promoted")
			}
			checkIntact(t, s, srcC, c)
			if st := s.Stats(); st.Unproven != share || s.tab.provenHeld() > s.tab.provenCap() {
				t.Errorf("Unproven %d, proven share %d of %d", st.Unproven, s.tab.provenHeld(), s.tab.provenCap())
			}
			kept := 0
			for ip := range a {
				if _, _, ok := s.Lookup(srcA, ip); ok {
					kept++
				}
			}
			if kept != max-share-3 {
				t.Errorf("A kept %d, want %d", kept, max-share-3)
			}
		})
	}
}

// TestSaveDropsUnproven: Save writes only the entries of sources proven at
// save time, in the format of earlier versions; they come back, the rest
// do not.
func TestSaveDropsUnproven(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "automap.state")
	srcC := netip.MustParseAddr("10.152.152.13")
	p := newProvenSet(srcA, srcC)
	cfg := Config{Proven: p.proven, StateFile: file, EpochFile: filepath.Join(dir, "automap.epoch"), MaxEntries: 64}
	s1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := mapMany(t, s1, srcA, "a", 5)
	c := mapMany(t, s1, srcC, "c", 2)
	mapMany(t, s1, srcB, "b", 3) // never proven
	flood(t, s1, 4, 1, "a")
	_, release, _, _ := s1.Acquire(srcB, mapFrom(t, s1, srcB, "b0.example")) // pinned, still unproven
	defer release()
	p.set(srcC, false) // proven when it asked, not at save time
	must(t, s1.Close())

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s1.parseState(data)
	if err != nil {
		t.Fatalf("saved file does not parse as version 2: %v", err)
	}
	if len(recs) != len(a) {
		t.Errorf("saved %d entries, want A's %d", len(recs), len(a))
	}
	for _, r := range recs {
		if r.src != srcA {
			t.Errorf("saved an entry of %v", r.src)
		}
	}
	s2 := newServer(t, cfg)
	if s2.Len() != len(a) {
		t.Errorf("reloaded %d entries, want %d", s2.Len(), len(a))
	}
	checkIntact(t, s2, srcA, a)
	for ip := range c {
		if _, _, ok := s2.Lookup(srcC, ip); ok {
			t.Errorf("C's entry came back")
		}
	}
	// Without Proven, everything is saved, as before.
	s3 := newServer(t, Config{StateFile: file, MaxEntries: 64})
	mapMany(t, s3, srcB, "b", 3)
	must(t, s3.Save())
	if s4 := newServer(t, Config{StateFile: file}); s4.Len() != len(a)+3 {
		t.Errorf("without Proven: reloaded %d, want %d", s4.Len(), len(a)+3)
	}
}

// TestLoadEarlierVersion: a state file of the earlier version, flooded,
// loads (its entries restored, within the proven share) and the flood
// does not survive the next save.
func TestLoadEarlierVersion(t *testing.T) {
	body := "torgate-dns-automap 2\npool4 10.192.0.0/10\npool6 fd9d:7a2b:5c1e::/64\n" +
		"10.192.0.1 10.152.152.11 a.example\n"
	for i := range 20 {
		body += "10.192.1." + strconv.Itoa(i+1) + " " + spoofed(i).String() + " f.example\n"
	}
	file := filepath.Join(t.TempDir(), "automap.state")
	must(t, os.WriteFile(file, []byte(withSum(body)), 0o600))
	p := newProvenSet(srcA)
	s := newServer(t, Config{Proven: p.proven, StateFile: file, MaxEntries: 16, MaxUnprovenEntries: 4})
	if s.Len() != 12 || s.Stats().Unproven != 0 {
		t.Fatalf("loaded %d (Unproven %d), want the proven share, 12", s.Len(), s.Stats().Unproven)
	}
	if n, _, ok := s.Lookup(srcA, netip.MustParseAddr("10.192.0.1")); !ok || n != "a.example" {
		t.Errorf("A's entry: %q, %v", n, ok)
	}
	must(t, s.Save())
	if s2 := newServer(t, Config{StateFile: file}); s2.Len() != 1 {
		t.Errorf("after a save: %d entries, want A's 1", s2.Len())
	}
}

// TestProvenConfig: MaxUnprovenEntries defaults to 1/8 and is validated.
func TestProvenConfig(t *testing.T) {
	yes := func(netip.Addr) bool { return true }
	for _, tt := range []struct {
		cfg     Config
		want    int  // tab.unprovenCap
		invalid bool // a ConfigError for MaxUnprovenEntries
	}{
		{cfg: Config{Proven: yes}, want: DefaultMaxEntries / 8},
		{cfg: Config{Proven: yes, MaxEntries: 100}, want: 12},
		{cfg: Config{Proven: yes, MaxEntries: 2}, want: 1},
		{cfg: Config{Proven: yes, MaxEntries: 1}, want: 0}, // no room for unproven sources
		{cfg: Config{Proven: yes, MaxEntries: 100, MaxUnprovenEntries: 99}, want: 99},
		{cfg: Config{MaxEntries: 100}, want: 0}, // no Proven: no unproven sources
		{cfg: Config{Proven: yes, MaxUnprovenEntries: -1}, invalid: true},
		{cfg: Config{Proven: yes, MaxEntries: 100, MaxUnprovenEntries: 100}, invalid: true},
		{cfg: Config{MaxEntries: 100, MaxUnprovenEntries: 101}, invalid: true},
	} {
		s, err := New(tt.cfg)
		if tt.invalid {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != "MaxUnprovenEntries" {
				t.Errorf("New(%+v) = %v, want a ConfigError for MaxUnprovenEntries", tt.cfg, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%+v): %v", tt.cfg, err)
			continue
		}
		if s.tab.unprovenCap != tt.want {
			t.Errorf("New(%+v): unproven share %d, want %d", tt.cfg, s.tab.unprovenCap, tt.want)
		}
		s.Close()
	}
}

// TestProvenCalls: Proven is asked about the asking source with the key
// the table uses (no zone, IPv4 unmapped), once per automapped query.
func TestProvenCalls(t *testing.T) {
	var mu sync.Mutex
	var got []netip.Addr
	s := newServer(t, Config{Proven: func(src netip.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, src)
		return true
	}})
	mapFrom(t, s, netip.AddrFrom16(srcA.As16()), "x.example")
	mapFrom(t, s, netip.MustParseAddr("fe80::1%eth0"), "x.example")
	mapFrom(t, s, srcA, "x.example")
	want := []netip.Addr{srcA, netip.MustParseAddr("fe80::1"), srcA}
	if len(got) != len(want) {
		t.Fatalf("Proven called %d times: %v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d: %v, want %v", i, got[i], want[i])
		}
	}
}

// checkTable fails unless the table's bookkeeping adds up: class counts,
// heaps, LRU lists, and the shares.
func checkTable(t *testing.T, s *Server) {
	t.Helper()
	tb := s.tab
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var held [numClasses]int
	total, pinned := 0, 0
	for addr, src := range tb.sources {
		if src.n == 0 {
			t.Fatalf("%v kept with no entries", addr)
		}
		if h := tb.heaps[src.class]; src.hidx >= len(h) || h[src.hidx] != src {
			t.Fatalf("%v not at its place in the %d heap", addr, src.class)
		}
		listed := 0
		for i := src.head; i != nilSlot; i = tb.slots[i].next {
			if tb.slots[i].src != src || tb.slots[i].pins != 0 {
				t.Fatalf("%v's list holds slot %d of another source or pinned", addr, i)
			}
			listed++
		}
		if listed != src.unpinned {
			t.Fatalf("%v: %d listed, unpinned %d", addr, listed, src.unpinned)
		}
		held[src.class] += src.n
		total += src.n
	}
	for i := range tb.slots {
		if tb.slots[i].pins > 0 {
			pinned++
		}
	}
	n := 0
	for c := range numClasses {
		n += len(tb.heaps[c])
	}
	switch {
	case held != tb.held:
		t.Fatalf("held %v, counted %v", tb.held, held)
	case total != tb.len() || n != len(tb.sources) || pinned != tb.pinned:
		t.Fatalf("entries %d, len %d; %d sources in heaps of %d; pinned %d, counted %d",
			total, tb.len(), n, len(tb.sources), tb.pinned, pinned)
	case tb.len() > tb.max || held[classUnproven] > tb.unprovenCap:
		t.Fatalf("len %d of %d, unproven %d of %d", tb.len(), tb.max, held[classUnproven], tb.unprovenCap)
	}
	if tb.provenHeld() > tb.provenCap() {
		// Only while every entry of the proven share is pinned.
		for _, c := range []class{classRestored, classProven} {
			if h := tb.heaps[c]; len(h) > 0 && h[0].unpinned > 0 {
				t.Fatalf("proven share %d over its cap %d with %d unpinned entries of %v",
					tb.provenHeld(), tb.provenCap(), h[0].unpinned, h[0].addr)
			}
		}
	}
}

// TestProvenInvariants drives the table with random queries, pins,
// proofs, saves and restarts from a few sources, and checks the
// bookkeeping after every step.
func TestProvenInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 19))
	file := filepath.Join(t.TempDir(), "automap.state")
	srcs := make([]netip.Addr, 12)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{10, 152, 152, byte(20 + i)})
	}
	p := newProvenSet()
	cfg := Config{Proven: p.proven, StateFile: file, MaxEntries: 40, MaxEntriesPerSource: 12, MaxUnprovenEntries: 6}
	s := newServer(t, cfg)
	var releases []func()
	var recycled, refused, unprovenRefused uint64
	add := func(st Stats) {
		recycled, refused, unprovenRefused = recycled+st.Recycled, refused+st.Exhausted, unprovenRefused+st.UnprovenRefused
	}
	for step := range 20000 {
		src := srcs[rng.IntN(len(srcs))]
		switch op := rng.IntN(100); {
		case op < 70:
			name := "n" + strconv.Itoa(rng.IntN(30)) + ".example"
			m := askName(t, s, src, name+".", dnsmessage.TypeA)
			if m.Header.RCode == dnsmessage.RCodeSuccess {
				ip := answerAddr(t, m)
				if got, _, ok := s.Lookup(src, ip); !ok || got != name {
					t.Fatalf("step %d: %s from %v: %v maps to %q, %v", step, name, src, ip, got, ok)
				}
				if rng.IntN(8) == 0 {
					if _, release, _, ok := s.Acquire(src, ip); ok {
						releases = append(releases, release)
					}
				}
			}
		case op < 80 && len(releases) > 0:
			k := rng.IntN(len(releases))
			releases[k]()
			releases = append(releases[:k], releases[k+1:]...)
		case op < 95:
			// Proofs come and go; the table only ever promotes.
			p.set(src, rng.IntN(3) != 0)
		case op < 98:
			must(t, s.Save())
		default:
			for _, release := range releases {
				release()
			}
			releases = nil
			add(s.Stats())
			must(t, s.Close())
			s = newServer(t, cfg)
		}
		checkTable(t, s)
	}
	add(s.Stats())
	t.Logf("over all runs: recycled %d, refused %d (pinned) + %d (unproven)", recycled, refused, unprovenRefused)
}
