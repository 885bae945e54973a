package dns

import (
	"container/heap"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
)

// The automap table maps (workstation, name) to virtual addresses and back.
//
// Workstations are strangers to each other (issue 11). Every entry belongs
// to the source address that looked the name up: only that source can
// resolve the address back to the name (a flow from another source gets
// a RST, a PTR query NXDOMAIN), and the same name looked up by two sources
// gets two entries with two different addresses. One address namespace
// for all sources, each address owned by one entry, rather than per-source
// address spaces: an address then means one thing in logs, in the state
// file and in the tunnel, and a source guessing an address learns nothing,
// since another source's address and a never-used one both get a RST.
//
// Addresses. Pool4 is split into 2^epochBits epochs of 2^offBits
// addresses (the default /10: 64 epochs of 65536). Each run of torgate
// takes the next epoch (persisted in Config.EpochFile) and hands out the
// addresses of that epoch in the order of a keyed pseudo-random
// permutation (a Feistel network with a fresh random key per epoch), so
// within a run an address is handed out at most once per pass over the
// pool, and the next address cannot be predicted from earlier ones. When
// an epoch's addresses are used up the run moves to the next epoch, after
// persisting it. So an address handed to one name is handed to another
// only after every other address of the pool (about four million with
// the defaults), or after 2^epochBits restarts: never within a TTL in
// practice, across restarts too, without a state file and after a SIGKILL
// (see EpochFile for the cases that weaken this). The entry's IPv6 address
// is Pool6 with the IPv4 address in its low 32 bits, so A and AAAA agree.
//
// Shares. The table holds at most max entries; each source at most
// perSource. A source at its cap recycles its own least recently used
// entry. When a share is full, the entry recycled is the least recently
// used one of the source with the most recyclable (unpinned) entries, so a
// source is never made to give way while another holds more than it: one
// workstation's flood of names recycles its own entries only. Entries
// pinned by a flow (Acquire) are never recycled.
//
// Proof (issue 19). One workstation can ask from thousands of made-up
// source addresses that never receive an answer; with the shares alone,
// every real workstation then gives way to them. So every source is in one
// of three classes (Config.Proven decides):
//
//   - unproven: has not shown that it receives our packets. Unproven
//     sources together hold at most unprovenCap entries (default 1/8 of
//     the table), and recycle only each other's entries: a flood of
//     spoofed sources turns over its own share, never anyone else's.
//   - proven: has shown it. Proven and restored sources together hold at
//     most max-unprovenCap entries, and recycle only each other's: a
//     proven source's new name recycles a restored source's entry first
//     (the source holding the most), then a proven one's.
//   - restored: loaded from the state file, and not heard from since.
//     Save writes proven sources only, so they were proven when saved
//     (files of earlier versions hold anyone's). They are in the proven
//     share, out of unproven sources' reach, but give way first. A
//     restored source that asks for a new name before it is proven again
//     recycles its own least recently used entry: it keeps its room but
//     can neither grow nor take anyone else's.
//
// The unproven share is a reservation as well as a cap: proven sources
// never take its room or its entries, even when they have filled their
// own. A workstation's first query comes before its proof (in TUN mode the
// proof is a TCP handshake, and the query is for the address to connect
// to), and entries never expire, so a long-running gateway's table is
// always full: if proven sources could recycle unproven entries, they
// would, and a new workstation would find neither room nor an unproven
// entry to recycle, on every query, for good.
//
// A source moves only upwards, to proven: when it asks while Proven reports
// true, or when it is about to lose an entry as an unproven or restored
// source and Proven now reports true. Never down: a proven workstation that
// has been quiet for a while (TUN mode's proof is recent) keeps its
// entries out of the flood's reach, and a spoofer asking in its name cannot
// demote it. A promotion out of the unproven class moves entries into the
// proven share; if that puts it over its cap, its largest holders give
// entries back (trim) so the reservation holds. A source's class is
// forgotten with its last entry. Without Config.Proven every source is
// proven and unprovenCap is 0: the rules above reduce to the plain shares.
//
// Entries live in a slab of slots, linked by index into one LRU list per
// source. Pinned entries are off their list while pinned, so a list's tail
// is always recyclable and finding a victim is O(1) plus a heap update.

