package dns

// The state file is text, one record per line:
//
//	torgate-dns-automap 1
//	pool4 10.192.0.0/10
//	pool6 fd9d:7a2b:5c1e::/64
//	cursor 1234
//	10.192.0.7 example.com
//	10.192.0.5 duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion
//	...
//
// Entries run from most to least recently used, pinned ones first. A file
// written for other pools is ignored (the addresses would mean nothing),
// and so is any file with a malformed line, a duplicate, or an address or
// name that could not have come from this table: a half-trusted table is
// worse than an empty one, which only costs the workstations a lookup.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	stateMagic = "torgate-dns-automap 1"
	// maxStateLine bounds one line: an address, a space and a name.
	maxStateLine = 64 + maxNameLen
)

// errCorrupt marks state files that fail validation.
var errCorrupt = errors.New("corrupt")

// Save writes the table to Config.StateFile atomically: a temporary file in
// the same directory, fsync, rename, fsync of the directory. The file is
// created with mode 0600. Without a StateFile it does nothing. Save may run
// while queries are being answered; the table is locked only to copy it.
func (s *Server) Save() error {
	if s.stateFile == "" {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	buf := s.marshalState()
	if err := writeAtomic(s.stateFile, buf); err != nil {
		return fmt.Errorf("dns: save state: %w", err)
	}
	return nil
}

// marshalState renders the table in the state file format.
func (s *Server) marshalState() []byte {
	t := s.tab
	t.mu.Lock()
	defer t.mu.Unlock()
	buf := make([]byte, 0, 128+t.len()*48)
	buf = append(buf, stateMagic+"\npool4 "...)
	buf = s.pool4.AppendTo(buf)
	buf = append(buf, "\npool6 "...)
	buf = s.pool6.AppendTo(buf)
	buf = append(buf, "\ncursor "...)
	buf = strconv.AppendUint(buf, uint64(t.cursor), 10)
	buf = append(buf, '\n')
	entry := func(sl *slot) {
		buf = netip.AddrFrom4(s.addr4(sl.off)).AppendTo(buf)
		buf = append(buf, ' ')
		buf = append(buf, sl.name...)
		buf = append(buf, '\n')
	}
	for i := range t.slots {
		if sl := &t.slots[i]; sl.pins > 0 {
			entry(sl)
		}
	}
	for i := t.head; i != nilSlot; i = t.slots[i].next {
		entry(&t.slots[i])
	}
	return buf
}

// writeAtomic replaces path with data so that a crash leaves either the old
// or the new file, never a mix.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename durable. Not every file system can sync a
	// directory; the data is in place either way.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// load fills the table from the state file. Every failure is logged and
// leaves the table empty.
func (s *Server) load() {
	f, err := os.Open(s.stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Debug("dns state file absent; starting empty")
		return
	}
	if err != nil {
		s.log.Warn("dns state file unreadable; starting empty", slog.Any("error", err))
		return
	}
	defer f.Close()
	t, err := s.parseState(f)
	if err != nil {
		s.log.Warn("dns state file ignored; starting empty",
			slog.String("file", s.stateFile), slog.Any("error", err))
		return
	}
	s.tab = t
	s.log.Info("dns state loaded", slog.Int("entries", t.len()))
}

// parseState reads a state file into a new table. Entries beyond MaxEntries
// (the least recently used, if MaxEntries shrank) are dropped.
func (s *Server) parseState(r io.Reader) (*table, error) {
	t := newTable(s.tab.size, s.tab.max)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxStateLine)
	line := 0
	bad := func(what string) error {
		return fmt.Errorf("%w: line %d: %s", errCorrupt, line, what)
	}
	header := func(want string) (string, error) {
		line++
		if !sc.Scan() {
			return "", bad("missing header")
		}
		v, ok := strings.CutPrefix(sc.Text(), want)
		if !ok {
			return "", bad("want " + strings.TrimSpace(want))
		}
		return v, nil
	}
	if _, err := header(stateMagic); err != nil {
		return nil, err
	}
	v, err := header("pool4 ")
	if err != nil {
		return nil, err
	}
	if p, err := netip.ParsePrefix(v); err != nil || p != s.pool4 {
		return nil, bad("written for another Pool4")
	}
	if v, err = header("pool6 "); err != nil {
		return nil, err
	}
	if p, err := netip.ParsePrefix(v); err != nil || p != s.pool6 {
		return nil, bad("written for another Pool6")
	}
	if v, err = header("cursor "); err != nil {
		return nil, err
	}
	c, err := strconv.ParseUint(v, 10, 32)
	if err != nil || c >= uint64(t.size) {
		return nil, bad("bad cursor")
	}
	t.cursor = uint32(c)
	for sc.Scan() {
		line++
		if t.len() >= t.max {
			break // MaxEntries shrank: drop the least recently used
		}
		a, name, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if !ok {
			return nil, bad("want address and name")
		}
		ip, err := netip.ParseAddr(string(a))
		if err != nil {
			return nil, bad("bad address")
		}
		off, _, mappable := s.offset(ip)
		if !ip.Is4() || !mappable {
			return nil, bad("address outside Pool4")
		}
		if !validName(string(name)) {
			return nil, bad("bad name")
		}
		if _, dup := t.byOff[off]; dup {
			return nil, bad("duplicate address")
		}
		if _, dup := t.byName[string(name)]; dup {
			return nil, bad("duplicate name")
		}
		n := string(name)
		t.slots = append(t.slots, slot{name: n, off: off, prev: nilSlot, next: nilSlot})
		i := int32(len(t.slots) - 1)
		t.byName[n] = i
		t.byOff[off] = i
		t.pushBack(i)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %w", errCorrupt, line+1, err)
	}
	return t, nil
}
