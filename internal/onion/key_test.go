package onion

import (
	"crypto/ed25519"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// The vector: a key from the seed 00 01 .. 1f, given to tor 0.4.9.11 as
// "ADD_ONION ED25519-V3:<expanded> Port=80,unix:/tmp/ovec/s.sock" on a
// tor started with --DisableNetwork 1 (2026-12-05); tor answered with
// ServiceID vectorID.
const (
	vectorExpanded = "ED25519-V3:OJTupJxYCu+BaTV2K+BJVZ1tFEDe3hLmoSXxhB//jm+p1xhio+V0a1cb49GHsAQQRvUuvYUMfL1f3o7jhHO2SQ=="
	vectorPub      = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
	vectorID       = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead"
)

func vectorKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// TestTorVector: the expanded key torgate hands Tor and the address it
// derives agree with what tor itself made of the same key.
func TestTorVector(t *testing.T) {
	key := vectorKey()
	if got := torKey(key); got != vectorExpanded {
		t.Errorf("torKey = %s\nwant     %s", got, vectorExpanded)
	}
	pub := key.Public().(ed25519.PublicKey)
	if got := ServiceID(pub); got != vectorID {
		t.Errorf("ServiceID = %s, tor says %s", got, vectorID)
	}
	if got := Address(pub); got != vectorID+".onion" {
		t.Errorf("Address = %s", got)
	}
}

// TestKeyStore: a key is made once, kept 0600 in a 0700 directory, read
// back the same (so the address survives restarts), tightened if someone
// loosened it, and listed with its address.
func TestKeyStore(t *testing.T) {
	state := t.TempDir()
	a := netip.MustParseAddr("10.152.152.11")
	k1, created, err := loadOrCreateKey(state, a)
	if err != nil || !created {
		t.Fatalf("first load: created=%v err=%v", created, err)
	}
	checkMode(t, KeyDir(state), 0o700)
	checkMode(t, keyPath(state, a), 0o600)

	if err := os.Chmod(keyPath(state, a), 0o644); err != nil {
		t.Fatal(err)
	}
	k2, created, err := loadOrCreateKey(state, a)
	if err != nil || created {
		t.Fatalf("second load: created=%v err=%v", created, err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the key changed between loads")
	}
	checkMode(t, keyPath(state, a), 0o600)

	b := netip.MustParseAddr("fd19:c33d:88bc::11")
	k3, _, err := loadOrCreateKey(state, b)
	if err != nil {
		t.Fatal(err)
	}
	if k3.Equal(k1) {
		t.Fatal("two services share a key")
	}
	// Noise in the directory is ignored.
	os.WriteFile(filepath.Join(KeyDir(state), "README"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(KeyDir(state), "notanaddress.key"), []byte("x"), 0o600)

	got, err := List(state)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stored{
		{Target: a, Address: Address(k1.Public().(ed25519.PublicKey)), File: keyPath(state, a)},
		{Target: b, Address: Address(k3.Public().(ed25519.PublicKey)), File: keyPath(state, b)},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("List = %+v\nwant %+v", got, want)
	}
	if l, err := List(t.TempDir()); err != nil || len(l) != 0 {
		t.Errorf("List of an empty state dir = %v, %v", l, err)
	}
}

// TestKeyStoreBadFile: a damaged key file is an error naming it, never
// silently replaced (that would change the service's address).
func TestKeyStoreBadFile(t *testing.T) {
	state := t.TempDir()
	a := netip.MustParseAddr("10.152.152.11")
	if err := os.MkdirAll(KeyDir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath(state, a), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateKey(state, a); !errors.Is(err, ErrKey) {
		t.Errorf("load of a bad file = %v, want ErrKey", err)
	}
	if b, _ := os.ReadFile(keyPath(state, a)); string(b) != "garbage" {
		t.Error("the bad file was overwritten")
	}
	if _, err := List(state); !errors.Is(err, ErrKey) {
		t.Errorf("List with a bad file = %v, want ErrKey", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}
