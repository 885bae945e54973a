package tunnel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/torgate/torgate/socks"
)

// IsolationMode decides which flows share Tor circuits. Tor isolates
// streams by SOCKS username and password (IsolateSOCKSAuth, on by
// default), so the mode decides which flows get the same credentials.
type IsolationMode int

const (
	// IsolateSource gives each workstation address its own circuits; the
	// flows (and DNS lookups) of one source share them. The default.
	IsolateSource IsolationMode = iota
	// IsolateDestination gives each (source, destination host) pair its
	// own circuits: stronger unlinkability, more circuits.
	IsolateDestination
	// IsolateNone puts every source on the same credentials. Only for a
	// gateway with a single workstation, or for benchmarks.
	IsolateNone
)

// ParseIsolationMode parses the flag spelling of a mode.
func ParseIsolationMode(s string) (IsolationMode, error) {
	switch s {
	case "source", "per-source", "":
		return IsolateSource, nil
	case "destination", "per-destination", "source+destination":
		return IsolateDestination, nil
	case "none":
		return IsolateNone, nil
	}
	return 0, fmt.Errorf("unknown isolation mode %q (want source, destination or none)", s)
}

// String returns the flag spelling.
func (m IsolationMode) String() string {
	switch m {
	case IsolateSource:
		return "source"
	case IsolateDestination:
		return "destination"
	case IsolateNone:
		return "none"
	}
	return fmt.Sprintf("IsolationMode(%d)", int(m))
}

// maxEpochs bounds the per-source epoch table. Past it the table is
// cleared and the global epoch moves on: every source gets a new
// identity, which is safe (never less isolation), just costly.
const maxEpochs = 1 << 16

// Isolator derives SOCKS credentials. Credentials are an HMAC of the
// source (and destination host in IsolateDestination) under a random
// per-run secret, so Tor, its logs and its control port learn nothing about
// workstation addresses, and two runs never share circuits by accident.
// An epoch per source, bumped by NewIdentity, rotates one source's
// credentials without touching the others.
type Isolator struct {
	mode   IsolationMode
	secret []byte
	pool   sync.Pool // of hash.Hash (HMAC state)

	mu     sync.Mutex
	global uint64                     // guarded by mu
	epochs map[netip.Addr]uint64      // guarded by mu
	cache  map[netip.Addr]cachedAuth  // guarded by mu; not in IsolateDestination
	hosts  map[netip.Addr]*hostBudget // guarded by mu; IsolateDestination hosts, and SOCKS-port credentials (PortAuth)
	now    func() time.Time

	overflow atomic.Uint64 // hosts beyond a source's budget (hostBudget)
}

// In IsolateDestination every (workstation, host) pair is a circuit of its
// own, so a workstation that names many hosts makes Tor build a circuit
// for each: hundreds a second from one hostile workstation (issue 19,
// measured 2026-12-04: 1,502 distinct credentials in 10 s). A workstation
// gets newHostBurst hosts at once, then one per newHostEvery; past that,
// its flows to hosts it has not used yet share one more set of credentials
// of its own (its circuits, never another workstation's), counted as
// isolation_overflow. A host once granted keeps its circuit while the
// workstation's record lives (maxHostsPerSource).
const (
	newHostBurst      = 64
	newHostEvery      = time.Second
	maxHostsPerSource = 1024
)

// hostBudget is one workstation's record of granted hosts.
type hostBudget struct {
	tokens  int
	at      time.Time // last refill
	granted map[string]struct{}
}

// cachedAuth is a source's credentials as of its epoch and the global
// one. A source's credentials change only with those, so its flows share
// one HMAC and two strings instead of computing them each (seven
// allocations and ~1 µs per flow, measured 2026-12-02).
type cachedAuth struct {
	epoch, global uint64
	auth          socks.Auth
}

// maxCachedAuth bounds the credential cache; past it the cache starts
// over.
const maxCachedAuth = 4096

