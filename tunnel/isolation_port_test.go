package tunnel

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestPortAuth: a SOCKS-port stream's credentials follow the workstation,
// the port, the client's own credentials and the workstation's epoch,
// never the client's raw credentials, and never equal the transparent
// path's.
func TestPortAuth(t *testing.T) {
	iso, err := NewIsolator(IsolateSource, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, p := []byte("example.com"), []byte("nonce1")
	base := iso.PortAuth(srcA, 9150, u, p, "x")
	if again := iso.PortAuth(srcA, 9150, []byte("example.com"), []byte("nonce1"), "y"); again != base {
		t.Error("equal inputs gave different credentials (or the host counted in source mode)")
	}
	if base.Username == string(u) || base.Password == string(p) {
		t.Error("client credentials passed through")
	}
	for name, other := range map[string]struct {
		who        netip.Addr
		port       uint16
		user, pass string
	}{
		"port":            {srcA, 9100, "example.com", "nonce1"},
		"username":        {srcA, 9150, "example.org", "nonce1"},
		"password":        {srcA, 9150, "example.com", "nonce2"},
		"workstation":     {srcB, 9150, "example.com", "nonce1"},
		"boundary":        {srcA, 9150, "example.comn", "once1"},
		"no credentials":  {srcA, 9150, "", ""},
		"username only":   {srcA, 9150, "example.com", ""},
		"mapped is equal": {netip.AddrFrom16(srcA.As16()), 9150, "example.com", "nonce1"},
	} {
		got := iso.PortAuth(other.who, other.port, []byte(other.user), []byte(other.pass), "")
		if (got == base) != (name == "mapped is equal") {
			t.Errorf("%s: credentials %v, base %v", name, got, base)
		}
	}
	// Nothing a client sends reaches the transparent path's credentials.
	if iso.PortAuth(srcA, 9050, nil, nil, "") == iso.Auth(srcA, "") {
		t.Error("SOCKS-port and transparent credentials are equal")
	}
	// NewIdentity(who) rotates who's port credentials, nobody else's.
	b := iso.PortAuth(srcB, 9150, u, p, "")
	iso.NewIdentity(srcA)
	if iso.PortAuth(srcA, 9150, u, p, "") == base {
		t.Error("NewIdentity kept the workstation's SOCKS-port credentials")
	}
	if iso.PortAuth(srcB, 9150, u, p, "") != b {
		t.Error("NewIdentity of one workstation rotated another's")
	}
	if iso.Overflow() != 0 {
		t.Errorf("overflow %d within the budget", iso.Overflow())
	}
}

func TestPortAuthModes(t *testing.T) {
	dst, _ := NewIsolator(IsolateDestination, nil)
	if dst.PortAuth(srcA, 9050, nil, nil, "a.example") == dst.PortAuth(srcA, 9050, nil, nil, "b.example") {
		t.Error("destination mode: two hosts share credentials")
	}
	if dst.PortAuth(srcA, 9050, nil, nil, "A.example") != dst.PortAuth(srcA, 9050, nil, nil, "a.example") {
		t.Error("destination mode: host case matters")
	}
	none, _ := NewIsolator(IsolateNone, nil)
	if none.PortAuth(srcA, 9050, nil, nil, "") != none.PortAuth(srcB, 9050, nil, nil, "") {
		t.Error("no isolation: workstations differ")
	}
	if none.PortAuth(srcA, 9050, nil, nil, "") == none.PortAuth(srcA, 9100, nil, nil, "") {
		t.Error("no isolation: ports must still isolate")
	}
}

// TestPortAuthBudget: a workstation cycling through credentials gets its
// burst of circuits, then one a second; the rest go on its own overflow
// credentials (one per port), never another workstation's, and are
// counted.
func TestPortAuthBudget(t *testing.T) {
	iso, _ := NewIsolator(IsolateSource, []byte("0123456789abcdef0123"))
	now := time.Unix(1_000_000, 0)
	iso.now = func() time.Time { return now }
	creds := map[string]bool{}
	for i := range 3 * newHostBurst {
		creds[iso.PortAuth(srcA, 9150, fmt.Appendf(nil, "site%d", i), []byte("p"), "").Username] = true
	}
	if got, want := len(creds), newHostBurst+1; got != want {
		t.Fatalf("%d distinct credentials, want %d (burst and one overflow)", got, want)
	}
	if got := iso.Overflow(); got != 2*newHostBurst {
		t.Fatalf("overflow %d, want %d", got, 2*newHostBurst)
	}
	over := iso.PortAuth(srcA, 9150, []byte("late"), nil, "")
	if iso.PortAuth(srcA, 9150, []byte("site0"), []byte("p"), "") == over {
		t.Fatal("granted credentials were lost")
	}
	if iso.PortAuth(srcA, 9100, []byte("late"), nil, "") == over {
		t.Fatal("overflow credentials of two ports are equal")
	}
	if iso.PortAuth(srcB, 9150, []byte("late"), nil, "") == over {
		t.Fatal("another workstation got the overflow credentials")
	}
	now = now.Add(newHostEvery)
	if iso.PortAuth(srcA, 9150, []byte("after"), nil, "") == over {
		t.Fatal("the budget did not refill")
	}
}
