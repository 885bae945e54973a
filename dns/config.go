package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/torgate/torgate/internal/dest"
)

// Mode selects how A and AAAA queries for ordinary (non-.onion) names are
// answered. The zero value is ModeAutomap.
type Mode int

const (
	// ModeAutomap answers A/AAAA with a virtual address from the pools, the
	// way Tor's AutomapHostsOnResolve does, and never talks to Tor for DNS.
	// The tunnel later turns the virtual address back into the name and asks
	// Tor to connect to the name. This is the default; see the package doc.
	ModeAutomap Mode = iota
	// ModeResolve resolves A/AAAA and PTR through Config.Resolver (Tor's
	// SOCKS RESOLVE and RESOLVE_PTR). .onion names are still automapped.
	ModeResolve
)

// String returns the flag spelling of m: "automap" or "resolve".
func (m Mode) String() string {
	switch m {
	case ModeAutomap:
		return "automap"
	case ModeResolve:
		return "resolve"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode parses the flag spelling of a Mode ("automap" or "resolve",
// case-insensitive).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "automap":
		return ModeAutomap, nil
	case "resolve":
		return ModeResolve, nil
	}
	return 0, fmt.Errorf("dns: unknown mode %q (want automap or resolve)", s)
}

// MarshalText implements encoding.TextMarshaler, so a Mode works with
// flag.TextVar.
func (m Mode) MarshalText() ([]byte, error) {
	if m != ModeAutomap && m != ModeResolve {
		return nil, fmt.Errorf("dns: invalid mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseMode.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Resolver resolves names through Tor. ModeResolve uses it for A, AAAA and
// PTR queries; ModeAutomap never calls it. The tunnel package implements it
// with SOCKS RESOLVE (0xF0) and RESOLVE_PTR (0xF1), using the isolation
// credentials of src, the workstation that asked, so that a lookup travels
// on the same circuits as that workstation's connections.
//
// Both methods must honour ctx (Server bounds it with ResolveTimeout).
// An error whose chain contains a NotFound() bool method returning true
// (see NotFoundError) is answered with NXDOMAIN; any other error with
// SERVFAIL.
type Resolver interface {
	// Resolve returns one address for name (lowercase, no trailing dot).
	// Tor's RESOLVE yields a single address, IPv4 or IPv6.
	Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error)
	// ResolvePTR returns the name for ip (trailing dot optional).
	ResolvePTR(ctx context.Context, src netip.Addr, ip netip.Addr) (string, error)
}

// NotFoundError is the interface a Resolver error implements (anywhere in
// its Unwrap chain) to say that the name or address does not exist, for
// example a SOCKS reply "host unreachable" (0x04) to RESOLVE. Such errors
// become NXDOMAIN instead of SERVFAIL.
type NotFoundError interface {
	error
	NotFound() bool
}

// Defaults for the zero fields of Config.
var (
	// DefaultPool4 is Whonix-Gateway's VirtualAddrNetworkIPv4.
	DefaultPool4 = netip.MustParsePrefix("10.192.0.0/10")
	// DefaultPool6 is a fixed unique-local /64 (RFC 4193; global ID
	// 9d7a2b5c1e chosen at random for torgate). Whonix uses all of fc00::/7,
	// which would also swallow any ULA network a workstation might know;
	// one /64 is plenty because only its low 32 bits are used.
	DefaultPool6 = netip.MustParsePrefix("fd9d:7a2b:5c1e::/64")
)

const (
	// DefaultMaxEntries bounds the automap table: about 11 MiB of memory
	// (see TestMemoryPerEntry) and far more names than a workstation
	// resolves within one TTL.
	DefaultMaxEntries = 65536
	// DefaultTTL is the TTL of automapped and resolved answers. Short, so
	// that a workstation asks again (and refreshes the entry's LRU position)
	// while it keeps using a name, and so that a recycled virtual address is
	// not cached for long; long enough that browsing does not ask for every
	// request.
	DefaultTTL = 60 * time.Second
	// DefaultResolveTimeout bounds one Resolver call. Tor may build a
	// circuit first, which takes seconds; stub resolvers retry after about
	// 5s, so a longer wait only delays a SERVFAIL nobody reads.
	DefaultResolveTimeout = 10 * time.Second
	// DefaultMaxResolves caps Resolver calls in flight. Each one is a SOCKS
	// connection to Tor; beyond the cap, queries get SERVFAIL at once.
	DefaultMaxResolves = 256

	// DefaultWorkers caps UDP queries being answered at once (each a
	// goroutine, in resolve mode a Tor round trip).
	DefaultWorkers = 256
	// DefaultWorkersPerSource is one workstation's share of Workers: a
	// flood from one workstation leaves the rest to the others.
	DefaultWorkersPerSource = 32
	// DefaultTCPConns caps DNS-over-TCP connections open at once.
	DefaultTCPConns = 256
	// DefaultTCPConnsPerSource is one workstation's share of TCPConns. A
	// resolver opens one connection per query or pipelines a few on one.
	DefaultTCPConnsPerSource = 16
	// DefaultQueryTimeout bounds the answer to one query, over UDP or
	// TCP: above DefaultResolveTimeout, so that a resolve-mode query
	// still gets its SERVFAIL rather than silence.
	DefaultQueryTimeout = 15 * time.Second

	// unprovenShare is the default MaxUnprovenEntries as a divisor of
	// MaxEntries: see Config.MaxUnprovenEntries for why 1/8.
	unprovenShare = 8

	// maxTTL keeps answers from outliving the map by much.
	maxTTL = time.Hour
	// maxMaxEntries keeps slot indexes in an int32.
	maxMaxEntries = 1 << 24
)

// Config configures a Server. Zero values take the documented defaults.
// New validates everything before it returns a Server.
type Config struct {
	// Mode selects automap (default) or resolve. See Mode.
	Mode Mode

	// Map is the automap table to answer from, built by NewMap (the
	// router shares it with its tunnel). Nil: New builds one from the
	// fields below, from Pool4 to EpochFile, which are otherwise the
	// Map's business and ignored here.
	Map *Map

	// Pool4 is the IPv4 range virtual addresses come from. It must be a
	// masked IPv4 prefix between /8 and /24 that overlaps no loopback,
	// multicast or reserved range. Addresses whose last octet is 0 or 255
	// are never handed out. Default DefaultPool4 (10.192.0.0/10).
	Pool4 netip.Prefix
	// Pool6 is the IPv6 range of virtual addresses. It must be a masked
	// IPv6 prefix of at most /96: the virtual IPv6 address of an entry is
	// Pool6 with the entry's virtual IPv4 address in its low 32 bits
	// (fd9d:7a2b:5c1e::10.192.0.7), so A and AAAA for a name map to one
	// entry. Default DefaultPool6.
	Pool6 netip.Prefix
	// MaxEntries bounds the automap table, all workstations together
	// (memory: about 170 bytes per entry, measured 2026-12-02 by TestMemoryPerEntry). When it is full, the least
	// recently used unpinned entry of the workstation holding the most
	// unpinned entries is recycled (among unproven or among proven
	// workstations only, with Proven). Entries a flow has pinned (Acquire) are
	// never recycled. Default DefaultMaxEntries, or half the usable size of
	// Pool4 if that is smaller; an explicit value larger than the usable
	// size of Pool4 is an error.
	MaxEntries int
	// MaxEntriesPerSource is one workstation's share of MaxEntries: a
	// workstation at its share recycles its own least recently used entry
	// for each new name, so a flood of names from one workstation never
	// recycles another's. Default: a quarter of MaxEntries, but at least
	// min(MaxEntries, 1024); at most MaxEntries.
	MaxEntriesPerSource int
	// Proven reports whether the workstation src has shown that it
	// receives our packets: in LAN mode, torgate's own ARP/ND bound it;
	// in TUN mode, it completed a TCP handshake recently. A made-up
	// source address (a spoofed query, whose answer goes nowhere) is
	// never proven. The automap never gives a proven workstation's
	// entries to an unproven one, keeps unproven workstations within
	// MaxUnprovenEntries together, and saves only the entries of
	// workstations proven at the time (issue 19; see the package doc).
	//
	// src is an opaque key: the source passed to Handle, Lookup and
	// Acquire, with any zone dropped and an IPv4-mapped address unmapped.
	// Proven is called on every automapped query, and with the table
	// locked when the table is about to recycle an unproven or restored
	// workstation's entry and, in Save, once per workstation in the
	// table: it must be cheap (a map lookup), safe for concurrent use,
	// and must not call the Server. nil means every source counts as
	// proven, and MaxUnprovenEntries does not apply.
	Proven func(src netip.Addr) bool
	// MaxUnprovenEntries is the share of MaxEntries that unproven sources
	// (see Proven) hold together at most, and also the room kept for
	// them: proven workstations never take it, so a new workstation,
	// whose first query comes before its proof, always finds room, and a
	// flood of made-up sources only ever recycles its own entries.
	// Default MaxEntries/8 (at least 1): 8192 of the default 65536,
	// thousands of times what a real workstation resolves before its
	// first handshake, and an eighth of the table is all a flood can
	// cost the proven ones. It must be less than MaxEntries. Ignored
	// when Proven is nil.
	MaxUnprovenEntries int
	// TTL of every positive answer, between 1s and 1h. Default DefaultTTL.
	TTL time.Duration

	// StateFile, if set, is where the automap table is persisted, so that
	// virtual addresses cached by workstations survive a restart. New loads
	// it (a missing, unreadable, truncated or corrupt file, or one that is
	// not a regular file (NotRegularError), is logged and ignored whole)
	// and fails if its directory is not writable; Save and Close write it
	// atomically (temporary file, fsync, rename, directory fsync) with
	// mode 0600 and a CRC-32C. It lists the hostnames mapped for every
	// workstation Proven reports at the time of the save, and which
	// workstation asked: keep it on storage as private as the
	// workstations' browsing history, or leave it unset.
	StateFile string
	// EpochFile, if set, keeps the address epoch across restarts (see the
	// package doc): New reads it, moves to the next epoch and writes it
	// back before answering, so no address handed out by an earlier run,
	// even one killed with SIGKILL, is handed to another name, until
	// 2^epochBits runs later (64 for pools of /16 or larger; none for
	// pools smaller than /22, which have no room for epochs). New fails if
	// it cannot be written. It holds one number, no names: put it in the
	// state directory, or on a runtime file system (/run/torgate/) without
	// one. New also fails, at once, if the path is anything but a regular
	// file or a symbolic link to one (*NotRegularError: a FIFO there
	// would block a reader for ever), or if it cannot be read within 10s
	// (ErrReadTimeout). Unset, each run starts at a random epoch: a 1 in
	// 64 chance (default pool) of meeting the previous run's epoch, and
	// even then an address is reused only if the new run's permutation
	// picks it.
	EpochFile string

	// Resolver is used in ModeResolve and required there.
	Resolver Resolver
	// ResolveTimeout bounds one Resolver call. Default DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// MaxResolves caps Resolver calls in flight. Default DefaultMaxResolves.
	MaxResolves int

	// Workers caps UDP queries being answered at once (ServeDatagram).
	// Default DefaultWorkers. Queries beyond it are dropped and counted
	// (Stats.Refused, RefusedOverload); clients retry.
	Workers int
	// WorkersPerSource is one workstation's share of Workers. Default
	// DefaultWorkersPerSource, or Workers if that is smaller. The last
	// quarter of Workers is a reserve that only workstations Proven
	// reports, holding fewer than Workers/128 (at least 1), may take
	// (package internal/fair says why). A query over its share is
	// dropped (RefusedShare).
	WorkersPerSource int
	// TCPConns caps DNS-over-TCP connections open at once (ServeTCP);
	// they have their own pool and never hold a UDP worker. Default
	// DefaultTCPConns.
	TCPConns int
	// TCPConnsPerSource is one workstation's share of TCPConns, with the
	// same reserve rule as WorkersPerSource. Default
	// DefaultTCPConnsPerSource, or TCPConns if that is smaller. A
	// connection over it is rejected (RST).
	TCPConnsPerSource int
	// QueryTimeout bounds the answer to one query that ServeDatagram or
	// ServeTCP passes to Handle (resolve mode goes through Tor). Default
	// DefaultQueryTimeout.
	QueryTimeout time.Duration

	// Policy classifies a destination address. A query for a name that
	// is an IP address literal ("127.1", "::ffff:10.0.0.1", "2130706433")
	// is answered here, never automapped or resolved: with the literal
	// itself if Policy allows it, else NXDOMAIN, counted by reason
	// (Stats.Forbidden). A resolve-mode answer it forbids is SERVFAIL.
	// The router passes the one policy its tunnel applies to flows (the
	// gateway's own networks and addresses on top of the built-in rules);
	// nil means the built-in rules (dest.Forbidden).
	Policy *dest.Policy

	// Ready reports whether the Tor that serves workstation who (Handle's
	// src) is usable: with several Tor instances, who's own. While it
	// returns false every well-formed query of who gets SERVFAIL,
	// automapped ones too: fail closed. nil means always ready. It is
	// called once per query, so it must be cheap (an atomic load).
	Ready func(who netip.Addr) bool

	// Logger receives setup, state-file and rate-limited warning messages,
	// never one per query above Debug. nil discards.
	Logger *slog.Logger
	// LogDestinations lets Debug messages include queried names and resolver
	// error texts. Off by default: names are destinations.
	LogDestinations bool
	// Now is the clock (for tests). Default time.Now.
	Now func() time.Time
}

// ConfigError reports an invalid Config field. It is fatal: New returns no
// Server.
type ConfigError struct {
	Field  string // Config field name, e.g. "Pool4"
	Reason string
}

var _ error = (*ConfigError)(nil)

func (e *ConfigError) Error() string {
	return "dns: invalid Config." + e.Field + ": " + e.Reason
}

// reservedV4 are ranges a virtual IPv4 pool must not overlap: the addresses
// there already mean something to every host.
var reservedV4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// reservedV6 is the same for Pool6.
var reservedV6 = []netip.Prefix{
	netip.MustParsePrefix("::/96"), // unspecified, loopback, IPv4-compatible
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// CheckPools checks virtual address pools as NewMap does (a zero prefix
// takes the default), without making a table. Its errors are
// *ConfigError.
func CheckPools(pool4, pool6 netip.Prefix) error {
	_, err := Config{Pool4: pool4, Pool6: pool6}.withDefaults()
	return err
}

// withDefaults returns cfg with zero fields filled in and checks it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Mode != ModeAutomap && cfg.Mode != ModeResolve {
		return cfg, &ConfigError{"Mode", "unknown mode " + strconv.Itoa(int(cfg.Mode))}
	}
	if !cfg.Pool4.IsValid() {
		cfg.Pool4 = DefaultPool4
	}
	if !cfg.Pool6.IsValid() {
		cfg.Pool6 = DefaultPool6
	}
	p4, p6 := cfg.Pool4, cfg.Pool6
	switch {
	case !p4.Addr().Is4():
		return cfg, &ConfigError{"Pool4", p4.String() + " is not an IPv4 prefix"}
	case p4 != p4.Masked():
		return cfg, &ConfigError{"Pool4", p4.String() + " is not masked (want " + p4.Masked().String() + ")"}
	case p4.Bits() < 8 || p4.Bits() > 24:
		return cfg, &ConfigError{"Pool4", p4.String() + ": prefix length must be between /8 and /24"}
	}
	for _, r := range reservedV4 {
		if p4.Overlaps(r) {
			return cfg, &ConfigError{"Pool4", p4.String() + " overlaps reserved range " + r.String()}
		}
	}
	switch {
	case !p6.Addr().Is6() || p6.Addr().Is4In6():
		return cfg, &ConfigError{"Pool6", p6.String() + " is not an IPv6 prefix"}
	case p6.Addr().Zone() != "":
		return cfg, &ConfigError{"Pool6", p6.String() + " has a zone"}
	case p6 != p6.Masked():
		return cfg, &ConfigError{"Pool6", p6.String() + " is not masked (want " + p6.Masked().String() + ")"}
	case p6.Bits() > 96:
		return cfg, &ConfigError{"Pool6", p6.String() + ": prefix length must be at most /96"}
	}
	for _, r := range reservedV6 {
		if p6.Overlaps(r) {
			return cfg, &ConfigError{"Pool6", p6.String() + " overlaps reserved range " + r.String()}
		}
	}
	// An IPv4 and an IPv6 prefix never overlap, but a v4-mapped Pool6 would
	// alias Pool4; reservedV6 rejects those.

	usable := usable4(p4.Bits())
	switch {
	case cfg.MaxEntries < 0:
		return cfg, &ConfigError{"MaxEntries", "negative"}
	case cfg.MaxEntries == 0:
		// Half the pool at most: the allocator then finds a free address
		// of the current epoch in a few steps.
		cfg.MaxEntries = min(DefaultMaxEntries, max(usable/2, 1))
	case cfg.MaxEntries > usable:
		return cfg, &ConfigError{"MaxEntries", strconv.Itoa(cfg.MaxEntries) + " exceeds the " +
			strconv.Itoa(usable) + " usable addresses of Pool4 " + p4.String()}
	case cfg.MaxEntries > maxMaxEntries:
		return cfg, &ConfigError{"MaxEntries", "at most " + strconv.Itoa(maxMaxEntries)}
	}

	switch {
	case cfg.MaxEntriesPerSource < 0:
		return cfg, &ConfigError{"MaxEntriesPerSource", "negative"}
	case cfg.MaxEntriesPerSource == 0:
		cfg.MaxEntriesPerSource = max(cfg.MaxEntries/4, min(cfg.MaxEntries, 1024))
	case cfg.MaxEntriesPerSource > cfg.MaxEntries:
		return cfg, &ConfigError{"MaxEntriesPerSource", strconv.Itoa(cfg.MaxEntriesPerSource) +
			" exceeds MaxEntries " + strconv.Itoa(cfg.MaxEntries)}
	}
	switch {
	case cfg.MaxUnprovenEntries < 0:
		return cfg, &ConfigError{"MaxUnprovenEntries", "negative"}
	case cfg.MaxUnprovenEntries == 0:
		// Below MaxEntries, so that proven sources have room too; a
		// one-entry table leaves unproven ones none.
		cfg.MaxUnprovenEntries = min(max(cfg.MaxEntries/unprovenShare, 1), cfg.MaxEntries-1)
	case cfg.MaxUnprovenEntries >= cfg.MaxEntries:
		return cfg, &ConfigError{"MaxUnprovenEntries", strconv.Itoa(cfg.MaxUnprovenEntries) +
			" is not less than MaxEntries " + strconv.Itoa(cfg.MaxEntries) + " (proven workstations need room too)"}
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < time.Second || cfg.TTL > maxTTL:
		return cfg, &ConfigError{"TTL", cfg.TTL.String() + " is outside [1s, 1h]"}
	}
	switch {
	case cfg.ResolveTimeout == 0:
		cfg.ResolveTimeout = DefaultResolveTimeout
	case cfg.ResolveTimeout < 0:
		return cfg, &ConfigError{"ResolveTimeout", "negative"}
	}
	switch {
	case cfg.MaxResolves == 0:
		cfg.MaxResolves = DefaultMaxResolves
	case cfg.MaxResolves < 0:
		return cfg, &ConfigError{"MaxResolves", "negative"}
	}
	for _, l := range []struct {
		field, perField string
		v, per          *int
		def, perDef     int
	}{
		{"Workers", "WorkersPerSource", &cfg.Workers, &cfg.WorkersPerSource, DefaultWorkers, DefaultWorkersPerSource},
		{"TCPConns", "TCPConnsPerSource", &cfg.TCPConns, &cfg.TCPConnsPerSource, DefaultTCPConns, DefaultTCPConnsPerSource},
	} {
		switch {
		case *l.v < 0:
			return cfg, &ConfigError{l.field, "negative"}
		case *l.v == 0:
			*l.v = l.def
		}
		switch {
		case *l.per < 0:
			return cfg, &ConfigError{l.perField, "negative"}
		case *l.per == 0:
			*l.per = min(l.perDef, *l.v)
		case *l.per > *l.v:
			return cfg, &ConfigError{l.perField, strconv.Itoa(*l.per) + " exceeds " + l.field + " " + strconv.Itoa(*l.v)}
		}
	}
	switch {
	case cfg.QueryTimeout == 0:
		cfg.QueryTimeout = DefaultQueryTimeout
	case cfg.QueryTimeout < 0:
		return cfg, &ConfigError{"QueryTimeout", "negative"}
	}
	if cfg.Mode == ModeResolve && cfg.Resolver == nil {
		return cfg, &ConfigError{"Resolver", "required in resolve mode"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// usable4 is the number of addresses of a masked IPv4 prefix of the given
// length (at most /24) whose last octet is neither 0 nor 255.
func usable4(bits int) int {
	size := 1 << (32 - bits)
	return size - size/256*2
}

// ErrDrop is returned by Server.Handle, with a nil response, for input that
// gets no answer at all: shorter than a DNS header, or with the QR
// (response) bit set, which answering would turn into a reflection loop.
// It is counted (ResultDropped) and not fatal; the caller sends nothing.
var ErrDrop = errors.New("dns: query dropped")