// NewIsolator returns an Isolator. A nil secret draws 32 random bytes.
func NewIsolator(mode IsolationMode, secret []byte) (*Isolator, error) {
	if mode < IsolateSource || mode > IsolateNone {
		return nil, fmt.Errorf("tunnel: invalid isolation mode %d", mode)
	}
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("tunnel: isolation secret: %w", err)
		}
	}
	if len(secret) < 16 {
		return nil, errors.New("tunnel: isolation secret shorter than 16 bytes")
	}
	i := &Isolator{mode: mode, secret: secret, epochs: make(map[netip.Addr]uint64), cache: make(map[netip.Addr]cachedAuth),
		hosts: make(map[netip.Addr]*hostBudget), now: time.Now}
	i.pool.New = func() any { return hmac.New(sha256.New, i.secret) }
	return i, nil
}

// Mode returns the isolation mode.
func (i *Isolator) Mode() IsolationMode { return i.mode }

// Auth returns the credentials for a flow or lookup from src to host. host
// is the destination name or address text; it only matters in
// IsolateDestination and is compared case-insensitively.
func (i *Isolator) Auth(src netip.Addr, host string) socks.Auth {
	src = src.Unmap()
	if i.mode == IsolateNone {
		src = netip.Addr{} // one identity for all
	}
	i.mu.Lock()
	global, epoch := i.global, i.epochs[src]
	c, ok := i.cache[src]
	i.mu.Unlock()
	if i.mode == IsolateDestination {
		if !i.grant(src, host) {
			host = "" // the workstation's overflow credentials
		}
		return i.derive(src, host, epoch, global) // per host: not cached
	}
	if ok && c.epoch == epoch && c.global == global {
		return c.auth
	}
	auth := i.derive(src, host, epoch, global)
	i.mu.Lock()
	if len(i.cache) >= maxCachedAuth {
		clear(i.cache)
	}
	i.cache[src] = cachedAuth{epoch: epoch, global: global, auth: auth}
	i.mu.Unlock()
	return auth
}

// grant reports whether src may have host's own credentials (see
// newHostBurst).
func (i *Isolator) grant(src netip.Addr, host string) bool {
	host = strings.ToLower(host)
	now := i.now()
	i.mu.Lock()
	defer i.mu.Unlock()
	b := i.hosts[src]
	if b == nil {
		if len(i.hosts) >= maxCachedAuth {
			clear(i.hosts) // everyone starts over with a full budget
		}
		b = &hostBudget{tokens: newHostBurst, at: now, granted: make(map[string]struct{})}
		i.hosts[src] = b
	}
	if _, ok := b.granted[host]; ok {
		return true
	}
	if add := int(now.Sub(b.at) / newHostEvery); add > 0 {
		b.tokens = min(newHostBurst, b.tokens+add)
		b.at = b.at.Add(time.Duration(add) * newHostEvery)
	}
	if b.tokens == 0 {
		i.overflow.Add(1)
		return false
	}
	b.tokens--
	if len(b.granted) >= maxHostsPerSource {
		clear(b.granted)
	}
	b.granted[host] = struct{}{}
	return true
}

// Overflow counts flows and lookups that went on a workstation's
// overflow credentials (newHostBurst).
func (i *Isolator) Overflow() uint64 { return i.overflow.Load() }

// derive computes the credentials: an HMAC of mode, source, epochs and (in
// IsolateDestination) host.
func (i *Isolator) derive(src netip.Addr, host string, epoch, global uint64) socks.Auth {
	var buf [16 + 8 + 8 + 1]byte
	b := buf[:0]
	b = append(b, byte(i.mode))
	if i.mode != IsolateNone {
		a := src.As16()
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint64(b, epoch)
	}
	b = binary.BigEndian.AppendUint64(b, global)

	h := i.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(b)
	if i.mode == IsolateDestination {
		h.Write([]byte(strings.ToLower(host)))
	}
	var sum [sha256.Size]byte
	mac := h.Sum(sum[:0])
	i.pool.Put(h)
	return authFromMAC(mac)
}

// authFromMAC renders a derivation's MAC as credentials.
func authFromMAC(mac []byte) socks.Auth {
	// "tg-" keeps us clear of the "<torS0X>" prefix that Tor's proposal
	// 351 reserves, and makes our streams recognisable in Tor's logs.
	var user [3 + 24]byte
	copy(user[:], "tg-")
	hex.Encode(user[3:], mac[:12])
	var pass [40]byte
	hex.Encode(pass[:], mac[12:32])
	return socks.Auth{Username: string(user[:]), Password: string(pass[:])}
}