// slot is one entry of the table.
type slot struct {
	name       string  // normalized: lowercase, no trailing dot
	src        *source // owner
	off        uint32  // offset in Pool4
	pins       int32   // live Acquire calls; >0 means off the LRU list
	prev, next int32   // source LRU links; nilSlot at the ends
}

const nilSlot = -1

// class is what the table knows about a source's proof (see Proof above).
type class uint8

const (
	classUnproven class = iota
	classRestored
	classProven
	numClasses
)

// source is one workstation's share of the table.
type source struct {
	addr       netip.Addr
	n          int   // entries, pinned ones included
	unpinned   int   // entries on the LRU list
	head, tail int32 // LRU list: most and least recently used unpinned
	class      class
	hidx       int  // index in table.heaps[class]
	save       bool // scratch for marshalState: proven at save time
}

// nameKey looks up a source's entry for a name. A pointer to the source
// rather than its address keeps the key small; a source lives while it
// has entries, so the pointer is stable for every key that refers to it.
type nameKey struct {
	src  *source
	name string
}

// table is the automap state. All fields are guarded by mu.
type table struct {
	mu      sync.Mutex
	byName  map[nameKey]int32
	byOff   map[uint32]int32 // Pool4 offset -> slot
	sources map[netip.Addr]*source
	heaps   [numClasses]sourceHeap // each class's sources, most unpinned entries first
	held    [numClasses]int        // entries by their source's class, pinned ones included
	slots   []slot                 // grows to max, then slots are recycled
	free    []int32                // slots emptied but not reused
	pinned  int                    // slots with pins > 0
	max     int
	perSrc  int
	// unprovenCap is what unproven sources hold together at most, and
	// the room proven and restored sources leave them (Config.
	// MaxUnprovenEntries; 0 without proven).
	unprovenCap int
	// proven is Config.Proven: nil means every source is proven. The
	// table calls it, under mu, about a source it is about to recycle
	// from and, in Save, about every source.
	proven func(netip.Addr) bool

	alloc allocator

	recycled        uint64 // entries evicted to make room
	exhausted       uint64 // allocations refused: every candidate pinned, or epoch not saved
	unprovenRefused uint64 // allocations refused to unproven sources: no room, nothing of theirs to recycle
}

func newTable(a allocator, max, perSrc, unprovenCap int, proven func(netip.Addr) bool) *table {
	if proven == nil {
		unprovenCap = 0
	}
	return &table{
		byName:      make(map[nameKey]int32),
		byOff:       make(map[uint32]int32),
		sources:     make(map[netip.Addr]*source),
		max:         max,
		perSrc:      perSrc,
		unprovenCap: unprovenCap,
		proven:      proven,
		alloc:       a,
	}
}

// usableOff reports whether offset off of a masked pool of at least /24
// may be handed out: every address ending in .0 or .255 (the pool's first
// address among them) is skipped, since some stacks treat them as network
// or broadcast addresses.
func usableOff(off uint32) bool {
	b := off & 0xff
	return b != 0 && b != 0xff
}

// len returns the number of entries. t.mu must be held.
func (t *table) len() int { return len(t.slots) - len(t.free) }

// provenHeld returns the entries of the proven share: proven and restored
// sources'. t.mu must be held.
func (t *table) provenHeld() int { return t.held[classProven] + t.held[classRestored] }

// provenCap is the size of the proven share. t.mu must be held.
func (t *table) provenCap() int { return t.max - t.unprovenCap }

// unlink takes slot i off its source's LRU list. t.mu must be held.
func (t *table) unlink(i int32) {
	s := &t.slots[i]
	src := s.src
	if s.prev != nilSlot {
		t.slots[s.prev].next = s.next
	} else {
		src.head = s.next
	}
	if s.next != nilSlot {
		t.slots[s.next].prev = s.prev
	} else {
		src.tail = s.prev
	}
	s.prev, s.next = nilSlot, nilSlot
	src.unpinned--
}

// pushFront puts slot i, not on a list, at the most recent end of its
// source's list. t.mu must be held.
func (t *table) pushFront(i int32) {
	s := &t.slots[i]
	src := s.src
	s.prev, s.next = nilSlot, src.head
	if src.head != nilSlot {
		t.slots[src.head].prev = i
	} else {
		src.tail = i
	}
	src.head = i
	src.unpinned++
}

