package socksd

import (
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"testing"

	"github.com/torgate/torgate/socks"
)

// scriptConn is a client without I/O: each Read returns the next message
// of the script (as a client that waits for each answer sends them), and
// writes are dropped, so that only the server's own work is measured.
type scriptConn struct {
	net.Conn // nil: any other method panics
	msgs     []string
	next     int
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.next == len(c.msgs) {
		return 0, io.EOF
	}
	n := copy(p, c.msgs[c.next])
	c.next++
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }

// handshakeCases are the handshakes a router makes: torgate offers exactly
// one method, and sends credentials (its isolation key) and an IP.
var handshakeCases = []struct {
	name   string
	msgs   []string
	dst    socks.Addr
	allocs float64 // the server's allocations per handshake
}{
	{
		name:   "ipv4",
		msgs:   []string{"\x05\x01\x00", "\x05\x01\x00\x01\xc6\x12\x01\x01\x00\x07"},
		dst:    socks.Addr{IP: netip.MustParseAddr("198.18.1.1"), Port: 7},
		allocs: 0,
	},
	{
		name:   "ipv4+auth",
		msgs:   []string{"\x05\x01\x02", "\x01\x10isolation-key-01\x01x", "\x05\x01\x00\x01\xc6\x12\x01\x01\x00\x07"},
		dst:    socks.Addr{IP: netip.MustParseAddr("198.18.1.1"), Port: 7},
		allocs: 0,
	},
	{
		name: "ipv6+auth",
		msgs: []string{"\x05\x01\x02", "\x01\x10isolation-key-01\x01x",
			"\x05\x01\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x01\xbb"},
		dst:    socks.Addr{IP: netip.MustParseAddr("2001:db8::7"), Port: 443},
		allocs: 0,
	},
	{
		name:   "name+auth",
		msgs:   []string{"\x05\x01\x02", "\x01\x10isolation-key-01\x01x", "\x05\x01\x00\x03\x0bexample.com\x01\xbb"},
		dst:    socks.HostPort("example.com", 443),
		allocs: 1, // the hostname's string
	},
}

// serveHandshake is what serve does before it picks a sink.
func serveHandshake(c net.Conn) (socks.Addr, error) {
	dst, _, err := accept(c)
	if err != nil {
		return socks.Addr{}, err
	}
	return dst, reply(c, socks.ReplySucceeded)
}

// TestHandshakeAllocs holds the handshake to no allocation of its own for
// an IP destination, and one (the name) for a hostname.
func TestHandshakeAllocs(t *testing.T) {
	// A GC empties readerPool, and refilling it allocates.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, tc := range handshakeCases {
		t.Run(tc.name, func(t *testing.T) {
			c := &scriptConn{msgs: tc.msgs}
			if dst, err := serveHandshake(c); err != nil || dst != tc.dst {
				t.Fatalf("handshake = %v, %v; want %v", dst, err, tc.dst)
			}
			n := testing.AllocsPerRun(100, func() {
				c.next = 0
				serveHandshake(c)
			})
			if n != tc.allocs {
				t.Errorf("%v allocations per handshake, want %v", n, tc.allocs)
			}
		})
	}
}

// BenchmarkHandshake measures the server's side of a handshake, from the
// greeting to the CONNECT reply, without I/O.
func BenchmarkHandshake(b *testing.B) {
	for _, tc := range handshakeCases {
		b.Run(tc.name, func(b *testing.B) {
			c := &scriptConn{msgs: tc.msgs}
			b.ReportAllocs()
			for b.Loop() {
				c.next = 0
				if _, err := serveHandshake(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
