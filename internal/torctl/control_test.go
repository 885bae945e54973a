package torctl

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// readingConn returns a Conn on one end of a pipe, past authentication
// (that exchange is bine's, tested against fakeTor in TestAuthentication),
// and the other end.
func readingConn(t testing.TB, onEvent func(Event)) (*Conn, net.Conn) {
	a, b := net.Pipe()
	c := NewConn(a, onEvent)
	c.reading = true
	go c.readLoop()
	t.Cleanup(func() {
		c.Close()
		b.Close()
	})
	return c, b
}

// scriptConn is readingConn whose peer answers each command line with
// script[line], raw (CRLFs included), and "510 ..." to anything else.
func scriptConn(t testing.TB, script map[string]string, onEvent func(Event)) *Conn {
	c, peer := readingConn(t, onEvent)
	go func() {
		r := bufio.NewReader(peer)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			rep, ok := script[strings.TrimRight(line, "\r\n")]
			if !ok {
				rep = "510 Unrecognized command\r\n"
			}
			if _, err := io.WriteString(peer, rep); err != nil {
				return
			}
		}
	}()
	return c
}

// eventLog records events from a Conn's reading goroutine.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, ev)
}

func (l *eventLog) get() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

func TestConnReplies(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Reply
		wantErr int // status of the *ReplyError, 0 for none
		events  []Event
	}{
		{name: "single", raw: "250 OK\r\n", want: Reply{Status: 250, Lines: []ReplyLine{{Text: "OK"}}}},
		{
			name: "multi",
			raw:  "250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done\r\n250 OK\r\n",
			want: Reply{Status: 250, Lines: []ReplyLine{{Text: "status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done"}, {Text: "OK"}}},
		},
		{
			name: "data",
			raw:  "250+stream-status=\r\n1 SUCCEEDED 5 a:80\r\n..dot\r\n.\r\n250 OK\r\n",
			want: Reply{Status: 250, Lines: []ReplyLine{{Text: "stream-status=", Data: "1 SUCCEEDED 5 a:80\n.dot"}, {Text: "OK"}}},
		},
		{
			name:   "event first",
			raw:    "650 STREAM 3 NEW 0 a:80 SOURCE_ADDR=127.0.0.1:4\r\n250 OK\r\n",
			want:   Reply{Status: 250, Lines: []ReplyLine{{Text: "OK"}}},
			events: []Event{{Code: "STREAM", Raw: "3 NEW 0 a:80 SOURCE_ADDR=127.0.0.1:4", Lines: []ReplyLine{{Text: "STREAM 3 NEW 0 a:80 SOURCE_ADDR=127.0.0.1:4"}}}},
		},
		{
			name:    "error",
			raw:     "552 Unrecognized signal code \"BOGUS\"\r\n",
			want:    Reply{Status: 552, Lines: []ReplyLine{{Text: `Unrecognized signal code "BOGUS"`}}},
			wantErr: 552,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log eventLog
			c := scriptConn(t, map[string]string{"CMD": tt.raw, "NEXT": "250 OK\r\n"}, log.add)
			got, err := c.Request(t.Context(), "CMD")
			var re *ReplyError
			switch {
			case tt.wantErr == 0 && err != nil:
				t.Fatalf("Request: %v", err)
			case tt.wantErr != 0 && (!errors.As(err, &re) || re.Status != tt.wantErr || re.Command != "CMD"):
				t.Fatalf("Request: %v, want a *ReplyError %d", err, tt.wantErr)
			}
			if got.Status != tt.want.Status || !slices.Equal(got.Lines, tt.want.Lines) {
				t.Errorf("Request = %+v, want %+v", got, tt.want)
			}
			// Events come before the reply that followed them.
			evs := log.get()
			if len(evs) != len(tt.events) {
				t.Fatalf("events %+v, want %+v", evs, tt.events)
			}
			for i := range evs {
				if evs[i].Code != tt.events[i].Code || evs[i].Raw != tt.events[i].Raw || !slices.Equal(evs[i].Lines, tt.events[i].Lines) {
					t.Errorf("event %d = %+v, want %+v", i, evs[i], tt.events[i])
				}
			}
			if _, err := c.Request(t.Context(), "NEXT"); err != nil {
				t.Errorf("connection unusable after the reply: %v", err)
			}
		})
	}
}