// pushBack puts slot i, not on a list, at the least recent end of its
// source's list. t.mu must be held.
func (t *table) pushBack(i int32) {
	s := &t.slots[i]
	src := s.src
	s.prev, s.next = src.tail, nilSlot
	if src.tail != nilSlot {
		t.slots[src.tail].next = i
	} else {
		src.head = i
	}
	src.tail = i
	src.unpinned++
}

// touch marks slot i as just used. t.mu must be held.
func (t *table) touch(i int32) {
	s := &t.slots[i]
	if s.pins > 0 || s.src.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}

// fix restores src's place in its class heap after its unpinned count
// changed. t.mu must be held.
func (t *table) fix(src *source) { heap.Fix(&t.heaps[src.class], src.hidx) }

// source returns the share of addr, creating it in class c if create is
// set. t.mu must be held.
func (t *table) source(addr netip.Addr, create bool, c class) *source {
	src := t.sources[addr]
	if src == nil && create {
		src = &source{addr: addr, head: nilSlot, tail: nilSlot, class: c}
		t.sources[addr] = src
		heap.Push(&t.heaps[c], src)
	}
	return src
}

// dropIfEmpty forgets src once it has no entries. t.mu must be held.
func (t *table) dropIfEmpty(src *source) {
	if src.n == 0 {
		delete(t.sources, src.addr)
		heap.Remove(&t.heaps[src.class], src.hidx)
	}
}

// evict recycles the least recently used unpinned entry of src and
// returns its emptied slot. t.mu must be held; src.tail must be a slot.
func (t *table) evict(src *source) int32 {
	i := src.tail
	t.unlink(i)
	s := &t.slots[i]
	delete(t.byName, nameKey{src, s.name})
	delete(t.byOff, s.off)
	src.n--
	t.held[src.class]--
	*s = slot{prev: nilSlot, next: nilSlot}
	t.recycled++
	t.fix(src)
	return i
}

// recycle evicts the least recently used unpinned entry of victim for a
// new entry of asker and returns the emptied slot. t.mu must be held.
func (t *table) recycle(victim, asker *source) int32 {
	i := t.evict(victim)
	if victim != asker {
		t.dropIfEmpty(victim)
	}
	return i
}

// promote moves src to the proven class, and then brings the proven share
// back within its cap if src came from the unproven one, so that the
// unproven share keeps its room. keep is a source not to forget if it
// loses its last entry (the asker of a query, whose entry is about to be
// inserted). t.mu must be held.
func (t *table) promote(src, keep *source) {
	from := src.class
	if from == classProven {
		return
	}
	heap.Remove(&t.heaps[from], src.hidx)
	t.held[from] -= src.n
	src.class = classProven
	t.held[classProven] += src.n
	heap.Push(&t.heaps[classProven], src)
	if from == classUnproven {
		t.trim(keep)
	}
}

// trim recycles entries of the proven share, restored sources' first,
// until it is within its cap again, and leaves their slots free for the
// unproven share. Only a promotion puts the proven share over its cap;
// trim stops early only if every entry of the share is pinned, and then
// the next release or proven query goes on with it. keep may be nil.
// t.mu must be held.
func (t *table) trim(keep *source) {
	for t.provenHeld() > t.provenCap() {
		v, promoted := t.top(classRestored, keep)
		if promoted {
			continue
		}
		if v == nil {
			v, _ = t.top(classProven, keep)
		}
		if v == nil {
			return // every entry pinned
		}
		t.free = append(t.free, t.recycle(v, keep))
	}
}

// top returns the source of class c to recycle from: the one with the most
// unpinned entries, or nil if every entry of the class is pinned. An
// unproven or restored candidate other than asker (whose proof the caller
// just checked) is asked about first, and if it is proven now, top
// promotes it instead and returns promoted: the shares have changed, and
// the caller decides again. That keeps a workstation that proved itself
// without asking for a name since (its first query came before its
// handshake; it came back after a restart) from losing entries as if it
// had not. t.mu must be held.
func (t *table) top(c class, asker *source) (v *source, promoted bool) {
	h := t.heaps[c]
	if len(h) == 0 || h[0].unpinned == 0 {
		return nil, false
	}
	v = h[0]
	if c == classProven || v == asker || t.proven == nil || !t.proven(v.addr) {
		return v, false
	}
	t.promote(v, asker)
	return nil, true
}

