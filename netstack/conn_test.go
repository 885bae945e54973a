package netstack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/torgate/torgate/bench"
	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/netstack"
)

// connPair joins a workstation to a Stack whose TCP handler hands every
// accepted flow to the test. The workstation is bench's, not wstest's:
// wireguard's tun/netstack never releases the packet buffers it injects
// (netTun.Write has no DecRef) and cannot be closed while it sends, so
// its gVisor objects would fail TestMain's reference leak check; bench's
// releases every packet and closes.
type connPair struct {
	ws    *bench.Workstation
	st    *netstack.Stack
	conns chan net.Conn
	port  atomic.Uint32
}

func newConnPair(t *testing.T) *connPair {
	t.Helper()
	ws, err := bench.NewWorkstation(netip.MustParseAddr("10.152.152.11"), 1500)
	if err != nil {
		t.Fatal(err)
	}
	p := &connPair{ws: ws, conns: make(chan net.Conn, 1)}
	p.port.Store(1000)
	p.st, err = netstack.New(netstack.Config{
		Device: ws.Link(),
		TCP: netstack.TCPHandlerFunc(func(r flow.Request) {
			c, err := r.Accept()
			if err != nil {
				return
			}
			p.conns <- c
		}),
	})
	if err != nil {
		ws.Close()
		t.Fatal(err)
	}
	p.st.Start()
	t.Cleanup(func() {
		p.st.Close()
		ws.Close()
	})
	return p
}

// pair returns a fresh connection: the Stack's end and the workstation's.
func (p *connPair) pair() (stackEnd, wsEnd net.Conn, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(p.port.Add(1)))
	w, err := p.ws.Dial(ctx, dst)
	if err != nil {
		return nil, nil, err
	}
	select {
	case c := <-p.conns:
		return c, w, nil
	case <-ctx.Done():
		w.Close()
		return nil, nil, ctx.Err()
	}
}

// TestConnNettest holds Conn to the net.Conn contract: deadlines, close,
// concurrent use, data integrity.
func TestConnNettest(t *testing.T) {
	p := newConnPair(t)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2, err = p.pair()
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestConnWaitRead: WaitRead returns when data arrives, when the peer
// finishes sending, and when the connection is closed locally.
func TestConnWaitRead(t *testing.T) {
	p := newConnPair(t)
	type waiter interface{ WaitRead() error }
	wait := func(c net.Conn) <-chan error {
		done := make(chan error, 1)
		go func() { done <- c.(waiter).WaitRead() }()
		return done
	}
	expect := func(name string, done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: WaitRead did not return", name)
		}
	}

	c, w, err := p.pair()
	if err != nil {
		t.Fatal(err)
	}
	done := wait(c)
	waitParked(t, "(*Conn).WaitRead")
	select {
	case <-done:
		t.Fatal("WaitRead returned with nothing to read")
	default:
	}
	w.Write([]byte("x"))
	expect("data", done)
	var b [1]byte
	if n, err := c.Read(b[:]); n != 1 || err != nil {
		t.Fatalf("read after WaitRead: %d, %v", n, err)
	}
	w.(interface{ CloseWrite() error }).CloseWrite()
	expect("peer FIN", wait(c))
	if _, err := c.Read(b[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("read after FIN: %v, want EOF", err)
	}

	c, w, err = p.pair()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	done = wait(c)
	// Close must wake a parked WaitRead; one that starts after Close
	// returns at once and would prove nothing.
	waitParked(t, "(*Conn).WaitRead")
	c.Close()
	expect("local close", done)
}

// waitParked waits until a goroutine is blocked on a channel inside fn
// (a function name as runtime.Stack prints it). Nothing signals that a
// goroutine parked, so this polls the goroutine dump.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); ; {
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			if strings.Contains(head, "[chan receive") && strings.Contains(g, fn) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine parked in %s after 10 s", fn)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConnAbortResets: Abort reaches the workstation as a RST (a read
// fails with an error that is not EOF), while
// Close and CloseWrite end the stream with a FIN (EOF). (After a FIN
// the workstation has read its EOF already: a RST cannot take it back.)
func TestConnAbortResets(t *testing.T) {
	p := newConnPair(t)
	readAll := func(w net.Conn) ([]byte, error) {
		w.SetReadDeadline(time.Now().Add(10 * time.Second))
		return io.ReadAll(w)
	}
	for _, tc := range []struct {
		name    string
		end     func(c net.Conn)
		wantRST bool
	}{
		{name: "close", end: func(c net.Conn) { c.Close() }},
		{name: "closewrite", end: func(c net.Conn) { c.(interface{ CloseWrite() error }).CloseWrite() }},
		{name: "abort", end: func(c net.Conn) { c.(*netstack.Conn).Abort() }, wantRST: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, w, err := p.pair()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			defer c.Close()
			if _, err := c.Write([]byte("head")); err != nil {
				t.Fatal(err)
			}
			var b [4]byte
			w.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(w, b[:]); err != nil {
				t.Fatal(err)
			}
			tc.end(c)
			_, err = readAll(w)
			var ne net.Error
			switch {
			case tc.wantRST && err == nil:
				t.Fatal("workstation saw a clean end of stream, want a reset")
			case tc.wantRST && errors.As(err, &ne) && ne.Timeout():
				t.Fatalf("workstation saw nothing: %v", err)
			case !tc.wantRST && err != nil:
				t.Fatalf("workstation read %v, want a clean EOF", err)
			}
		})
	}
}
