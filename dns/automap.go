package dns

import (
	"net/netip"
	"sync"
)

// The automap table maps normalized names to virtual addresses and back.
//
// An entry owns one offset into Pool4; its IPv4 address is Pool4's base plus
// the offset and its IPv6 address is Pool6 with that IPv4 address in the low
// 32 bits. Offsets are handed out by a cursor that walks the whole pool
// before it comes back, skipping offsets in use, so an address freed by
// recycling is reused as late as possible: with the defaults, after about
// four million other names. A workstation that still caches an old answer
// for it then reaches a dead mapping (RST) rather than another name.
//
// Entries live in a slab of slots linked into an LRU list by index. Pinned
// entries (Acquire) are taken off the list while pinned, so the list tail
// is always recyclable and finding a victim is O(1); an empty list with a
// full slab means every entry is pinned.

// slot is one entry of the table.
type slot struct {
	name       string // normalized: lowercase, no trailing dot
	off        uint32 // offset in Pool4
	pins       int32  // live Acquire calls; >0 means off the LRU list
	prev, next int32  // LRU links; nilSlot at the ends
}

const nilSlot = -1

// table is the automap state. All fields are guarded by mu.
type table struct {
	mu     sync.Mutex
	byName map[string]int32 // normalized name -> slot
	byOff  map[uint32]int32 // Pool4 offset -> slot
	slots  []slot           // grows to max, then slots are recycled
	free   []int32          // slots emptied but not reused (rare)
	head   int32            // most recently used unpinned slot
	tail   int32            // least recently used unpinned slot
	pinned int              // slots with pins > 0
	cursor uint32           // next offset to try
	size   uint32           // number of offsets in Pool4
	max    int

	recycled  uint64 // entries evicted to make room
	exhausted uint64 // allocations refused: every entry pinned
}

func newTable(size uint32, max int) *table {
	return &table{
		byName: make(map[string]int32),
		byOff:  make(map[uint32]int32),
		head:   nilSlot,
		tail:   nilSlot,
		cursor: 1,
		size:   size,
		max:    max,
	}
}

// usableOff reports whether offset off of a masked pool of at least /24
// may be handed out: the pool's first address and every address ending in
// .0 or .255 are skipped, since some stacks treat them as network or
// broadcast addresses.
func usableOff(off uint32) bool {
	b := off & 0xff
	return b != 0 && b != 0xff
}

// len returns the number of entries. t.mu must be held.
func (t *table) len() int { return len(t.slots) - len(t.free) }

// unlink takes slot i off the LRU list. t.mu must be held.
func (t *table) unlink(i int32) {
	s := &t.slots[i]
	if s.prev != nilSlot {
		t.slots[s.prev].next = s.next
	} else {
		t.head = s.next
	}
	if s.next != nilSlot {
		t.slots[s.next].prev = s.prev
	} else {
		t.tail = s.prev
	}
	s.prev, s.next = nilSlot, nilSlot
}

// pushFront puts slot i, not on the list, at the most recent end.
// t.mu must be held.
func (t *table) pushFront(i int32) {
	s := &t.slots[i]
	s.prev, s.next = nilSlot, t.head
	if t.head != nilSlot {
		t.slots[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
}

// pushBack puts slot i, not on the list, at the least recent end.
// t.mu must be held.
func (t *table) pushBack(i int32) {
	s := &t.slots[i]
	s.prev, s.next = t.tail, nilSlot
	if t.tail != nilSlot {
		t.slots[t.tail].next = i
	} else {
		t.head = i
	}
	t.tail = i
}

// touch marks slot i as just used. t.mu must be held.
func (t *table) touch(i int32) {
	if t.slots[i].pins > 0 || t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}

// nextFree advances the cursor to an unused usable offset. t.mu must be
// held.
func (t *table) nextFree() (uint32, bool) {
	for range t.size {
		off := t.cursor
		if t.cursor++; t.cursor >= t.size {
			t.cursor = 0
		}
		if !usableOff(off) {
			continue
		}
		if _, used := t.byOff[off]; !used {
			return off, true
		}
	}
	return 0, false
}

// newSlot returns an empty slot, recycling the least recently used entry
// if the table is full. ok is false if every entry is pinned.
// t.mu must be held.
func (t *table) newSlot() (int32, bool) {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		return i, true
	}
	if len(t.slots) < t.max {
		t.slots = append(t.slots, slot{prev: nilSlot, next: nilSlot})
		return int32(len(t.slots) - 1), true
	}
	i := t.tail
	if i == nilSlot {
		return 0, false
	}
	t.unlink(i)
	s := &t.slots[i]
	delete(t.byName, s.name)
	delete(t.byOff, s.off)
	*s = slot{prev: nilSlot, next: nilSlot}
	t.recycled++
	return i, true
}

// assign returns the offset mapped to key, mapping it first if needed.
// ok is false if the table is full of pinned entries.
func (t *table) assign(key []byte) (off uint32, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, hit := t.byName[string(key)]; hit {
		t.touch(i)
		return t.slots[i].off, true
	}
	i, ok := t.newSlot()
	if !ok {
		t.exhausted++
		return 0, false
	}
	off, ok = t.nextFree()
	if !ok {
		// Unreachable: max never exceeds the usable offsets, and newSlot
		// freed one if the table was full.
		t.free = append(t.free, i)
		t.exhausted++
		return 0, false
	}
	name := string(key)
	t.slots[i] = slot{name: name, off: off, prev: nilSlot, next: nilSlot}
	t.byName[name] = i
	t.byOff[off] = i
	t.pushFront(i)
	return off, true
}

// lookup returns the name mapped to off and marks it used.
func (t *table) lookup(off uint32) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.byOff[off]
	if !ok {
		return "", false
	}
	t.touch(i)
	return t.slots[i].name, true
}

