package socksd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
)

func newServer(t *testing.T, dial bool) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func connect(t *testing.T, s *Server, dst socks.Addr, auth socks.Auth) net.Conn {
	t.Helper()
	d, err := socks.NewDialer("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.Connect(ctx, dst, auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestSinks(t *testing.T) {
	s := newServer(t, false)
	ip := netip.MustParseAddr("198.18.1.1")
	for _, tc := range []struct {
		name string
		auth socks.Auth
	}{
		{name: "noauth"},
		{name: "userpass", auth: socks.Auth{Username: "tg-user", Password: "secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Echo.
			c := connect(t, s, socks.AddrFromAddrPort(netip.AddrPortFrom(ip, PortEcho)), tc.auth)
			msg := []byte("hello, echo")
			c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo: %q, %v", got, err)
			}
			// Count: the sink confirms the byte count after our EOF.
			c = connect(t, s, socks.HostPort("count.example", PortCount), tc.auth)
			c.Write(make([]byte, 100000))
			c.(*net.TCPConn).CloseWrite()
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil || binary.BigEndian.Uint64(n[:]) != 100000 {
				t.Fatalf("count: %d, %v", binary.BigEndian.Uint64(n[:]), err)
			}
			// Source: exactly the asked-for length, then EOF.
			c = connect(t, s, socks.AddrFromAddrPort(netip.AddrPortFrom(ip, PortSource)), tc.auth)
			binary.BigEndian.PutUint64(n[:], 300000)
			c.Write(n[:])
			k, err := io.Copy(io.Discard, c)
			if err != nil || k != 300000 {
				t.Fatalf("source: %d bytes, %v", k, err)
			}
		})
	}
}

// TestDialEarlyData: a client that sends stream bytes right behind its
// request, without waiting for the reply, loses none of them.
func TestDialEarlyData(t *testing.T) {
	target := echoTarget(t)
	s := newServer(t, true)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	ap := netip.MustParseAddrPort(target.Addr().String())
	ip4 := ap.Addr().As4()
	req := []byte{5, 1, 0}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var b [10]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[1] != 0 {
		t.Fatalf("method reply %v, %v", b[:2], err)
	}
	msg := append([]byte{5, 1, 0, 1}, ip4[:]...)
	msg = binary.BigEndian.AppendUint16(msg, ap.Port())
	msg = append(msg, "early bytes"...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b[:10]); err != nil || b[1] != 0 {
		t.Fatalf("reply %v, %v", b, err)
	}
	got := make([]byte, len("early bytes"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "early bytes" {
		t.Fatalf("echoed %q, %v", got, err)
	}
}

func TestDialRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := newServer(t, true)
	d, _ := socks.NewDialer("tcp", s.Addr().String())
	_, err := d.Connect(t.Context(), socks.AddrFromAddrPort(netip.MustParseAddrPort(addr)), socks.Auth{})
	if err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
}

// TestDialUnix: served on a unix socket (as torgate reaches its managed
// Tor), a CONNECT reaches the real destination and the relay carries both
// directions and the half-close, as over TCP.
func TestDialUnix(t *testing.T) {
	target := echoTarget(t)
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "socks.sock"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln, Dial: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	d, err := socks.NewDialer("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.Connect(ctx, socks.AddrFromAddrPort(netip.MustParseAddrPort(target.Addr().String())), socks.Auth{Username: "a", Password: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := make([]byte, 200000) // more than one socket buffer: the splice path
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() {
		c.Write(msg)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("echoed %d of %d bytes, %v", len(got), len(msg), err)
	}
}

// echoTarget is a loopback destination that echoes one connection until
// the client's EOF, then closes it.
func echoTarget(t *testing.T) net.Listener {
	t.Helper()
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close() })
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	return target
}