// NewIdentity rotates src's credentials: its next flows get new circuits,
// other sources keep theirs. Flows already open keep their circuit.
func (i *Isolator) NewIdentity(src netip.Addr) {
	i.mu.Lock()
	defer i.mu.Unlock()
	src = src.Unmap()
	if _, ok := i.epochs[src]; !ok && len(i.epochs) >= maxEpochs {
		clear(i.epochs)
		i.global++
	}
	i.epochs[src]++
}

// NewIdentityAll rotates every source's credentials.
func (i *Isolator) NewIdentityAll() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.global++
}

// portTag opens the input of every SOCKS-port derivation (PortAuth). Its
// first byte is no IsolationMode, and the transparent path's input (derive)
// starts with the mode, so no stream of one path can be given the other's
// credentials, whatever a workstation chooses to send.
const portTag = "\xfftorgate socks port v1"

// PortAuth returns the credentials towards Tor for a stream (or lookup)
// that the workstation who asked for on torgate's SOCKS port port, having
// sent the username user and password pass (nil when it sent none; for
// SOCKS4, the user ID and nil), to host (the destination name or address
// text; it only matters in IsolateDestination and is compared
// case-insensitively).
//
// They are derived, like Auth's, from those inputs and who's new-identity
// epoch under the per-run secret, never passed through: so Tor Browser's
// per-site credentials and a port per application keep isolating streams
// from each other, two workstations sending the same credentials get
// different ones, no workstation can choose credentials that equal
// another's or the transparent path's, and NewIdentity(who) rotates these
// too. IsolateNone leaves who out (benchmarks only).
//
// A workstation chooses user and pass freely, so each distinct set is a
// circuit Tor must build. Each new set takes a token of who's budget
// (newHostBurst, shared with IsolateDestination's hosts); past it the
// stream goes on who's overflow credentials for that port, counted in
// Overflow: a workstation cycling through credentials gets a circuit a
// second, and only ever its own.
func (i *Isolator) PortAuth(who netip.Addr, port uint16, user, pass []byte, host string) socks.Auth {
	who = who.Unmap()
	key := who
	if i.mode == IsolateNone {
		key = netip.Addr{} // one identity for all
	}
	if i.mode != IsolateDestination {
		host = ""
	}
	i.mu.Lock()
	global, epoch := i.global, i.epochs[key]
	i.mu.Unlock()
	auth := i.derivePort(key, port, user, pass, host, epoch, global, false)
	// The budget is the workstation's, whatever the mode. Its key is the
	// derived username (96 bits of the MAC): fixed-size, so a record holds
	// maxHostsPerSource of them however long the credentials, and it
	// changes with the epoch. The NUL keeps it apart from hostnames.
	if !i.grant(who, "\x00"+auth.Username) {
		auth = i.derivePort(key, port, nil, nil, "", epoch, global, true)
	}
	return auth
}

// derivePort computes PortAuth's credentials: an HMAC of portTag, mode,
// workstation and epochs (unless IsolateNone), port and, unless overflow,
// the client's username, password and host, each with its length so that
// no two inputs run together.
func (i *Isolator) derivePort(key netip.Addr, port uint16, user, pass []byte, host string, epoch, global uint64, overflow bool) socks.Auth {
	var buf [len(portTag) + 2 + 16 + 8 + 8 + 2]byte
	b := append(buf[:0], portTag...)
	b = append(b, byte(i.mode), 0)
	if overflow {
		b[len(b)-1] = 1
	}
	if i.mode != IsolateNone {
		a := key.As16()
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint64(b, epoch)
	}
	b = binary.BigEndian.AppendUint64(b, global)
	b = binary.BigEndian.AppendUint16(b, port)

	h := i.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(b)
	if !overflow {
		for _, f := range [][]byte{user, pass, []byte(strings.ToLower(host))} {
			var n [4]byte
			h.Write(binary.BigEndian.AppendUint32(n[:0], uint32(len(f))))
			h.Write(f)
		}
	}
	var sum [sha256.Size]byte
	mac := h.Sum(sum[:0])
	i.pool.Put(h)
	return authFromMAC(mac)
}