// refusal says why a new entry could not be made.
type refusal uint8

const (
	refusedNone     refusal = iota
	refusedPinned           // every entry that could be recycled is pinned by a flow
	refusedEpoch            // the epoch file could not be written
	refusedUnproven         // unproven source: its share is full and every entry of it is pinned (or it has none)
)

// String returns the log spelling of r.
func (r refusal) String() string {
	switch r {
	case refusedPinned:
		return "pinned"
	case refusedEpoch:
		return "epoch_file"
	case refusedUnproven:
		return "unproven"
	}
	return "none"
}

// newSlot returns an empty slot for a new entry of src, recycling an entry
// if src or its share is at its cap (see Shares and Proof above).
// t.mu must be held.
func (t *table) newSlot(src *source) (int32, refusal) {
	switch {
	case src.n >= t.perSrc:
		// Over its own cap: the source recycles its own entries only.
		if src.tail == nilSlot {
			return 0, refusedPinned
		}
		return t.evict(src), refusedNone
	case src.class == classRestored:
		// Asking, and not proven (assign promotes a proven asker): it
		// may not grow in the proven share until it is.
		if src.tail == nilSlot {
			return 0, refusedUnproven
		}
		return t.evict(src), refusedNone
	}
	// Each pass that goes round again has promoted a source out of the
	// unproven or restored class, for good: the loop ends.
decide:
	for {
		if src.class == classUnproven {
			if t.held[classUnproven] < t.unprovenCap && t.len() < t.max {
				return t.freeSlot(), refusedNone
			}
			// Only from its own kind: the source holding the most
			// gives way.
			v, promoted := t.top(classUnproven, src)
			switch {
			case promoted:
				continue
			case v == nil:
				return 0, refusedUnproven
			}
			return t.recycle(v, src), refusedNone
		}
		t.trim(src)
		if t.provenHeld() < t.provenCap() && t.len() < t.max {
			return t.freeSlot(), refusedNone
		}
		// Never from unproven sources: their share is reserved.
		for _, c := range [...]class{classRestored, classProven} {
			v, promoted := t.top(c, src)
			if promoted {
				continue decide
			}
			if v != nil {
				return t.recycle(v, src), refusedNone
			}
		}
		return 0, refusedPinned
	}
}

// freeSlot returns an empty slot that no entry uses. t.mu must be held.
func (t *table) freeSlot() int32 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		return i
	}
	t.slots = append(t.slots, slot{prev: nilSlot, next: nilSlot})
	return int32(len(t.slots) - 1)
}

// insert fills the empty slot i with an entry and links it. t.mu must be
// held.
func (t *table) insert(i int32, src *source, name string, off uint32, front bool) {
	t.slots[i] = slot{name: name, src: src, off: off, prev: nilSlot, next: nilSlot}
	t.byName[nameKey{src, name}] = i
	t.byOff[off] = i
	src.n++
	t.held[src.class]++
	if front {
		t.pushFront(i)
	} else {
		t.pushBack(i)
	}
	t.fix(src)
}

// assign returns the offset mapped to key for the source addr, mapping it
// first if needed. proven is Config.Proven's word on addr (true without
// one). r is refusedNone unless no entry could be made (see newSlot and
// allocator.next).
func (t *table) assign(addr netip.Addr, proven bool, key []byte) (off uint32, r refusal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if src := t.sources[addr]; src != nil {
		if proven && src.class != classProven {
			// Before the lookup: the promotion may trim entries.
			t.promote(src, src)
		}
		// string(key) in a map index of a composite key does not
		// allocate: the cached answer stays allocation-free.
		if i, hit := t.byName[nameKey{src, string(key)}]; hit {
			t.touch(i)
			return t.slots[i].off, refusedNone
		}
	}
	c := classUnproven
	if proven {
		c = classProven
	}
	src := t.source(addr, true, c)
	i, r := t.newSlot(src)
	if r != refusedNone {
		if r == refusedUnproven {
			t.unprovenRefused++
		} else {
			t.exhausted++
		}
		t.dropIfEmpty(src)
		return 0, r
	}
	off, ok := t.alloc.next(func(off uint32) bool {
		_, used := t.byOff[off]
		return !used
	})
	if !ok {
		t.free = append(t.free, i)
		t.exhausted++
		t.dropIfEmpty(src)
		return 0, refusedEpoch
	}
	t.insert(i, src, string(key), off, true)
	return off, refusedNone
}

