package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
)

// socketPair returns both ends of a loopback TCP connection.
func socketPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestRelaySocketsHalfClose drives the notification path on real sockets
// (epoll on Linux) both ways: data intact, each EOF passed on as a
// half-close while the other way keeps flowing, and the flow ended (its
// admission released) once both are done.
func TestRelaySocketsHalfClose(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
	tn := newTunnel(t, up, nil)
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})

	upData := make([]byte, 3<<20)
	downData := make([]byte, 5<<20)
	rand.Read(upData)
	rand.Read(downData)
	errc := make(chan error, 4)
	read := func(c net.Conn, want []byte) {
		got, err := io.ReadAll(c) // to EOF: the half-close came through
		if err == nil && !bytes.Equal(got, want) {
			err = io.ErrShortBuffer
		}
		errc <- err
	}
	write := func(c net.Conn, data []byte) {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}
	go read(upRemote, upData)
	go write(clRemote, upData)
	// The client's direction finishes first; the other keeps going.
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if tn.openFlows() != 1 {
		t.Fatal("flow ended after one direction finished")
	}
	go read(clRemote, downData)
	go write(upRemote, downData)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for tn.openFlows() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("flow still open after both directions finished")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRelayEndAllSockets: EndAll closes an idle flow that holds no
// goroutine (nothing is blocked in a read to notice on its own): the
// workstation gets a RST, Tor's side an end of stream.
func TestRelayEndAllSockets(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
	tn := newTunnel(t, up, nil)
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})
	tn.EndAll()
	clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := clRemote.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after EndAll: workstation read %v, want ECONNRESET", err)
	}
	upRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := upRemote.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after EndAll: upstream read %v, want EOF", err)
	}
	if n := tn.openFlows(); n != 0 {
		t.Fatalf("%d flows open after EndAll", n)
	}
}
