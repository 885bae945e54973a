package dns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Map is the automap table: the virtual addresses handed to each
// workstation and the names they stand for, with the address epoch and
// the state file that carry it across restarts. The router builds it
// first and hands it to both sides that use it: the Server, which hands
// out addresses, and the tunnel, which turns a flow's virtual address
// back into its name (Acquire). Neither side needs the other. It is safe
// for concurrent use.
type Map struct {
	pool4, pool6 netip.Prefix
	base4        uint32   // first address of pool4
	base6        [16]byte // first address of pool6
	stateFile    string
	epochFile    string
	proven       func(netip.Addr) bool // nil: every source proven
	log          *slog.Logger
	now          func() time.Time

	tab *table

	epochLog rateLimit
	saveMu   sync.Mutex // serializes Save
	closed   atomic.Bool
}

// NewMap checks the table's part of cfg (Pool4, Pool6, MaxEntries,
// MaxEntriesPerSource, Proven, MaxUnprovenEntries, StateFile, EpochFile,
// Logger, Now; Mode and Resolver are the Server's and ignored here) and
// returns the table. It takes the next address epoch from cfg.EpochFile and writes it
// back, and checks that the state file's directory is writable; either
// failing is an error (wrapping the file system's), so a bad state
// directory shows at start. If cfg.StateFile exists, the table is loaded
// from it; a missing, corrupt or unreadable file is logged and leaves the
// table empty, never an error. Neither file is opened unless it is a
// regular file, and reading either is bounded in time: NewMap does not
// block on a FIFO or a hung file system (see NotRegularError,
// ErrReadTimeout). Configuration errors are *ConfigError.
func NewMap(cfg Config) (*Map, error) {
	cfg.Mode, cfg.Resolver = ModeAutomap, nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return newMap(cfg)
}

// newMap is NewMap of a checked cfg.
func newMap(cfg Config) (*Map, error) {
	b4 := cfg.Pool4.Addr().As4()
	epochBits, offBits := splitPool(uint(32 - cfg.Pool4.Bits()))
	m := &Map{
		pool4:     cfg.Pool4,
		pool6:     cfg.Pool6,
		base4:     uint32(b4[0])<<24 | uint32(b4[1])<<16 | uint32(b4[2])<<8 | uint32(b4[3]),
		base6:     cfg.Pool6.Addr().As16(),
		stateFile: cfg.StateFile,
		epochFile: cfg.EpochFile,
		proven:    cfg.Proven,
		log:       cfg.Logger,
		now:       cfg.Now,
		tab: newTable(allocator{offBits: offBits, epochBits: epochBits},
			cfg.MaxEntries, cfg.MaxEntriesPerSource, cfg.MaxUnprovenEntries, cfg.Proven),
	}
	m.epochLog.every = time.Minute
	for _, f := range []string{m.stateFile, m.epochFile} {
		if f == "" {
			continue
		}
		if err := checkWritable(filepath.Dir(f)); err != nil {
			return nil, fmt.Errorf("dns: state directory of %s is not writable (torgate saves the automap there; "+
				"fix its owner or permissions, or choose another directory): %w", f, err)
		}
	}
	epoch, err := m.loadEpoch()
	if err != nil {
		return nil, err
	}
	m.tab.alloc.epoch = epoch
	m.tab.alloc.rekey()
	if m.epochFile != "" && epochBits > 0 {
		m.tab.alloc.advance = m.saveEpoch
	}
	if m.stateFile != "" {
		m.load()
	}
	m.log.Info("dns automap table ready",
		slog.String("pool4", m.pool4.String()),
		slog.String("pool6", m.pool6.String()),
		slog.Int("max_entries", cfg.MaxEntries),
		slog.Int("max_entries_per_source", cfg.MaxEntriesPerSource),
		slog.Int("max_unproven_entries", m.tab.unprovenCap),
		slog.Int("epoch", int(epoch)),
		slog.Int("epochs", 1<<epochBits),
		slog.Int("entries", m.Len()))
	return m, nil
}

// Close saves the table to the state file, if one is configured. Only
// the first call saves; Lookup and Acquire keep working.
func (m *Map) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	return m.Save()
}

// Discard closes the table without saving it: a router that failed to
// start leaves the state file as it found it (it would otherwise write
// the table under a configuration that was refused).
func (m *Map) Discard() { m.closed.Store(true) }
