package dns

// Two files keep the automap safe across restarts.
//
// The epoch file (Config.EpochFile) holds the epoch of virtual addresses
// the current run hands out (see automap.go). New reads it, takes the next
// epoch and writes that back before answering anything, and the table
// writes it again before it moves to another epoch; so a run never hands
// out an address of an epoch an earlier run used, unless 2^epochBits runs
// have passed, even if the earlier run was killed.
//
//	torgate-dns-epoch 1
//	pool4 10.192.0.0/10
//	epoch 17
//	crc32c 5f0e6b1a
//
// The state file (Config.StateFile) keeps the entries themselves, so that
// answers workstations still cache stay valid:
//
//	torgate-dns-automap 2
//	pool4 10.192.0.0/10
//	pool6 fd9d:7a2b:5c1e::/64
//	10.192.0.7 10.152.152.11 example.com
//	10.201.17.5 10.152.152.12 duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion
//	...
//	crc32c 0c39a1d2
//
// Each entry is its address, the workstation it belongs to and the name;
// pinned entries come first, then each source's entries from most to
// least recently used, proven sources before restored ones. Only
// workstations proven at the time of the save are written (Config.Proven;
// issue 19); the format is unchanged by that, so files of either version
// load in the other. Loaded entries are restored ones (see automap.go)
// and fill at most the proven share. Both files end in a CRC-32C of every
// byte before the checksum line. A file that fails the checksum
// (truncated, cut inside a name, bit rot), is written for other pools, or
// has any line that could not have come from this table is discarded
// whole with a warning: a half-trusted table is worse than an empty one,
// which only costs the workstations a lookup. Both are written atomically
// (temporary file, fsync, rename, fsync of the directory) with mode 0600.
//
// Both are read only if they are regular files (issue 19: a FIFO at the
// epoch path hung start-up): looked at before they are opened, opened
// without blocking, looked at again, and read within stateReadTimeout.
//
// Why an address saved in the state file cannot have changed hands after
// the save: within one run an address is handed out at most once per pass
// over the whole pool, and every run hands out a new epoch. So an entry
// loaded from the file is the only mapping its address had since.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	stateMagic = "torgate-dns-automap 2"
	epochMagic = "torgate-dns-epoch 1"
	// maxStateLine bounds one entry line: two addresses, two spaces and
	// a name.
	maxStateLine = 2*46 + 2 + maxNameLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks state and epoch files that fail validation.
var errCorrupt = errors.New("corrupt")

// appendChecksum appends the checksum line over buf.
func appendChecksum(buf []byte) []byte {
	sum := crc32.Checksum(buf, castagnoli)
	buf = append(buf, "crc32c "...)
	buf = append(buf, fmt.Sprintf("%08x", sum)...)
	return append(buf, '\n')
}