// acquire is lookup plus a pin. It returns the slot to pass to release.
func (t *table) acquire(off uint32) (string, int32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.byOff[off]
	if !ok {
		return "", 0, false
	}
	s := &t.slots[i]
	if s.pins == 0 {
		t.unlink(i)
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
	}
}

// Virtual address arithmetic. Pool prefixes are validated by New: Pool4 is
// masked, /8 to /24; Pool6 is masked, at most /96.

// addr4 returns the virtual IPv4 address of offset off.
func (s *Server) addr4(off uint32) [4]byte {
	v := s.base4 + off
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// addr6 returns the virtual IPv6 address of offset off.
func (s *Server) addr6(off uint32) [16]byte {
	a := s.base6
	v4 := s.addr4(off)
	copy(a[12:], v4[:])
	return a
}

// offset maps ip to its Pool4 offset. virtual reports whether ip is in a
// pool; mappable whether it is an address an entry could own.
func (s *Server) offset(ip netip.Addr) (off uint32, virtual, mappable bool) {
	ip = ip.WithZone("").Unmap()
	switch {
	case ip.Is4():
		if !s.pool4.Contains(ip) {
			return 0, false, false
		}
		a := ip.As4()
		off = (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) - s.base4
		return off, true, usableOff(off)
	case ip.Is6():
		if !s.pool6.Contains(ip) {
			return 0, false, false
		}
		a := ip.As16()
		if [12]byte(a[:12]) != [12]byte(s.base6[:12]) {
			return 0, true, false
		}
		v4 := netip.AddrFrom4([4]byte(a[12:]))
		if !s.pool4.Contains(v4) {
			return 0, true, false
		}
		off = (uint32(a[12])<<24 | uint32(a[13])<<16 | uint32(a[14])<<8 | uint32(a[15])) - s.base4
		return off, true, usableOff(off)
	}
	return 0, false, false
}

// IsVirtual reports whether ip lies in Pool4 or Pool6 (an IPv4-mapped IPv6
// address counts as its IPv4 address). The tunnel must never dial such an
// address directly: it either has a mapping (Lookup) or gets an RST.
func (s *Server) IsVirtual(ip netip.Addr) bool {
	_, virtual, _ := s.offset(ip)
	return virtual
}

// Lookup returns the name mapped to the virtual address ip and marks the
// entry as recently used. virtual reports whether ip is in a pool at all;
// ok whether it has a mapping. A virtual address without a mapping (never
// handed out, or recycled) gets ok=false: the tunnel then resets the flow.
// Lookup works whether or not Tor is ready.
func (s *Server) Lookup(ip netip.Addr) (name string, virtual, ok bool) {
	off, virtual, mappable := s.offset(ip)
	if !mappable {
		return "", virtual, false
	}
	name, ok = s.tab.lookup(off)
	return name, virtual, ok
}

// Acquire is Lookup plus a pin: the entry is not recycled until release is
// called, so a long-lived flow keeps its name even if the table turns over
// underneath it. release is never nil (a no-op when ok is false) and may be
// called more than once; only the first call counts.
func (s *Server) Acquire(ip netip.Addr) (name string, release func(), virtual, ok bool) {
	off, virtual, mappable := s.offset(ip)
	if !mappable {
		return "", noRelease, virtual, false
	}
	name, i, ok := s.tab.acquire(off)
	if !ok {
		return "", noRelease, virtual, false
	}
	var once sync.Once
	return name, func() { once.Do(func() { s.tab.release(i) }) }, true, true
}

func noRelease() {}

// Len returns the number of entries in the automap table.
func (s *Server) Len() int {
	s.tab.mu.Lock()
	defer s.tab.mu.Unlock()
	return s.tab.len()
}