// find returns the slot mapped to off for the source addr. t.mu must be
// held.
func (t *table) find(addr netip.Addr, off uint32) (int32, bool) {
	i, ok := t.byOff[off]
	if !ok || t.slots[i].src.addr != addr {
		// Another source's entry looks exactly like no entry.
		return 0, false
	}
	return i, true
}

// lookup returns the name mapped to off for addr and marks it used.
func (t *table) lookup(addr netip.Addr, off uint32) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.find(addr, off)
	if !ok {
		return "", false
	}
	t.touch(i)
	return t.slots[i].name, true
}

// acquire is lookup plus a pin. It returns the slot to pass to release.
func (t *table) acquire(addr netip.Addr, off uint32) (string, int32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.find(addr, off)
	if !ok {
		return "", 0, false
	}
	s := &t.slots[i]
	if s.pins == 0 {
		t.unlink(i)
		t.fix(s.src)
		t.pinned++
	}
	s.pins++
	return s.name, i, true
}

// release undoes one acquire of slot i.
func (t *table) release(i int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[i]
	if s.pins <= 0 {
		return // unreachable: release funcs run once
	}
	if s.pins--; s.pins == 0 {
		t.pinned--
		t.pushFront(i)
		t.fix(s.src)
		if t.provenHeld() > t.provenCap() {
			// A trim stopped by pinned entries: finish it now, so the
			// unproven share gets its room back without waiting for a
			// proven query.
			t.trim(nil)
		}
	}
}

// sourceHeap orders sources by recyclable entries, most first
// (container/heap).
type sourceHeap []*source

func (h sourceHeap) Len() int           { return len(h) }
func (h sourceHeap) Less(i, j int) bool { return h[i].unpinned > h[j].unpinned }
func (h sourceHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *sourceHeap) Push(x any) {
	s := x.(*source)
	s.hidx = len(*h)
	*h = append(*h, s)
}
func (h *sourceHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}

// allocator hands out Pool4 offsets: epoch<<offBits | perm(counter).
type allocator struct {
	offBits   uint // bits of an offset within an epoch
	epochBits uint // bits of the epoch number
	epoch     uint32
	counter   uint32    // next input to the permutation
	keys      [4]uint64 // Feistel round keys of this epoch
	// advance persists a new epoch before any address of it is handed
	// out; nil when there is nowhere to persist it.
	advance func(epoch uint32) error
}

// Epoch layout: epochs get at most maxEpochBits bits, and never leave an
// epoch fewer than 2^minOffBits addresses.
const (
	maxEpochBits = 6
	minOffBits   = 10
)

// splitPool returns the epoch and offset bits for a pool of poolBits bits.
func splitPool(poolBits uint) (epochBits, offBits uint) {
	if poolBits > minOffBits {
		epochBits = min(maxEpochBits, poolBits-minOffBits)
	}
	return epochBits, poolBits - epochBits
}