// verifyChecksum checks the last line of data and returns the body before
// it.
func verifyChecksum(data []byte) ([]byte, error) {
	const line = len("crc32c 01234567\n")
	n := len(data)
	if n < line || data[n-1] != '\n' || (n > line && data[n-line-1] != '\n') {
		return nil, fmt.Errorf("%w: no checksum line (truncated?)", errCorrupt)
	}
	body, tail := data[:n-line], string(data[n-line:n-1])
	v, ok := strings.CutPrefix(tail, "crc32c ")
	want, err := strconv.ParseUint(v, 16, 32)
	if !ok || err != nil || len(v) != 8 {
		return nil, fmt.Errorf("%w: no checksum line (truncated?)", errCorrupt)
	}
	if got := crc32.Checksum(body, castagnoli); uint64(got) != want {
		return nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return body, nil
}

// stateReadTimeout bounds reading the state or the epoch file, open
// included. The largest state file (about 23 MB at the default
// MaxEntries) reads in well under a second from any local disk; a read
// still going after this long is a hung network or FUSE file system, and
// start-up should say so rather than wait for ever: New takes no context,
// so nothing, SIGTERM included, could end the wait (issue 19).
const stateReadTimeout = 10 * time.Second

// NotRegularError reports a StateFile or EpochFile path that names
// something other than a regular file: a named pipe, a device, a
// directory, a socket, or a symbolic link to one of these. torgate
// refuses to read it (issue 19: a FIFO at automap.epoch hung start-up,
// and a device might never end or act on being opened) and never opens a
// path that is not a regular file when it looks. For EpochFile it is
// fatal: New fails. For StateFile it is logged and the table starts
// empty, as for any unreadable state file. The fix is to remove whatever
// is at Path: torgate writes its own files there.
type NotRegularError struct {
	Path string
	Mode fs.FileMode // type bits of what is there, e.g. fs.ModeNamedPipe
}

var _ error = (*NotRegularError)(nil)

func (e *NotRegularError) Error() string {
	what := "not a regular file"
	switch t := e.Mode.Type(); {
	case t&fs.ModeNamedPipe != 0:
		what = "a named pipe (FIFO)"
	case t&fs.ModeCharDevice != 0:
		what = "a character device"
	case t&fs.ModeDevice != 0:
		what = "a block device"
	case t&fs.ModeDir != 0:
		what = "a directory"
	case t&fs.ModeSocket != 0:
		what = "a socket"
	}
	return "dns: " + e.Path + " is " + what + ", not a regular file (remove it: torgate writes its own)"
}

// ErrReadTimeout means reading a state or epoch file took longer than
// stateReadTimeout; the error wrapping it names the file. Like
// NotRegularError, it is fatal for EpochFile and logged for StateFile.
var ErrReadTimeout = errors.New("dns: state directory read timed out")

// readBounded reads at most limit bytes of path, which must be a regular
// file (see openRegular), within stateReadTimeout. A longer file is
// corrupt.
func readBounded(path string, limit int64) ([]byte, error) {
	data, err := within(stateReadTimeout, func() ([]byte, error) {
		f, err := openRegular(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, limit+1))
	})
	if errors.Is(err, ErrReadTimeout) {
		return nil, fmt.Errorf("%w: %s: no answer within %v (a hung network or FUSE file system?)",
			ErrReadTimeout, path, stateReadTimeout)
	}
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: longer than %d bytes", errCorrupt, limit)
	}
	return data, nil
}

// within runs read and returns its result, or ErrReadTimeout once timeout
// has passed. A read that does not return is left behind: a system call
// stuck in a hung file system cannot be interrupted, and it ends (and
// closes its file) whenever the file system answers. The channel is
// buffered so that it can.
func within(timeout time.Duration, read func() ([]byte, error)) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := read()
		done <- result{data, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.data, r.err
	case <-t.C:
		return nil, ErrReadTimeout
	}
}

// checkRegular returns a *NotRegularError unless fi is a regular file.
func checkRegular(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &NotRegularError{Path: path, Mode: fi.Mode().Type()}
	}
	return nil
}

// checkWritable fails unless a file can be created in dir: New calls it
// so that a read-only or missing state directory is an error at start,
// not a surprise when the table is saved at exit.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".torgate-write-test*")
	if err != nil {
		return err
	}
	name := f.Name()
	err = f.Close()
	return errors.Join(err, os.Remove(name))
}

