package torctl

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeTor speaks enough of Tor's control protocol for torctl: PROTOCOLINFO,
// AUTHCHALLENGE (SAFECOOKIE), AUTHENTICATE (cookie, password or none),
// GETINFO from a table, SETEVENTS, SIGNAL, TAKEOWNERSHIP and QUIT, plus
// events pushed by the test. Connections are net.Pipe pairs, so a test can
// run inside a synctest bubble.
type fakeTor struct {
	t          testing.TB
	auth       string // "NULL", "SAFECOOKIE" or "HASHEDPASSWORD"
	password   string
	cookie     []byte
	cookieFile string

	mu      sync.Mutex
	info    map[string]string // GETINFO answers
	conns   map[*fakeConn]bool
	signals []string
	owned   int           // TAKEOWNERSHIP count
	hang    bool          // stop answering commands
	stopped chan struct{} // non-nil: commands wait until it is closed (SIGSTOP)
	dials   int
	down    bool // refuse new connections
}

type fakeConn struct {
	nc     net.Conn
	out    chan string // lines to write, in order
	done   chan struct{}
	once   sync.Once
	events map[string]bool // guarded by fakeTor.mu
}

func newFakeTor(t testing.TB, auth string) *fakeTor {
	f := &fakeTor{
		t:     t,
		auth:  auth,
		conns: make(map[*fakeConn]bool),
		info: map[string]string{
			"status/bootstrap-phase":     `NOTICE BOOTSTRAP PROGRESS=0 TAG=starting SUMMARY="Starting"`,
			"status/circuit-established": "0",
			"network-liveness":           "down",
			"net/listeners/socks":        `"127.0.0.1:9050"`,
		},
	}
	if auth == "SAFECOOKIE" {
		f.cookie = make([]byte, 32)
		rand.Read(f.cookie)
		f.cookieFile = filepath.Join(t.TempDir(), "control_auth_cookie")
		if err := os.WriteFile(f.cookieFile, f.cookie, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(f.dropAll)
	return f
}

// dial is a Config.dial hook.
func (f *fakeTor) dial(ctx context.Context) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	if f.down {
		return nil, errors.New("fake tor: connection refused")
	}
	a, b := net.Pipe()
	c := &fakeConn{nc: b, out: make(chan string, 256), done: make(chan struct{}), events: map[string]bool{}}
	f.conns[c] = true
	go c.writeLoop()
	go f.serve(c)
	return a, nil
}

// closeMarker in the output queue closes the connection after the lines
// before it are written.
const closeMarker = "\x00close"

func (c *fakeConn) writeLoop() {
	for {
		select {
		case l := <-c.out:
			if l == closeMarker {
				c.close()
				return
			}
			if _, err := c.nc.Write([]byte(l + "\r\n")); err != nil {
				c.close()
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *fakeConn) send(lines ...string) {
	for _, l := range lines {
		select {
		case c.out <- l:
		case <-c.done:
			return
		}
	}
}

func (c *fakeConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// ready makes every GETINFO answer say "ready".
func (f *fakeTor) setReady() {
	f.set("status/bootstrap-phase", `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`)
	f.set("status/circuit-established", "1")
	f.set("network-liveness", "up")
}

func (f *fakeTor) set(key, val string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info[key] = val
}

// event sends "650 CODE rest" to every connection subscribed to CODE.
func (f *fakeTor) event(line string) {
	code, _, _ := strings.Cut(line, " ")
	f.mu.Lock()
	var to []*fakeConn
	for c := range f.conns {
		if c.events[code] {
			to = append(to, c)
		}
	}
	f.mu.Unlock()
	for _, c := range to {
		c.send("650 " + line)
	}
}

// dropAll closes every connection, as a dying tor would.
func (f *fakeTor) dropAll() {
	f.mu.Lock()
	cs := f.conns
	f.conns = make(map[*fakeConn]bool)
	f.mu.Unlock()
	for c := range cs {
		c.close()
	}
}

func (f *fakeTor) setHang(h bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = h
}

// stop makes the fake behave like a SIGSTOPped tor: commands are read
// but answered only after resume.
func (f *fakeTor) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped == nil {
		f.stopped = make(chan struct{})
	}
}

// resume answers what waited (SIGCONT).
func (f *fakeTor) resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped != nil {
		close(f.stopped)
		f.stopped = nil
	}
}

func (f *fakeTor) setDown(d bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = d
}

func (f *fakeTor) signalsSent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.signals...)
}

var (
	serverKey = []byte("Tor safe cookie authentication server-to-controller hash")
	clientKey = []byte("Tor safe cookie authentication controller-to-server hash")
)

func cookieMAC(key, cookie, cn, sn []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(cookie)
	m.Write(cn)
	m.Write(sn)
	return m.Sum(nil)
}

func (f *fakeTor) serve(c *fakeConn) {
	defer func() {
		c.send(closeMarker)
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()
	r := bufio.NewReader(c.nc)
	authed := false
	var cn, sn []byte
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd, arg, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		f.mu.Lock()
		hang, stopped := f.hang, f.stopped
		f.mu.Unlock()
		if hang {
			continue
		}
		if stopped != nil {
			select {
			case <-stopped:
			case <-c.done:
				return
			}
		}
		if !authed && cmd != "PROTOCOLINFO" && cmd != "AUTHCHALLENGE" && cmd != "AUTHENTICATE" && cmd != "QUIT" {
			c.send("514 Authentication required.")
			return
		}
		switch cmd {
		case "PROTOCOLINFO":
			auth := "250-AUTH METHODS=" + f.auth
			if f.auth == "SAFECOOKIE" {
				auth = "250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"" + f.cookieFile + "\""
			}
			c.send("250-PROTOCOLINFO 1", auth, `250-VERSION Tor="0.4.9.11"`, "250 OK")
		case "AUTHCHALLENGE":
			parts := strings.Fields(arg)
			if len(parts) != 2 || parts[0] != "SAFECOOKIE" {
				c.send("513 Invalid argument")
				continue
			}
			cn, _ = hex.DecodeString(parts[1])
			sn = make([]byte, 32)
			rand.Read(sn)
			c.send(fmt.Sprintf("250 AUTHCHALLENGE SERVERHASH=%X SERVERNONCE=%X",
				cookieMAC(serverKey, f.cookie, cn, sn), sn))
		case "AUTHENTICATE":
			got, _ := hex.DecodeString(arg)
			var ok bool
			switch f.auth {
			case "NULL":
				ok = true
			case "SAFECOOKIE":
				ok = sn != nil && hmac.Equal(got, cookieMAC(clientKey, f.cookie, cn, sn))
			case "HASHEDPASSWORD":
				ok = string(got) == f.password
			}
			if !ok {
				c.send("515 Authentication failed: Password did not match HashedControlPassword value from configuration")
				return
			}
			authed = true
			c.send("250 OK")
		case "GETINFO":
			var lines []string
			f.mu.Lock()
			for _, k := range strings.Fields(arg) {
				v, ok := f.info[k]
				if !ok {
					lines = []string{fmt.Sprintf("552 Unrecognized key %q", k)}
					break
				}
				lines = append(lines, "250-"+k+"="+v)
			}
			f.mu.Unlock()
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "552") {
				lines = append(lines, "250 OK")
			}
			c.send(lines...)
		case "SETEVENTS":
			f.mu.Lock()
			c.events = map[string]bool{}
			for _, e := range strings.Fields(arg) {
				c.events[e] = true
			}
			f.mu.Unlock()
			c.send("250 OK")
		case "SIGNAL":
			f.mu.Lock()
			f.signals = append(f.signals, arg)
			f.mu.Unlock()
			c.send("250 OK")
		case "TAKEOWNERSHIP":
			f.mu.Lock()
			f.owned++
			f.mu.Unlock()
			c.send("250 OK")
		case "QUIT":
			c.send("250 closing connection")
			return
		default:
			c.send(fmt.Sprintf("510 Unrecognized command %q", cmd))
		}
	}
}