// rekey draws fresh round keys for the current epoch.
func (a *allocator) rekey() {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	for i := range a.keys {
		a.keys[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	a.counter = 0
}

// next returns the next offset for which free reports true. It moves to
// the next epoch (persisting it first) when the current one is used up;
// ok is false if persisting fails or, unreachably, no offset is free.
func (a *allocator) next(free func(uint32) bool) (uint32, bool) {
	size := uint32(1) << a.offBits
	// Each pass over an epoch skips at most all of its offsets; the
	// table holds fewer entries than the pool has usable addresses, so a
	// free offset turns up within two passes over every epoch.
	for range 2 << a.epochBits {
		for a.counter < size {
			off := a.epoch<<a.offBits | a.permute(a.counter)
			a.counter++
			if usableOff(off) && free(off) {
				return off, true
			}
		}
		epoch := (a.epoch + 1) & (1<<a.epochBits - 1)
		if a.advance != nil {
			if err := a.advance(epoch); err != nil {
				return 0, false // counter stays at the end: retried next time
			}
		}
		a.epoch = epoch
		a.rekey()
	}
	return 0, false
}

// permute maps x < 2^offBits to a pseudo-random y < 2^offBits, one to one:
// a four-round Feistel network over the next even number of bits, walked
// until the result falls in range (at most one bit too wide, so about two
// steps on average).
func (a *allocator) permute(x uint32) uint32 {
	half := (a.offBits + 1) / 2
	mask := uint32(1)<<half - 1
	limit := uint32(1) << a.offBits
	for {
		l, r := x>>half, x&mask
		for _, k := range a.keys {
			l, r = r, l^uint32(mix64(uint64(r)^k))&mask
		}
		x = l<<half | r
		if x < limit {
			return x
		}
	}
}

// mix64 is the splitmix64 finalizer: a cheap bijective mixer.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Virtual address arithmetic. Pool prefixes are validated by New: Pool4 is
// masked, /8 to /24; Pool6 is masked, at most /96.

// addr4 returns the virtual IPv4 address of offset off.
func (m *Map) addr4(off uint32) [4]byte {
	v := m.base4 + off
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// addr6 returns the virtual IPv6 address of offset off.
func (m *Map) addr6(off uint32) [16]byte {
	a := m.base6
	v4 := m.addr4(off)
	copy(a[12:], v4[:])
	return a
}

// offset maps ip to its Pool4 offset. virtual reports whether ip is in a
// pool; mappable whether it is an address an entry could own.
func (m *Map) offset(ip netip.Addr) (off uint32, virtual, mappable bool) {
	ip = ip.WithZone("").Unmap()
	switch {
	case ip.Is4():
		if !m.pool4.Contains(ip) {
			return 0, false, false
		}
		a := ip.As4()
		off = (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) - m.base4
		return off, true, usableOff(off)
	case ip.Is6():
		if !m.pool6.Contains(ip) {
			return 0, false, false
		}
		a := ip.As16()
		if [12]byte(a[:12]) != [12]byte(m.base6[:12]) {
			return 0, true, false
		}
		v4 := netip.AddrFrom4([4]byte(a[12:]))
		if !m.pool4.Contains(v4) {
			return 0, true, false
		}
		off = (uint32(a[12])<<24 | uint32(a[13])<<16 | uint32(a[14])<<8 | uint32(a[15])) - m.base4
		return off, true, usableOff(off)
	}
	return 0, false, false
}

// srcKey is the form of a source address the table is keyed by.
func srcKey(src netip.Addr) netip.Addr { return src.WithZone("").Unmap() }

// IsVirtual reports whether ip lies in Pool4 or Pool6 (an IPv4-mapped IPv6
// address counts as its IPv4 address). The tunnel must never dial such an
// address directly: it either has a mapping (Lookup) or gets an RST.
func (m *Map) IsVirtual(ip netip.Addr) bool {
	_, virtual, _ := m.offset(ip)
	return virtual
}

// Lookup returns the name the workstation src was given the virtual
// address ip for, and marks the entry as recently used. virtual reports
// whether ip is in a pool at all; ok whether src has a mapping for it. A
// virtual address without one (never handed out, recycled, of another run,
// or handed to another source) gets ok=false: the tunnel then resets the
// flow. Lookup works whether or not Tor is ready.
func (m *Map) Lookup(src, ip netip.Addr) (name string, virtual, ok bool) {
	off, virtual, mappable := m.offset(ip)
	if !mappable {
		return "", virtual, false
	}
	name, ok = m.tab.lookup(srcKey(src), off)
	return name, virtual, ok
}

// Acquire is Lookup plus a pin: the entry is not recycled until release is
// called, so a long-lived flow keeps its name even if the table turns over
// underneath it. release is never nil (a no-op when ok is false) and may be
// called more than once; only the first call counts.
func (m *Map) Acquire(src, ip netip.Addr) (name string, release func(), virtual, ok bool) {
	off, virtual, mappable := m.offset(ip)
	if !mappable {
		return "", noRelease, virtual, false
	}
	name, i, ok := m.tab.acquire(srcKey(src), off)
	if !ok {
		return "", noRelease, virtual, false
	}
	var once sync.Once
	return name, func() { once.Do(func() { m.tab.release(i) }) }, true, true
}

func noRelease() {}

// Len returns the number of entries in the automap table.
func (m *Map) Len() int {
	m.tab.mu.Lock()
	defer m.tab.mu.Unlock()
	return m.tab.len()
}