// Save writes the table to Config.StateFile atomically. Without a
// StateFile it does nothing. Only the entries of workstations that
// Config.Proven reports proven at the time are written (issue 19), so a
// flood from made-up sources does not come back at the next start. Save
// may run while queries are being answered; the table is locked only to
// copy it.
func (m *Map) Save() error {
	if m.stateFile == "" {
		return nil
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	buf := m.marshalState()
	if err := writeAtomic(m.stateFile, buf); err != nil {
		return fmt.Errorf("dns: save state: %w", err)
	}
	return nil
}

// marshalState renders the table in the state file format.
func (m *Map) marshalState() []byte {
	t := m.tab
	t.mu.Lock()
	buf := make([]byte, 0, 128+t.len()*64)
	buf = append(buf, stateMagic+"\npool4 "...)
	buf = m.pool4.AppendTo(buf)
	buf = append(buf, "\npool6 "...)
	buf = m.pool6.AppendTo(buf)
	buf = append(buf, '\n')
	entry := func(sl *slot) {
		buf = netip.AddrFrom4(m.addr4(sl.off)).AppendTo(buf)
		buf = append(buf, ' ')
		buf = sl.src.addr.AppendTo(buf)
		buf = append(buf, ' ')
		buf = append(buf, sl.name...)
		buf = append(buf, '\n')
	}
	// Only the entries of workstations proven now (issue 19): a flood
	// from made-up sources must not come back with the next start, nor
	// be kept over restarts by workstations that never return.
	for _, src := range t.sources {
		src.save = t.proven == nil || t.proven(src.addr)
	}
	for i := range t.slots {
		if sl := &t.slots[i]; sl.pins > 0 && sl.src.save {
			entry(sl)
		}
	}
	// Proven sources first: fill keeps the head of the file if the
	// table shrank.
	for _, c := range [...]class{classProven, classRestored, classUnproven} {
		for _, src := range t.heaps[c] {
			if !src.save {
				continue
			}
			for i := src.head; i != nilSlot; i = t.slots[i].next {
				entry(&t.slots[i])
			}
		}
	}
	t.mu.Unlock()
	return appendChecksum(buf)
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
func (m *Map) load() {
	limit := int64(256 + (m.tab.max+1)*(maxStateLine+1))
	data, err := readBounded(m.stateFile, limit)
	if errors.Is(err, fs.ErrNotExist) {
		m.log.Debug("dns state file absent; starting empty")
		return
	}
	if err == nil {
		var recs []stateRecord
		if recs, err = m.parseState(data); err == nil {
			n := m.fill(recs)
			m.log.Info("dns state loaded", slog.Int("entries", n))
			return
		}
	}
	m.log.Warn("dns state file ignored; starting empty",
		slog.String("file", m.stateFile), slog.Any("error", err))
}

// stateRecord is one entry of a state file.
type stateRecord struct {
	off  uint32
	src  netip.Addr
	name string
}

// parseState validates a whole state file and returns its entries; it
// changes nothing, so a bad file is never half-loaded.
func (m *Map) parseState(data []byte) ([]stateRecord, error) {
	body, err := verifyChecksum(data)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(body), "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("%w: missing header", errCorrupt)
	}
	lines = lines[:len(lines)-1]
	bad := func(i int, what string) error {
		return fmt.Errorf("%w: line %d: %s", errCorrupt, i+1, what)
	}
	if lines[0] != stateMagic {
		return nil, bad(0, "want "+stateMagic)
	}
	if v, ok := strings.CutPrefix(lines[1], "pool4 "); !ok || v != m.pool4.String() {
		return nil, bad(1, "written for another Pool4")
	}
	if v, ok := strings.CutPrefix(lines[2], "pool6 "); !ok || v != m.pool6.String() {
		return nil, bad(2, "written for another Pool6")
	}
	type owned struct {
		src  netip.Addr
		name string
	}
	seenOff := make(map[uint32]bool)
	seenName := make(map[owned]bool)
	var recs []stateRecord
	for i := 3; i < len(lines); i++ {
		line := lines[i]
		if len(line) > maxStateLine {
			return nil, bad(i, "line too long")
		}
		f := strings.Split(line, " ")
		if len(f) != 3 {
			return nil, bad(i, "want address, source and name")
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			return nil, bad(i, "bad address")
		}
		off, _, mappable := m.offset(ip)
		if !ip.Is4() || !mappable {
			return nil, bad(i, "address outside Pool4")
		}
		src, err := netip.ParseAddr(f[1])
		if err != nil || src.Zone() != "" || src.Is4In6() || src.String() != f[1] {
			return nil, bad(i, "bad source")
		}
		if !validName(f[2]) {
			return nil, bad(i, "bad name")
		}
		if seenOff[off] {
			return nil, bad(i, "duplicate address")
		}
		if seenName[owned{src, f[2]}] {
			return nil, bad(i, "duplicate name")
		}
		seenOff[off], seenName[owned{src, f[2]}] = true, true
		recs = append(recs, stateRecord{off: off, src: src, name: f[2]})
	}
	return recs, nil
}

// fill inserts validated records into the empty table, in file order
// (most recent first), skipping those beyond the proven share (MaxEntries
// less the unproven share) or a source's share if the limits shrank. It
// returns the number inserted. The sources are restored ones (see
// automap.go): proven when saved, not yet since.
func (m *Map) fill(recs []stateRecord) int {
	t := m.tab
	t.mu.Lock()
	defer t.mu.Unlock()
	c := classRestored
	if t.proven == nil {
		c = classProven
	}
	for _, r := range recs {
		if t.len() >= t.provenCap() {
			break
		}
		src := t.source(r.src, true, c)
		if src.n >= t.perSrc {
			continue
		}
		t.slots = append(t.slots, slot{})
		t.insert(int32(len(t.slots)-1), src, r.name, r.off, false)
	}
	return t.len()
}

// loadEpoch returns the epoch this run starts in: the one after the epoch
// file's, or a random one if there is no usable file. It writes the new
// epoch back before returning; an error writing it is fatal for New.
func (m *Map) loadEpoch() (uint32, error) {
	mask := uint32(1)<<m.tab.alloc.epochBits - 1
	var rnd [4]byte
	rand.Read(rnd[:]) // never fails (Go 1.24+)
	epoch := (uint32(rnd[0]) | uint32(rnd[1])<<8 | uint32(rnd[2])<<16 | uint32(rnd[3])<<24) & mask
	if m.epochFile == "" {
		return epoch, nil
	}
	data, err := readBounded(m.epochFile, 256)
	switch {
	case errors.As(err, new(*NotRegularError)), errors.Is(err, ErrReadTimeout):
		// Not a file torgate wrote, and writing ours would replace it
		// without a word: the operator should look.
		return 0, err
	case errors.Is(err, fs.ErrNotExist):
		m.log.Info("dns epoch file absent; starting at a random epoch", slog.String("file", m.epochFile))
	case err != nil:
		m.log.Warn("dns epoch file unreadable; starting at a random epoch",
			slog.String("file", m.epochFile), slog.Any("error", err))
	default:
		if prev, perr := m.parseEpoch(data); perr != nil {
			m.log.Warn("dns epoch file ignored; starting at a random epoch",
				slog.String("file", m.epochFile), slog.Any("error", perr))
		} else {
			epoch = (prev + 1) & mask
		}
	}
	if err := m.saveEpoch(epoch); err != nil {
		return 0, err
	}
	return epoch, nil
}

// parseEpoch validates an epoch file and returns its epoch.
func (m *Map) parseEpoch(data []byte) (uint32, error) {
	body, err := verifyChecksum(data)
	if err != nil {
		return 0, err
	}
	want := epochMagic + "\npool4 " + m.pool4.String() + "\nepoch "
	v, ok := strings.CutPrefix(string(body), want)
	if !ok {
		return 0, fmt.Errorf("%w: bad header or written for another Pool4", errCorrupt)
	}
	e, err := strconv.ParseUint(strings.TrimSuffix(v, "\n"), 10, 32)
	if err != nil || !strings.HasSuffix(v, "\n") {
		return 0, fmt.Errorf("%w: bad epoch", errCorrupt)
	}
	return uint32(e), nil
}

// saveEpoch writes the epoch file (the allocator calls it, under the table
// lock, before it moves to a new epoch).
func (m *Map) saveEpoch(epoch uint32) error {
	if m.epochFile == "" {
		return nil
	}
	buf := []byte(epochMagic + "\npool4 " + m.pool4.String() + "\nepoch " + strconv.FormatUint(uint64(epoch), 10) + "\n")
	if err := writeAtomic(m.epochFile, appendChecksum(buf)); err != nil {
		if m.epochLog.allow(m.now()) {
			m.log.Error("dns epoch file not written; new names get SERVFAIL until it is",
				slog.String("file", m.epochFile), slog.Any("error", err))
		}
		return fmt.Errorf("dns: write epoch file: %w", err)
	}
	return nil
}

// openRegular opens path for reading if it is a regular file (a symbolic
// link to one is fine), and returns a *NotRegularError otherwise. It looks
// before it opens, so a device is never opened (opening some acts:
// /dev/watchdog arms the watchdog), opens with openFlags, and checks again
// what it opened.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(path, fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, err
	}
	if fi, err = f.Stat(); err == nil {
		err = checkRegular(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
