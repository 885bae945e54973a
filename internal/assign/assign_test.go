package assign

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestPicker: a workstation's instance is stable (same key, same
// instance; an IPv4-mapped address is the same workstation), the spread
// over instances is even, and another key gives another assignment.
func TestPicker(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeyLen)
	const n, hosts = 3, 3000
	p, again := New(key, n), New(key, n)
	var count [n]int
	moved := 0
	other := New(bytes.Repeat([]byte{8}, KeyLen), n)
	for i := range hosts {
		a := netip.AddrFrom4([4]byte{10, 152, byte(i >> 8), byte(i)})
		k := p.Pick(a)
		if again.Pick(a) != k || p.Pick(netip.AddrFrom16(a.As16())) != k {
			t.Fatalf("%v: instance not stable", a)
		}
		count[k]++
		if other.Pick(a) != k {
			moved++
		}
	}
	for k, c := range count {
		if c < hosts/n*8/10 || c > hosts/n*12/10 {
			t.Errorf("instance %d got %d of %d workstations: %v", k, c, hosts, count)
		}
	}
	if moved < hosts/2 {
		t.Errorf("another key moved only %d of %d workstations", moved, hosts)
	}
}

// TestInstanceKey: the key is drawn once and kept in StateDir; a key of
// the wrong length is refused, not replaced.
func TestInstanceKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := Key(dir, nil)
	if err != nil || len(k1) != KeyLen {
		t.Fatalf("first key: %d bytes, %v", len(k1), err)
	}
	k2, err := Key(dir, nil)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second run got another key (%v)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Key(dir, nil); err == nil {
		t.Fatal("short key accepted")
	}
	secret := bytes.Repeat([]byte{1}, 32)
	if k, _ := Key("", secret); !bytes.Equal(k, secret) {
		t.Fatal("without a StateDir the isolation secret is the key")
	}
}
