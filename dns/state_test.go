package dns

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "automap.state")
	s1, err := New(Config{StateFile: file, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netip.Addr{}
	for i := range 6 {
		name := "h" + strconv.Itoa(i) + ".example"
		want[name] = mapName(t, s1, name)
	}
	onion := "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"
	want[onion] = mapName(t, s1, onion)
	_, release, _, _ := s1.Acquire(want["h0.example"]) // pinned: saved too
	defer release()
	mapName(t, s1, "h5.example") // most recent
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}

	s2 := newServer(t, Config{StateFile: file, MaxEntries: 8})
	if s2.Len() != len(want) {
		t.Errorf("loaded %d entries, want %d", s2.Len(), len(want))
	}
	for name, ip := range want {
		if got, _, ok := s2.Lookup(ip); !ok || got != name {
			t.Errorf("Lookup(%v) = %q, %v; want %q", ip, got, ok, name)
		}
		if got := mapName(t, s2, name); got != ip {
			t.Errorf("%s moved from %v to %v", name, ip, got)
		}
	}
	// The cursor was saved: a new name does not reuse an old address.
	if ip := mapName(t, s2, "new.example"); ip == netip.MustParseAddr("10.192.0.1") {
		t.Errorf("cursor not restored")
	}

	// Recency survives: with room for 3, the 3 most recent entries of the
	// file are kept. The pinned h0 was saved first, then h5, the onion...
	s3 := newServer(t, Config{StateFile: file, MaxEntries: 3})
	if s3.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s3.Len())
	}
	for _, name := range []string{"h0.example", "h5.example", onion} {
		if _, _, ok := s3.Lookup(want[name]); !ok {
			t.Errorf("%s not kept", name)
		}
	}
}

func TestStateCorrupt(t *testing.T) {
	good := "torgate-dns-automap 1\npool4 10.192.0.0/10\npool6 fd9d:7a2b:5c1e::/64\ncursor 3\n10.192.0.1 a.example\n10.192.0.2 b.example\n"
	tests := []struct {
		name, content string
	}{
		{"empty", ""},
		{"garbage", "\x00\xff\xfe garbage \n\n\n"},
		{"wrong magic", strings.Replace(good, "automap 1", "automap 2", 1)},
		{"other pool4", strings.Replace(good, "10.192.0.0/10", "10.128.0.0/10", 1)},
		{"other pool6", strings.Replace(good, "fd9d:7a2b:5c1e::/64", "fc00::/7", 1)},
		{"truncated header", good[:40]},
		{"bad cursor", strings.Replace(good, "cursor 3", "cursor 99999999999", 1)},
		{"address outside pool", good + "192.0.2.1 c.example\n"},
		{"unusable address", good + "10.192.1.0 c.example\n"},
		{"IPv6 address", good + "fd9d:7a2b:5c1e::ac0:3 c.example\n"},
		{"duplicate name", good + "10.192.0.3 a.example\n"},
		{"duplicate address", good + "10.192.0.2 c.example\n"},
		{"uppercase name", good + "10.192.0.3 C.example\n"},
		{"bad name", good + "10.192.0.3 c..example\n"},
		{"no name", good + "10.192.0.3\n"},
		{"long line", good + "10.192.0.3 " + strings.Repeat("a", 5000) + "\n"},
		{"binary", good + "\x00\x01\x02\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "state")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			log, lb := debugLogger()
			s := newServer(t, Config{StateFile: file, Logger: log})
			if s.Len() != 0 {
				t.Errorf("loaded %d entries from a bad file", s.Len())
			}
			if !strings.Contains(lb.String(), "dns state file ignored") {
				t.Errorf("not logged:\n%s", lb.String())
			}
			// It still works, and saving replaces the bad file.
			mapName(t, s, "x.example")
			if err := s.Save(); err != nil {
				t.Fatal(err)
			}
			if s2 := newServer(t, Config{StateFile: file}); s2.Len() != 1 {
				t.Errorf("reloaded %d entries", s2.Len())
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		os.WriteFile(file, []byte(good), 0o600)
		s := newServer(t, Config{StateFile: file})
		if n, _, ok := s.Lookup(netip.MustParseAddr("10.192.0.2")); !ok || n != "b.example" {
			t.Errorf("Lookup = %q, %v", n, ok)
		}
		// The cursor was 3: the next new name gets 10.192.0.3.
		if ip := mapName(t, s, "c.example"); ip != netip.MustParseAddr("10.192.0.3") {
			t.Errorf("c.example = %v", ip)
		}
	})
	t.Run("missing", func(t *testing.T) {
		s := newServer(t, Config{StateFile: filepath.Join(t.TempDir(), "nope")})
		if s.Len() != 0 {
			t.Errorf("Len %d", s.Len())
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		// A directory where the file should be: New still works, Save fails.
		dir := t.TempDir()
		log, lb := debugLogger()
		s := newServer(t, Config{StateFile: dir, Logger: log})
		if s.Len() != 0 || !strings.Contains(lb.String(), "dns state file") {
			t.Errorf("Len %d, log:\n%s", s.Len(), lb.String())
		}
		askName(t, s, srcA, "x.example.", dnsmessage.TypeA)
		if err := s.Save(); err == nil {
			t.Errorf("Save over a directory succeeded")
		}
		entries, _ := os.ReadDir(filepath.Dir(dir))
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file left: %s", e.Name())
			}
		}
	})
}

func TestSaveWithoutStateFile(t *testing.T) {
	s := newServer(t, Config{})
	mapName(t, s, "x.example")
	if err := s.Save(); err != nil {
		t.Errorf("Save without a file: %v", err)
	}
}
