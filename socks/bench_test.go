package socks_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
)

// scriptConn is a net.Conn that answers every read from a fixed script and
// swallows writes: a SOCKS server without goroutines or I/O, so that only
// the client's own allocations are counted.
type scriptConn struct {
	net.Conn // nil: any other method panics
	script   []byte
	r        bytes.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// okReply is a successful CONNECT reply in Tor's layout.
const okReply = "\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"

// scriptDialer returns a Dialer whose every Dial replays script.
func scriptDialer(script string) *socks.Dialer {
	c := &scriptConn{script: []byte(script)}
	return &socks.Dialer{Dial: func(context.Context) (net.Conn, error) {
		c.r.Reset(c.script)
		return c, nil
	}}
}

// TestHandshakeAllocs guards the allocation-free handshake: with a
// non-cancellable context, Connect and Resolve allocate nothing of their
// own, and neither does a ServerReader for an IP destination.
func TestHandshakeAllocs(t *testing.T) {
	ctx := context.Background()
	dst := socks.HostPort("example.com", 443)
	auth := socks.Auth{Username: "isolation-key", Password: "x"}
	plain := scriptDialer("\x05\x00" + okReply)
	withAuth := scriptDialer("\x05\x02\x01\x00" + okReply)
	resolve := scriptDialer("\x05\x02\x01\x00\x05\x00\x00\x01\xc0\x00\x02\x07\x00\x00")
	reply := []byte(okReply)
	var r bytes.Reader
	sr := socks.NewServerReader(nil)
	for _, tt := range []struct {
		name string
		run  func() error
	}{
		{name: "connect", run: func() error {
			_, err := plain.Connect(ctx, dst, socks.Auth{})
			return err
		}},
		{name: "connect with auth", run: func() error {
			_, err := withAuth.Connect(ctx, dst, auth)
			return err
		}},
		{name: "resolve", run: func() error {
			_, err := resolve.Resolve(ctx, "example.com", auth)
			return err
		}},
		{name: "read reply", run: func() error {
			r.Reset(reply)
			_, _, err := socks.ReadReply(&r)
			return err
		}},
		{name: "server reader", run: func() error {
			r.Reset(clientHalf)
			sr.Reset(&r)
			return readClientHalf(sr)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); err != nil {
				t.Fatal(err)
			}
			if n := testing.AllocsPerRun(100, func() { tt.run() }); n != 0 {
				t.Errorf("%v allocations per handshake, want 0", n)
			}
		})
	}
}

// pipeServer answers one handshake for a hostname of hostLen bytes on c, as
// Tor would, then closes c.
func pipeServer(c net.Conn, auth socks.Auth, hostLen int) {
	defer c.Close()
	var b [600]byte
	io.ReadFull(c, b[:3])
	if auth.Username != "" {
		c.Write([]byte{0x05, 0x02})
		io.ReadFull(c, b[:3+len(auth.Username)+len(auth.Password)])
		c.Write([]byte{0x01, 0x00})
	} else {
		c.Write([]byte{0x05, 0x00})
	}
	io.ReadFull(c, b[:5+hostLen+2])
	io.WriteString(c, okReply)
}

// BenchmarkConnect measures a CONNECT handshake against an in-memory
// net.Pipe server. net.Pipe and the server goroutine allocate on their own;
// TestHandshakeAllocs isolates the client.
func BenchmarkConnect(b *testing.B) {
	dst := socks.HostPort("example.com", 443)
	for _, bc := range []struct {
		name    string
		auth    socks.Auth
		timeout bool
	}{
		{name: "noauth"},
		{name: "auth", auth: socks.Auth{Username: "isolation-key-0001", Password: "x"}},
		{name: "auth+timeout", auth: socks.Auth{Username: "isolation-key-0001", Password: "x"}, timeout: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := &socks.Dialer{Dial: func(context.Context) (net.Conn, error) {
				client, server := net.Pipe()
				go pipeServer(server, bc.auth, len(dst.Name))
				return client, nil
			}}
			ctx := context.Background()
			if bc.timeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Hour)
				defer cancel()
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.Connect(ctx, dst, bc.auth)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkReadReply measures the reply parser alone.
func BenchmarkReadReply(b *testing.B) {
	var r bytes.Reader
	msg := []byte("\x05\x00\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		r.Reset(msg)
		if _, a, err := socks.ReadReply(&r); err != nil || a.IP != netip.MustParseAddr("2001:db8::7") {
			b.Fatal(a, err)
		}
	}
}

// clientHalf is torgate's side of a CONNECT handshake to an IP, with its
// isolation credentials, as a server reads it.
var clientHalf = []byte("\x05\x01\x02" + "\x01\x10isolation-key-01\x01x" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50")

// readClientHalf reads clientHalf as a server does.
func readClientHalf(sr *socks.ServerReader) error {
	if _, err := sr.ReadGreeting(); err != nil {
		return err
	}
	if _, _, err := sr.ReadUserPass(); err != nil {
		return err
	}
	_, err := sr.ReadRequest()
	return err
}

// BenchmarkServerReader measures the server's reading of a handshake
// alone.
func BenchmarkServerReader(b *testing.B) {
	var r bytes.Reader
	sr := socks.NewServerReader(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(clientHalf)))
	for b.Loop() {
		r.Reset(clientHalf)
		sr.Reset(&r)
		if err := readClientHalf(sr); err != nil {
			b.Fatal(err)
		}
	}
}
