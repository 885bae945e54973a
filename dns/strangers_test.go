package dns

import (
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// TestCrossSource (issue 11: B connecting to A's virtual address got
// CONNECT secret-a.example; a PTR sweep from B learned 2,618 of other
// workstations' names): an address answers only the source that looked
// it up. For any other source, Lookup, Acquire and PTR behave exactly as
// for an address never handed out.
func TestCrossSource(t *testing.T) {
	s := newServer(t, Config{})
	a4 := mapFrom(t, s, srcA, "secret-a.example")
	a6 := answerAddr(t, askName(t, s, srcA, "secret-a.example.", dnsmessage.TypeAAAA))
	b4 := mapFrom(t, s, srcB, "secret-a.example")
	if a4 == b4 {
		t.Fatalf("A and B share %v", a4)
	}
	tests := []struct {
		src  netip.Addr
		ip   netip.Addr
		want string // "" = unmapped for src
	}{
		{src: srcA, ip: a4, want: "secret-a.example"},
		{src: srcA, ip: a6, want: "secret-a.example"},
		{src: netip.AddrFrom16(srcA.As16()), ip: a4, want: "secret-a.example"}, // mapped source: same workstation
		{src: srcB, ip: a4},
		{src: srcB, ip: a6},
		{src: srcB, ip: netip.AddrFrom16(a4.As16())},
		{src: srcA, ip: b4},
		{src: netip.MustParseAddr("10.152.152.99"), ip: a4},
		{src: netip.MustParseAddr("fd19:7a2b::11"), ip: a6},
	}
	for _, tt := range tests {
		name, virtual, ok := s.Lookup(tt.src, tt.ip)
		if !virtual || ok != (tt.want != "") || name != tt.want {
			t.Errorf("Lookup(%v, %v) = %q, %v, %v; want %q", tt.src, tt.ip, name, virtual, ok, tt.want)
		}
		name, release, virtual, ok := s.Acquire(tt.src, tt.ip)
		if !virtual || ok != (tt.want != "") || name != tt.want {
			t.Errorf("Acquire(%v, %v) = %q, %v, %v; want %q", tt.src, tt.ip, name, virtual, ok, tt.want)
		}
		release()
		m := askName(t, s, tt.src, reverseName(tt.ip), dnsmessage.TypePTR)
		if tt.want == "" {
			wantRCode(t, m, dnsmessage.RCodeNameError)
		} else if got := answerPTR(t, m); got != tt.want+"." {
			t.Errorf("PTR from %v for %v = %q", tt.src, tt.ip, got)
		}
	}
	// A PTR sweep from B over the neighbourhood of A's address finds
	// nothing.
	base := a4.As4()
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{base[0], base[1], byte(i >> 8), byte(i)})
		if m := askName(t, s, srcB, reverseName(ip), dnsmessage.TypePTR); len(m.Answers) != 0 && ip != b4 {
			t.Fatalf("B's PTR sweep learned %v", ip)
		}
	}
}

// TestUnpredictable (issue 11: addresses were allocated strictly in
// sequence, .76, .77, .78): consecutive names get addresses with no
// simple relation, spread over the pool.
func TestUnpredictable(t *testing.T) {
	s := newServer(t, Config{})
	const n = 2000
	var prev uint32
	seq, deltas := 0, map[uint32]int{}
	buckets := map[byte]bool{}
	for i := range n {
		a := mapName(t, s, "u"+strconv.Itoa(i)+".example").As4()
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		if i > 0 {
			d := v - prev
			if d == 1 {
				seq++
			}
			deltas[d]++
		}
		buckets[a[2]] = true
		prev = v
	}
	// With a random permutation of 65536 addresses, a step of exactly +1
	// has probability ~1/65536 each; a sequence would give n-1.
	if seq > 5 {
		t.Errorf("%d of %d steps were +1", seq, n-1)
	}
	for d, c := range deltas {
		if c > 5 {
			t.Errorf("step %d repeated %d times: predictable", int32(d), c)
		}
	}
	// The third octet takes most of its 256 values.
	if len(buckets) < 200 {
		t.Errorf("addresses cover only %d /24s", len(buckets))
	}
}

// TestFloodStaysHome (issue 11: 200k names from one workstation recycled
// 136k entries, and B's name, within its TTL, then got a RST): a source's
// flood recycles its own entries only.
func TestFloodStaysHome(t *testing.T) {
	const flood = 200_000
	s := newServer(t, Config{})
	bNames := map[netip.Addr]string{}
	for i := range 500 {
		name := "b" + strconv.Itoa(i) + ".example"
		bNames[mapFrom(t, s, srcB, name)] = name
	}
	q := buildQuery(t, "n0000000.example.", dnsmessage.TypeA, queryOpts{})
	resp := make([]byte, 0, 512)
	for i := range flood {
		copy(q[14:21], strconv.Itoa(1000000+i))
		out, err := s.Handle(t.Context(), srcA, q, true, resp)
		if err != nil || out[3]&0xf != 0 {
			t.Fatalf("query %d failed: %v, rcode %d", i, err, out[3]&0xf)
		}
	}
	for ip, name := range bNames {
		if got, _, ok := s.Lookup(srcB, ip); !ok || got != name {
			t.Fatalf("B's %s (%v) lost to A's flood: %q, %v", name, ip, got, ok)
		}
	}
	st := s.Stats()
	per := DefaultMaxEntries / 4
	if st.Entries != per+len(bNames) || st.Recycled != uint64(flood-per) {
		t.Errorf("Entries %d, Recycled %d; want %d, %d", st.Entries, st.Recycled, per+len(bNames), flood-per)
	}
	t.Logf("flood of %d names from A: %d entries of A kept, %d recycled (all A's), B's %d intact",
		flood, per, st.Recycled, len(bNames))

	// Many flooding sources fill the table: the one holding the most
	// gives way, so B, holding fewer, keeps its entries.
	for j := range 8 {
		src := netip.AddrFrom4([4]byte{10, 152, 153, byte(j)})
		for i := range per {
			copy(q[14:21], strconv.Itoa(2000000+i))
			if _, err := s.Handle(t.Context(), src, q, true, resp); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s.Len() != DefaultMaxEntries {
		t.Errorf("Len %d", s.Len())
	}
	for ip, name := range bNames {
		if got, _, ok := s.Lookup(srcB, ip); !ok || got != name {
			t.Fatalf("B's %s lost to a many-source flood", name)
		}
	}
}

// TestOwnShareAllPinned: a source whose entries are all pinned gets
// SERVFAIL for new names; other sources are unaffected.
func TestOwnShareAllPinned(t *testing.T) {
	s := newServer(t, Config{MaxEntries: 8, MaxEntriesPerSource: 2})
	for i := range 2 {
		ip := mapName(t, s, "p"+strconv.Itoa(i)+".example")
		_, release, _, ok := s.Acquire(srcA, ip)
		if !ok {
			t.Fatal("Acquire failed")
		}
		defer release()
	}
	wantRCode(t, askName(t, s, srcA, "new.example.", dnsmessage.TypeA), dnsmessage.RCodeServerFailure)
	mapFrom(t, s, srcB, "new.example")
	if st := s.Stats(); st.Exhausted != 1 {
		t.Errorf("Exhausted %d", st.Exhausted)
	}
}