func TestConnGetInfo(t *testing.T) {
	c := scriptConn(t, map[string]string{
		"GETINFO net/listeners/socks circuit-status": "250-net/listeners/socks=\"127.0.0.1:9050\" \"unix:/run/tor/socks\"\r\n" +
			"250+circuit-status=\r\n4 BUILT $A~a PURPOSE=GENERAL\r\n5 LAUNCHED\r\n.\r\n250 OK\r\n",
		"GETINFO version": "250 OK\r\n",
	}, nil)
	info, err := c.GetInfo(t.Context(), "net/listeners/socks", "circuit-status")
	if err != nil {
		t.Fatal(err)
	}
	if got := info["net/listeners/socks"]; got != `"127.0.0.1:9050" "unix:/run/tor/socks"` {
		t.Errorf("net/listeners/socks = %q", got)
	}
	if got := info["circuit-status"]; got != "4 BUILT $A~a PURPOSE=GENERAL\n5 LAUNCHED" {
		t.Errorf("circuit-status = %q", got)
	}
	if _, err := c.GetInfo(t.Context(), "version"); !errors.Is(err, ErrSyntax) {
		t.Errorf("GetInfo with the value missing: %v, want ErrSyntax", err)
	}
}

// TestConnBadReply: a reply the protocol does not allow ends the
// connection; the command waiting gets net.ErrClosed.
func TestConnBadReply(t *testing.T) {
	for _, bad := range []string{"25\r\n", "abc OK\r\n", "250*OK\r\n", "250-a\r\n251 b\r\n"} {
		c := scriptConn(t, map[string]string{"CMD": bad}, nil)
		if _, err := c.Request(t.Context(), "CMD"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("reply %q: %v, want net.ErrClosed", bad, err)
		}
		select {
		case <-c.Done():
		default:
			t.Errorf("reply %q: connection not done", bad)
		}
	}
}

// TestConnAbandon: a command whose context ends first returns ctx's
// error and closes the connection (a late reply cannot be skipped); the
// next command fails at once.
func TestConnAbandon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := scriptConn(t, map[string]string{"HANG": ""}, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := c.Request(ctx, "HANG"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Request: %v, want DeadlineExceeded", err)
		}
		if err := c.Err(); !errors.Is(err, net.ErrClosed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err = %v, want net.ErrClosed and why", err)
		}
		if _, err := c.Request(t.Context(), "NEXT"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Request after an abandoned one: %v, want net.ErrClosed", err)
		}
		// An ended context sends nothing and keeps the connection.
		c2 := scriptConn(t, map[string]string{}, nil)
		if _, err := c2.Request(ctx, "X"); !errors.Is(err, context.DeadlineExceeded) || c2.Err() != nil {
			t.Errorf("Request with an ended context: %v (Err %v)", err, c2.Err())
		}
	})
}

// TestConnClose: Close ends a waiting command, then waits until the
// reading goroutine is gone.
func TestConnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := scriptConn(t, map[string]string{"HANG": ""}, nil)
		res := make(chan error, 1)
		go func() {
			_, err := c.Request(t.Context(), "HANG")
			res <- err
		}()
		synctest.Wait()
		c.Close()
		if err := <-res; !errors.Is(err, net.ErrClosed) {
			t.Errorf("waiting command: %v, want net.ErrClosed", err)
		}
		select {
		case <-c.loopDone:
		default:
			t.Error("Close returned before the reading goroutine")
		}
		c.Close() // idempotent
		if _, err := c.Request(t.Context(), "X"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Request after Close: %v", err)
		}
	})
}

func TestConnMisuse(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := NewConn(a, nil)
	defer c.Close()
	if _, err := c.Request(t.Context(), "GETINFO version"); !errors.Is(err, errNotAuthenticated) {
		t.Errorf("Request before Authenticate: %v", err)
	}
	c.reading = true
	go c.readLoop()
	if _, err := c.Request(t.Context(), "SETCONF A=1\r\nSIGNAL HALT"); err == nil {
		t.Error("Request sent a line with CRLF in it")
	}
}

// FuzzConnReply: whatever the peer sends, the Conn does not panic or hang,
// every reply and event it hands out has a status and at least one line,
// and the fields of every line split or fail with ErrSyntax. Annotated
// seeds are in testdata/fuzz/FuzzConnReply.
func FuzzConnReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(what string, status int, lines []ReplyLine) {
			if status < 100 || status > 999 || len(lines) == 0 {
				t.Fatalf("%s with status %d and %d lines", what, status, len(lines))
			}
			for _, l := range lines {
				for _, s := range append([]string{l.Text}, strings.Split(l.Data, "\n")...) {
					if _, err := SplitFields(s); err != nil && !errors.Is(err, ErrSyntax) {
						t.Fatalf("SplitFields(%q): %v", s, err)
					}
				}
			}
		}
		c, peer := readingConn(t, func(ev Event) {
			if strings.Contains(ev.Code, " ") {
				t.Errorf("event code %q", ev.Code)
			}
			check("event", 650, ev.Lines)
		})
		go io.Copy(io.Discard, peer)
		go func() {
			peer.Write(in)
			peer.Close()
		}()
		for range 8 {
			rep, err := c.Request(t.Context(), "GETINFO x")
			var re *ReplyError
			if err != nil && !errors.As(err, &re) {
				return
			}
			check("reply", rep.Status, rep.Lines)
		}
	})
}
