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

// mapFrom automaps name for src and returns its IPv4 address.
func mapFrom(t testing.TB, s *Server, src netip.Addr, name string) netip.Addr {
	t.Helper()
	return answerAddr(t, askName(t, s, src, name+".", dnsmessage.TypeA))
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "automap.state")
	epoch := filepath.Join(dir, "automap.epoch")
	s1, err := New(Config{StateFile: file, EpochFile: epoch, MaxEntries: 8})
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
	bAddr := mapFrom(t, s1, srcB, "h1.example")              // B's own entry for the same name
	_, release, _, _ := s1.Acquire(srcA, want["h0.example"]) // pinned: saved too
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
	if len(entries) != 2 {
		t.Errorf("left behind: %v", entries)
	}

	s2 := newServer(t, Config{StateFile: file, EpochFile: epoch, MaxEntries: 8})
	if s2.Len() != len(want)+1 {
		t.Errorf("loaded %d entries, want %d", s2.Len(), len(want)+1)
	}
	for name, ip := range want {
		if got, _, ok := s2.Lookup(srcA, ip); !ok || got != name {
			t.Errorf("Lookup(%v) = %q, %v; want %q", ip, got, ok, name)
		}
		if got := mapName(t, s2, name); got != ip {
			t.Errorf("%s moved from %v to %v", name, ip, got)
		}
	}
	// Ownership survives: B's entry is B's only.
	if got, _, ok := s2.Lookup(srcB, bAddr); !ok || got != "h1.example" {
		t.Errorf("B's entry after reload: %q, %v", got, ok)
	}
	if _, _, ok := s2.Lookup(srcA, bAddr); ok {
		t.Errorf("B's entry resolves for A after reload")
	}

	// Recency survives: with room for 3, the 3 most recent entries of the
	// file are kept. The pinned h0 was saved first, then A's h5, the onion...
	s3 := newServer(t, Config{StateFile: file, MaxEntries: 3})
	if s3.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s3.Len())
	}
	for _, name := range []string{"h0.example", "h5.example", onion} {
		if _, _, ok := s3.Lookup(srcA, want[name]); !ok {
			t.Errorf("%s not kept", name)
		}
	}
}

// goodState is a valid state file body without its checksum line.
const goodState = "torgate-dns-automap 2\npool4 10.192.0.0/10\npool6 fd9d:7a2b:5c1e::/64\n" +
	"10.192.0.1 10.152.152.11 a.example\n10.192.0.2 10.152.152.11 b.example\n10.192.0.3 10.152.152.12 a.example\n"

func withSum(body string) string { return string(appendChecksum([]byte(body))) }

