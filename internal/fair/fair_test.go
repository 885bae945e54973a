package fair

import (
	"net/netip"
	"testing"
	"time"
)

func TestAdmit(t *testing.T) {
	l := Limits{Global: 100, PerSource: 20, Reserve: 25, MinShare: 4}
	for _, tc := range []struct {
		name          string
		total, held   int
		proven, admit bool
	}{
		{name: "empty pool", total: 0, held: 0, admit: true},
		{name: "per-source cap", total: 20, held: 20, proven: true, admit: false},
		{name: "last bulk slot", total: 74, held: 3, admit: true},
		{name: "reserve, unproven", total: 75, held: 0, admit: false},
		{name: "reserve, proven below min share", total: 75, held: 3, proven: true, admit: true},
		{name: "reserve, proven at min share", total: 75, held: 4, proven: true, admit: false},
		{name: "full", total: 100, held: 0, proven: true, admit: false},
	} {
		if got := l.Admit(tc.total, tc.held, tc.proven); got != tc.admit {
			t.Errorf("%s: Admit(%d, %d, %v) = %v, want %v", tc.name, tc.total, tc.held, tc.proven, got, tc.admit)
		}
	}
}

// TestSpoofedCrowd: any number of spoofed sources hold at most the bulk;
// a proven source still gets its min share.
func TestSpoofedCrowd(t *testing.T) {
	proof := NewProof(time.Hour, 16, nil)
	p, err := NewPool(Default(1024, 128), proof.Has)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for i := range 5000 {
		a := netip.AddrFrom4([4]byte{10, 152, byte(128 + i/256%64), byte(i)})
		if p.Acquire(a) {
			got++
		}
	}
	if got != 1024-256 {
		t.Fatalf("spoofed crowd got %d slots, want the bulk %d", got, 1024-256)
	}
	good := netip.MustParseAddr("10.152.152.12")
	if p.Acquire(good) {
		t.Fatal("unproven source got a reserve slot")
	}
	proof.Mark(good)
	n := 0
	for p.Acquire(good) {
		n++
	}
	if n != 8 {
		t.Fatalf("proven source got %d reserve slots, want 8", n)
	}
	p.Release(good)
	if h, _ := p.Held(good); h != 7 {
		t.Fatalf("held %d after release, want 7", h)
	}
}

func TestProofBounded(t *testing.T) {
	now := time.Unix(0, 0)
	p := NewProof(time.Minute, 3, func() time.Time { return now })
	for i := range 10 {
		now = now.Add(time.Second)
		p.Mark(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	if len(p.seen) != 3 {
		t.Fatalf("%d entries, want 3", len(p.seen))
	}
	if !p.Has(netip.AddrFrom4([4]byte{10, 0, 0, 9})) || p.Has(netip.AddrFrom4([4]byte{10, 0, 0, 0})) {
		t.Fatal("kept the wrong entries")
	}
	now = now.Add(2 * time.Minute)
	if p.Has(netip.AddrFrom4([4]byte{10, 0, 0, 9})) {
		t.Fatal("expired proof still held")
	}
}

// TestTakeSaysWhy: a refusal at the source's cap is atShare; one because
// the pool is full is not.
func TestTakeSaysWhy(t *testing.T) {
	p, err := NewPool(Limits{Global: 4, PerSource: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	for _, src := range []netip.Addr{a, a, b, b} {
		if ok, _ := p.Take(src); !ok {
			t.Fatalf("Take(%v) refused below the limits", src)
		}
	}
	if ok, atShare := p.Take(a); ok || !atShare {
		t.Fatalf("Take at the source's cap: ok %v atShare %v, want false true", ok, atShare)
	}
	if ok, atShare := p.Take(c); ok || atShare {
		t.Fatalf("Take with the pool full: ok %v atShare %v, want false false", ok, atShare)
	}
}
