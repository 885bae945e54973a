package tunnel

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestHostBudget: in per-destination isolation one workstation cannot
// make Tor build a circuit per host by the hundred: past its budget, new
// hosts share its overflow credentials (its own, never another's); hosts
// already granted keep theirs, and the budget refills with time.
func TestHostBudget(t *testing.T) {
	iso, err := NewIsolator(IsolateDestination, []byte("0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	iso.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("10.152.152.11"), netip.MustParseAddr("10.152.152.12")
	creds := map[string]bool{}
	for i := range 3 * newHostBurst {
		creds[iso.Auth(a, fmt.Sprintf("h%d.example", i)).Username] = true
	}
	if got, want := len(creds), newHostBurst+1; got != want {
		t.Fatalf("%d distinct credentials for one workstation, want %d (burst and one overflow)", got, want)
	}
	if got := iso.Overflow(); got != 2*newHostBurst {
		t.Fatalf("overflow %d, want %d", got, 2*newHostBurst)
	}
	overflowA := iso.Auth(a, "late.example")
	if granted := iso.Auth(a, "h0.example"); granted == overflowA {
		t.Fatal("a granted host lost its own credentials")
	}
	// Another workstation has its own budget and never shares a's
	// overflow credentials.
	if got := iso.Auth(b, "late.example"); got == overflowA {
		t.Fatal("two workstations share overflow credentials")
	}
	now = now.Add(newHostEvery)
	if got := iso.Auth(a, "after.example"); got == overflowA {
		t.Fatal("the budget did not refill")
	}
}