// TestStateCorrupt (issue 11: a state file cut inside a name loaded
// "10.192.0.31 q25.exampl" and torgate connected to the truncated name):
// a file that is truncated anywhere, damaged, or not what this table
// could have written is discarded whole, with a warning.
func TestStateCorrupt(t *testing.T) {
	good := withSum(goodState)
	tests := []struct {
		name, content string
	}{
		{"empty", ""},
		{"garbage", "\x00\xff\xfe garbage \n\n\n"},
		{"no checksum", goodState},
		{"bad checksum", goodState + "crc32c 00000000\n"},
		{"bit flip in a name", strings.Replace(good, "b.example", "c.example", 1)},
		{"version 1", "torgate-dns-automap 1\npool4 10.192.0.0/10\npool6 fd9d:7a2b:5c1e::/64\ncursor 3\n10.192.0.1 a.example\n"},
		{"wrong magic", withSum(strings.Replace(goodState, "automap 2", "automap 3", 1))},
		{"other pool4", withSum(strings.Replace(goodState, "pool4 10.192.0.0/10", "pool4 10.128.0.0/10", 1))},
		{"other pool6", withSum(strings.Replace(goodState, "fd9d:7a2b:5c1e::/64", "fc00::/7", 1))},
		{"address outside pool", withSum(goodState + "192.0.2.1 10.152.152.11 c.example\n")},
		{"unusable address", withSum(goodState + "10.192.1.0 10.152.152.11 c.example\n")},
		{"IPv6 address", withSum(goodState + "fd9d:7a2b:5c1e::ac0:4 10.152.152.11 c.example\n")},
		{"duplicate name", withSum(goodState + "10.192.0.4 10.152.152.11 a.example\n")},
		{"duplicate address", withSum(goodState + "10.192.0.2 10.152.152.12 c.example\n")},
		{"bad source", withSum(goodState + "10.192.0.4 10.152.152 c.example\n")},
		{"mapped source", withSum(goodState + "10.192.0.4 ::ffff:10.152.152.11 c.example\n")},
		{"uppercase name", withSum(goodState + "10.192.0.4 10.152.152.11 C.example\n")},
		{"bad name", withSum(goodState + "10.192.0.4 10.152.152.11 c..example\n")},
		{"no name", withSum(goodState + "10.192.0.4 10.152.152.11\n")},
		{"long line", withSum(goodState + "10.192.0.4 10.152.152.11 " + strings.Repeat("a", 5000) + "\n")},
		{"binary", withSum(goodState + "\x00\x01\x02\n")},
	}
	// Truncated at every byte: never half-loaded.
	for n := 1; n < len(good); n++ {
		tests = append(tests, struct{ name, content string }{"truncated at " + strconv.Itoa(n), good[:n]})
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
				t.Fatalf("loaded %d entries from a bad file", s.Len())
			}
			if !strings.Contains(lb.String(), "dns state file ignored") {
				t.Errorf("not logged:\n%s", lb.String())
			}
			if strings.HasPrefix(tt.name, "truncated") {
				return
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
		if n, _, ok := s.Lookup(srcA, netip.MustParseAddr("10.192.0.2")); !ok || n != "b.example" {
			t.Errorf("Lookup = %q, %v", n, ok)
		}
		if n, _, ok := s.Lookup(srcB, netip.MustParseAddr("10.192.0.3")); !ok || n != "a.example" {
			t.Errorf("Lookup B = %q, %v", n, ok)
		}
		if _, _, ok := s.Lookup(srcB, netip.MustParseAddr("10.192.0.2")); ok {
			t.Errorf("A's entry resolves for B")
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

// TestStateDirNotWritable (issue 11: a read-only or missing state dir was
// silent at start and failed only when saving at exit): New fails with a
// clear error. A regular file in the path stands in for a read-only
// directory, since root ignores permission bits.
func TestStateDirNotWritable(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{StateFile: filepath.Join(notDir, "automap.state")},
		{StateFile: filepath.Join(dir, "missing", "automap.state")},
		{EpochFile: filepath.Join(notDir, "automap.epoch")},
	} {
		s, err := New(cfg)
		if err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", cfg)
			continue
		}
		if !strings.Contains(err.Error(), "not writable") {
			t.Errorf("New(%+v): %v, want a not-writable error", cfg, err)
		}
	}
}

// TestNoReuseAcrossRestarts (issue 11: after a restart, A's cached address
// for bank-of-a.example was handed to B's evil-b.example): whether the
// previous run saved its table, was stopped cleanly without a state file,
// or was killed, no address it handed out maps to a different name after
// the restart, for any source.
func TestNoReuseAcrossRestarts(t *testing.T) {
	tests := []struct {
		name  string
		state bool // with a state file
		kill  bool // no Close: nothing saved after the first run's start
	}{
		{name: "state file, clean stop", state: true},
		{name: "state file, SIGKILL", state: true, kill: true},
		{name: "epoch file only, clean stop"},
		{name: "epoch file only, SIGKILL", kill: true},
	}
	const names = 3000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{EpochFile: filepath.Join(dir, "automap.epoch")}
			if tt.state {
				cfg.StateFile = filepath.Join(dir, "automap.state")
			}
			type owned struct {
				src  netip.Addr
				name string
			}
			before := map[netip.Addr]owned{}
			for run := range 5 {
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if tt.state && run > 0 && !tt.kill && s.Len() == 0 {
					t.Errorf("run %d: state not loaded", run)
				}
				for i := range names {
					if tt.state && i == names/2 {
						// A save in the middle of the run, then more
						// names: what a periodic save followed by
						// SIGKILL leaves behind.
						if err := s.Save(); err != nil {
							t.Fatal(err)
						}
					}
					src := srcA
					if i%2 == 1 {
						src = srcB
					}
					name := "r" + strconv.Itoa(run) + "n" + strconv.Itoa(i) + ".example"
					ip := mapFrom(t, s, src, name)
					if prev, ok := before[ip]; ok && prev != (owned{src, name}) {
						t.Fatalf("run %d: %v was %s for %v before a restart, now %s for %v", run, ip, prev.name, prev.src, name, src)
					}
					before[ip] = owned{src, name}
				}
				// Every address handed out before maps to its own name
				// or to nothing, never to another name.
				for ip, o := range before {
					for _, src := range []netip.Addr{srcA, srcB} {
						if got, _, ok := s.Lookup(src, ip); ok && (src != o.src || got != o.name) {
							t.Fatalf("run %d: %v -> %q for %v, was %q for %v", run, ip, got, src, o.name, o.src)
						}
					}
				}
				if !tt.kill {
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestEpochFile: each start takes the next epoch, persisted at once; a
// corrupt file is ignored with a warning; a run that uses up an epoch
// moves on and persists that first; within a run no address is handed
// out twice in a pass over the pool.
func TestEpochFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "epoch")
	read := func() uint32 {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		s := newServer(t, Config{})
		e, err := s.parseEpoch(data)
		if err != nil {
			t.Fatalf("epoch file: %v", err)
		}
		return e
	}
	s1 := newServer(t, Config{EpochFile: file})
	e1 := read()
	if s1.tab.alloc.epoch != e1 {
		t.Fatalf("running epoch %d, file %d", s1.tab.alloc.epoch, e1)
	}
	s2 := newServer(t, Config{EpochFile: file}) // no Close of s1: a kill
	if e2 := read(); e2 != (e1+1)%64 || s2.tab.alloc.epoch != e2 {
		t.Fatalf("second run epoch %d (file %d), first %d", s2.tab.alloc.epoch, e2, e1)
	}
	// Corrupt: ignored whole, with a warning.
	data, _ := os.ReadFile(file)
	os.WriteFile(file, data[:len(data)-3], 0o600)
	log, lb := debugLogger()
	newServer(t, Config{EpochFile: file, Logger: log})
	if !strings.Contains(lb.String(), "dns epoch file ignored") {
		t.Errorf("corrupt epoch file not reported:\n%s", lb.String())
	}
	read()

	// A /20 has 4 epochs of 1024 addresses; 3000 names from one source
	// (share 1024) recycle and use up epochs.
	file2 := filepath.Join(dir, "epoch20")
	s := newServer(t, Config{Pool4: netip.MustParsePrefix("10.192.0.0/20"), EpochFile: file2})
	if s.tab.alloc.epochBits != 2 || s.tab.alloc.offBits != 10 {
		t.Fatalf("split %d/%d", s.tab.alloc.epochBits, s.tab.alloc.offBits)
	}
	start := s.tab.alloc.epoch
	seen := map[netip.Addr]bool{}
	usable := 4 * 1016 // per pass over the pool
	for i := range usable {
		ip := mapName(t, s, "e"+strconv.Itoa(i)+".example")
		if seen[ip] {
			t.Fatalf("%v handed out twice within one pass (%d names)", ip, i)
		}
		seen[ip] = true
	}
	data, _ = os.ReadFile(file2)
	e, err := s.parseEpoch(data)
	if err != nil {
		t.Fatal(err)
	}
	if e != s.tab.alloc.epoch || e == start {
		t.Errorf("epoch file %d, running %d, started %d", e, s.tab.alloc.epoch, start)
	}
}

func TestSaveWithoutStateFile(t *testing.T) {
	s := newServer(t, Config{})
	mapName(t, s, "x.example")
	if err := s.Save(); err != nil {
		t.Errorf("Save without a file: %v", err)
	}
}
