package ctlport

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCommands runs each command an authenticated workstation may send
// and checks the reply line by line.
func TestCommands(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConns, c.MaxConnsPerSource = 1000, 1000 })
	for _, tc := range []struct {
		name string
		send string
		want []string
	}{
		{name: "protocolinfo", send: "PROTOCOLINFO 1", want: []string{"250-PROTOCOLINFO 1", "250-AUTH METHODS=NULL", `250-VERSION Tor="0.4.9.1"`, "250 OK"}},
		{name: "getinfo version", send: "GETINFO version", want: []string{"250-version=0.4.9.1", "250 OK"}},
		{name: "getinfo lower-case command", send: "getinfo status/circuit-established", want: []string{"250-status/circuit-established=1", "250 OK"}},
		{name: "getinfo several", send: "GETINFO status/bootstrap-phase consensus/valid-after consensus/fresh-until consensus/valid-until",
			want: []string{`250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`,
				"250-consensus/valid-after=2026-12-05 07:00:00", "250-consensus/fresh-until=2026-12-05 08:00:00",
				"250-consensus/valid-until=2026-12-05 10:00:00", "250 OK"}},
		{name: "socks listeners are the gateway's", send: "GETINFO net/listeners/socks", want: []string{`250-net/listeners/socks="10.152.152.10:9150"`, "250 OK"}},
		{name: "getinfo none", send: "GETINFO", want: []string{"250 OK"}},
		{name: "address refused", send: "GETINFO address", want: []string{`552 Unrecognized key "address"`}},
		{name: "circuit-status refused", send: "GETINFO circuit-status", want: []string{`552 Unrecognized key "circuit-status"`}},
		{name: "stream-status refused", send: "GETINFO stream-status", want: []string{`552 Unrecognized key "stream-status"`}},
		{name: "one bad key refuses all", send: "GETINFO version ns/all", want: []string{`552 Unrecognized key "ns/all"`}},
		{name: "key case matters", send: "GETINFO VERSION", want: []string{`552 Unrecognized key "VERSION"`}},
		{name: "quote in key is escaped", send: `GETINFO a"b\c`, want: []string{`552 Unrecognized key "a\"b\\c"`}},
		{name: "too many keys", send: "GETINFO" + strings.Repeat(" version", maxInfoKeys+1), want: []string{"512 Too many keys"}},
		{name: "getconf", send: "GETCONF DisableNetwork", want: []string{"250 DisableNetwork=0"}},
		{name: "getconf owner", send: "GETCONF __OwningControllerProcess disablenetwork", want: []string{"250-__OwningControllerProcess", "250 DisableNetwork=0"}},
		{name: "getconf other", send: "GETCONF SocksPort", want: []string{`552 Unrecognized configuration key "SocksPort"`}},
		{name: "setevents", send: "SETEVENTS STATUS_CLIENT NOTICE WARN ERR circ STREAM", want: []string{"250 OK"}},
		{name: "setevents none", send: "SETEVENTS", want: []string{"250 OK"}},
		{name: "setevents unknown", send: "SETEVENTS BOGUS", want: []string{`552 Unrecognized event "BOGUS"`}},
		{name: "usefeature", send: "USEFEATURE VERBOSE_NAMES EXTENDED_EVENTS", want: []string{"250 OK"}},
		{name: "usefeature unknown", send: "USEFEATURE X", want: []string{`552 Unrecognized feature "X"`}},
		{name: "signal reload", send: "SIGNAL RELOAD", want: []string{`552 Unrecognized signal code "RELOAD"`}},
		{name: "signal shutdown", send: "SIGNAL SHUTDOWN", want: []string{`552 Unrecognized signal code "SHUTDOWN"`}},
		{name: "signal halt", send: "SIGNAL HALT", want: []string{`552 Unrecognized signal code "HALT"`}},
		{name: "signal cleardnscache", send: "SIGNAL CLEARDNSCACHE", want: []string{`552 Unrecognized signal code "CLEARDNSCACHE"`}},
		{name: "signal dormant", send: "SIGNAL DORMANT", want: []string{`552 Unrecognized signal code "DORMANT"`}},
		{name: "signal without code", send: "SIGNAL", want: []string{"512 Syntax error in SIGNAL"}},
		{name: "setconf", send: "SETCONF SocksPort=0.0.0.0:9050", want: []string{`510 Unrecognized command "SETCONF"`}},
		{name: "saveconf", send: "SAVECONF", want: []string{`510 Unrecognized command "SAVECONF"`}},
		{name: "add_onion", send: "ADD_ONION NEW:BEST Port=80", want: []string{`510 Unrecognized command "ADD_ONION"`}},
		{name: "takeownership", send: "TAKEOWNERSHIP", want: []string{`510 Unrecognized command "TAKEOWNERSHIP"`}},
		{name: "dropguards", send: "DROPGUARDS", want: []string{`510 Unrecognized command "DROPGUARDS"`}},
		{name: "mapaddress", send: "MAPADDRESS 1.2.3.4=example.com", want: []string{`510 Unrecognized command "MAPADDRESS"`}},
		{name: "empty line", send: "", want: []string{`510 Unrecognized command ""`}},
		{name: "authchallenge", send: "AUTHCHALLENGE SAFECOOKIE 00", want: []string{"513 Cookie authentication is disabled"}},
		{name: "authenticate again", send: `AUTHENTICATE "x"`, want: []string{"250 OK"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A connection each, so that no case waits for the command
			// rate.
			c := h.authed(wsA)
			c.t = t
			if got := c.cmd(tc.send); !slices.Equal(got, tc.want) {
				t.Errorf("%q:\n got %q\nwant %q", tc.send, got, tc.want)
			}
			c.cmd("QUIT")
		})
	}
	// A multi-line command's data is read and dropped, and the
	// connection goes on.
	c := h.authed(wsA)
	if got := c.cmd("+LOADCONF\r\nSocksPort 0.0.0.0:9050\r\n."); !slices.Equal(got, []string{`510 Unrecognized command "LOADCONF"`}) {
		t.Errorf("+LOADCONF = %q", got)
	}
	if got := c.cmd("QUIT"); !slices.Equal(got, []string{"250 closing connection"}) {
		t.Errorf("QUIT = %q", got)
	}
	if !c.closed() {
		t.Error("connection open after QUIT")
	}
	for _, k := range h.tor.askedKeys() {
		if !torKeys[k] {
			t.Errorf("Tor was asked for %q", k)
		}
	}
	if h.ids.get() != nil {
		t.Errorf("NewIdentity called: %v", h.ids.get())
	}
}

// TestSocksListenersIPv6: a workstation on the gateway's IPv6 address
// is told the SOCKS listeners on that address, bracketed.
func TestSocksListenersIPv6(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial(wsA, gw6)
	c.cmd("AUTHENTICATE")
	want := []string{`250-net/listeners/socks="[fd19:c33d:88bc::10]:9150" "[fd19:c33d:88bc::10]:9050"`, "250 OK"}
	if got := c.cmd("GETINFO net/listeners/socks"); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if n := h.tor.numCalls(); n != 0 {
		t.Errorf("Tor asked %d times for torgate's own key", n)
	}
}

// TestBeforeAuthentication: only PROTOCOLINFO, AUTHCHALLENGE,
// AUTHENTICATE and QUIT are answered; anything else is Tor's 514 and the
// end of the connection.
func TestBeforeAuthentication(t *testing.T) {
	h := newHarness(t, nil)
	for _, cmd := range []string{"GETINFO version", "SIGNAL NEWNYM", "SETEVENTS", "+LOADCONF", "BOGUS"} {
		c := h.dial(wsA, gw)
		if got := c.cmd(cmd); !slices.Equal(got, []string{"514 Authentication required."}) {
			t.Errorf("%q before AUTHENTICATE = %q", cmd, got)
		}
		if !c.closed() {
			t.Errorf("%q before AUTHENTICATE: connection stays open", cmd)
		}
	}
	c := h.dial(wsA, gw)
	if got := c.cmd("PROTOCOLINFO"); len(got) != 4 || got[3] != "250 OK" {
		t.Errorf("PROTOCOLINFO = %q", got)
	}
	if got := c.cmd("AUTHENTICATE 27736563726574"); !slices.Equal(got, []string{"250 OK"}) {
		t.Errorf("AUTHENTICATE with a password = %q", got)
	}
	if got := c.cmd("GETINFO version"); len(got) != 2 {
		t.Errorf("GETINFO after AUTHENTICATE = %q", got)
	}
	if h.ids.get() != nil {
		t.Error("NEWNYM before AUTHENTICATE reached NewIdentity")
	}

	// Past maxPreAuthCommands a connection that will not authenticate
	// is closed.
	c = h.dial(wsB, gw)
	for i := range maxPreAuthCommands {
		if got := c.cmd("PROTOCOLINFO"); len(got) != 4 {
			t.Fatalf("PROTOCOLINFO %d = %q", i, got)
		}
	}
	if got := c.cmd("PROTOCOLINFO"); !slices.Equal(got, []string{"514 Authentication required."}) || !c.closed() {
		t.Errorf("PROTOCOLINFO past the limit = %q", got)
	}
}

// TestPreAuthTimeout: a connection that does not authenticate within
// PreAuthTimeout is closed; one that did has no idle timeout.
func TestPreAuthTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		idle := h.dial(wsA, gw)
		authed := h.authed(wsB)
		time.Sleep(PreAuthTimeout + time.Second)
		synctest.Wait()
		if !idle.closed() {
			t.Error("unauthenticated connection open after PreAuthTimeout")
		}
		time.Sleep(24 * time.Hour)
		if got := authed.cmd("GETINFO status/circuit-established"); len(got) != 2 {
			t.Errorf("authenticated connection after a day idle: %q", got)
		}
		if v := testutil.ToFloat64(h.srv.m.refused.WithLabelValues(reasonPreAuth)); v != 1 {
			t.Errorf("refused{preauth} = %v", v)
		}
	})
}

// TestBadInput: overlong lines, control characters, HTTP and too much
// multi-line data each close the connection and are counted.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		send   string
		reply  []string
		reason string
	}{
		{name: "line too long", send: "GETINFO " + strings.Repeat("x", DefaultMaxLine), reply: []string{"510 Line too long"}, reason: reasonLineTooLong},
		{name: "NUL", send: "GETINFO ver\x00sion", reply: []string{"510 Control character in command"}, reason: reasonControlChar},
		{name: "escape", send: "\x1b[31mGETINFO", reply: []string{"510 Control character in command"}, reason: reasonControlChar},
		{name: "http post", send: "POST / HTTP/1.1", reason: reasonHTTP},
		{name: "http get", send: "GET /x HTTP/1.0", reason: reasonHTTP},
		{name: "data too long", send: "+POSTDESCRIPTOR\r\n" + strings.Repeat(strings.Repeat("y", 1000)+"\r\n", maxDataBytes/1000+1), reply: []string{"510 Data too long"}, reason: reasonDataTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			c := h.dial(wsA, gw)
			if tc.reason != reasonHTTP {
				c.cmd("AUTHENTICATE")
			}
			go c.conn.Write([]byte(tc.send + "\r\n")) // the server may stop reading
			if got := c.readReply(); !slices.Equal(got, tc.reply) {
				t.Errorf("reply %q, want %q", got, tc.reply)
			}
			if !c.closed() {
				t.Error("connection stays open")
			}
			if v := testutil.ToFloat64(h.srv.m.refused.WithLabelValues(tc.reason)); v != 1 {
				t.Errorf("refused{%s} = %v", tc.reason, v)
			}
		})
	}
}

// TestLineLimit: a line of exactly MaxLine bytes, CRLF included, is
// served; one byte more is not.
func TestLineLimit(t *testing.T) {
	h := newHarness(t, nil)
	c := h.authed(wsA)
	ok := "SETEVENTS WARN" + strings.Repeat(" ERR", (DefaultMaxLine-2-len("SETEVENTS WARN"))/4)
	if len(ok)+2 != DefaultMaxLine {
		t.Fatalf("test line of %d bytes", len(ok)+2)
	}
	if got := c.cmd(ok); !slices.Equal(got, []string{"250 OK"}) {
		t.Errorf("line of MaxLine bytes = %q", got)
	}
	go c.conn.Write([]byte(ok + " \r\n"))
	if got := c.readReply(); !slices.Equal(got, []string{"510 Line too long"}) {
		t.Errorf("line of MaxLine+1 bytes = %q", got)
	}
}

// TestNewNym: SIGNAL NEWNYM gives this workstation, and only it, a new
// identity; an early one is answered 250 OK and carried out when the
// interval ends, several early ones as one.
func TestNewNym(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		a, b := h.authed(wsA), h.authed(wsB)
		start := time.Now()
		if got := a.cmd("SIGNAL NEWNYM"); !slices.Equal(got, []string{"250 OK"}) {
			t.Fatalf("NEWNYM = %q", got)
		}
		if got := h.ids.get(); !slices.Equal(got, []netip.Addr{wsA}) {
			t.Fatalf("NewIdentity calls %v, want [%v]", got, wsA)
		}
		time.Sleep(3 * time.Second)
		// Another workstation is not limited by A's.
		if got := b.cmd("signal newnym"); !slices.Equal(got, []string{"250 OK"}) {
			t.Fatalf("B's NEWNYM = %q", got)
		}
		// A's second and third within the interval: 250 OK, one call at
		// start+10s.
		a.cmd("SIGNAL NEWNYM")
		a2 := h.authed(wsA)
		a2.cmd("SIGNAL NEWNYM")
		if got := h.ids.get(); !slices.Equal(got, []netip.Addr{wsA, wsB}) {
			t.Fatalf("NewIdentity calls %v before the interval ended", got)
		}
		time.Sleep(time.Until(start.Add(NewNymInterval)) + time.Millisecond)
		synctest.Wait()
		if got := h.ids.get(); !slices.Equal(got, []netip.Addr{wsA, wsB, wsA}) {
			t.Fatalf("NewIdentity calls %v after the interval", got)
		}
		if at := h.ids.at[2].Sub(start); at != NewNymInterval {
			t.Errorf("delayed NEWNYM ran after %v, want %v", at, NewNymInterval)
		}
		for r, want := range map[string]float64{nymDone: 3, nymDelayed: 1, nymCoalesced: 1, nymFailed: 0} {
			if v := testutil.ToFloat64(h.srv.m.newnym.WithLabelValues(r)); v != want {
				t.Errorf("newnym{%s} = %v, want %v", r, v, want)
			}
		}
		// A failure is reported and does not count against the limit.
		time.Sleep(NewNymInterval)
		h.ids.mu.Lock()
		h.ids.fail = errors.New("no circuits")
		h.ids.mu.Unlock()
		if got := b.cmd("SIGNAL NEWNYM"); !slices.Equal(got, []string{"551 New identity failed"}) {
			t.Errorf("failed NEWNYM = %q", got)
		}
		h.ids.mu.Lock()
		h.ids.fail = nil
		h.ids.mu.Unlock()
		b.cmd("SIGNAL NEWNYM")
		if got := h.ids.get(); len(got) != 4 || got[3] != wsB {
			t.Errorf("NEWNYM after a failure: calls %v", got)
		}
	})
}

// TestCloseCancelsDelayedNewNym: Close stops a NEWNYM waiting for its
// interval; NewIdentity is never called after Close.
func TestCloseCancelsDelayedNewNym(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		a := h.authed(wsA)
		a.cmd("SIGNAL NEWNYM")
		a.cmd("SIGNAL NEWNYM")
		h.srv.Close()
		time.Sleep(time.Minute)
		if got := h.ids.get(); len(got) != 1 {
			t.Errorf("NewIdentity calls %v, want one", got)
		}
		if !a.closed() {
			t.Error("connection open after Close")
		}
		late := h.dial(wsA, gw)
		if !late.flow.wasRejected() {
			t.Error("flow after Close not rejected")
		}
	})
}

// TestConnectionLimits: past the per-workstation and total caps a flow
// gets a RST, and a closed connection frees its slot.
func TestConnectionLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.MaxConns, c.MaxConnsPerSource = 4, 2 })
		a1, a2 := h.authed(wsA), h.authed(wsA)
		if a3 := h.dial(wsA, gw); !a3.flow.wasRejected() {
			t.Error("third connection from one workstation accepted")
		}
		h.authed(wsB) // 3 of 4: the 4th is the reserve, and no one is proven
		if c := h.dial(netip.MustParseAddr("10.152.152.13"), gw); !c.flow.wasRejected() {
			t.Error("connection into the unproven reserve accepted")
		}
		a1.cmd("QUIT")
		synctest.Wait()
		h.authed(wsA)
		_ = a2
		if v := testutil.ToFloat64(h.srv.m.refused.WithLabelValues(reasonSourceShare)); v != 1 {
			t.Errorf("refused{source_share} = %v", v)
		}
		if v := testutil.ToFloat64(h.srv.m.refused.WithLabelValues(reasonLimit)); v != 1 {
			t.Errorf("refused{limit} = %v", v)
		}
		if v := testutil.ToFloat64(h.srv.m.open); v != 3 {
			t.Errorf("open connections = %v, want 3", v)
		}
	})
}

// TestThrottle: past CommandBurst, commands are answered at CommandRate.
func TestThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		c := h.authed(wsA) // one token spent
		start := time.Now()
		for range CommandBurst - 1 + 20 {
			c.cmd("GETINFO net/listeners/socks")
		}
		if took := time.Since(start); took != 20*time.Second/CommandRate {
			t.Errorf("%d commands past the burst took %v, want %v", 20, took, 20*time.Second/CommandRate)
		}
		if v := testutil.ToFloat64(h.srv.m.throttled); v != 20 {
			t.Errorf("throttled = %v, want 20", v)
		}
	})
}

// TestTorInfoCache: however many workstations ask, Tor is asked about
// once per key per infoTTL.
func TestTorInfoCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		a, b := h.authed(wsA), h.authed(wsB)
		for range 5 {
			a.cmd("GETINFO version status/circuit-established")
			b.cmd("GETINFO status/circuit-established version")
		}
		if n := h.tor.numCalls(); n != 1 {
			t.Errorf("Tor asked %d times, want 1", n)
		}
		time.Sleep(infoTTL)
		h.tor.mu.Lock()
		h.tor.info["status/circuit-established"] = "0"
		h.tor.mu.Unlock()
		if got := a.cmd("GETINFO status/circuit-established"); got[0] != "250-status/circuit-established=0" {
			t.Errorf("after infoTTL: %q", got)
		}
	})
}

// TestTorPerWorkstation: with several Tor instances each workstation's
// GETINFO is answered by its own Tor (Config.Tor), and one Tor's cached
// answer is never another's: a workstation whose Tor has no circuit
// hears so while the other's says it has one.
func TestTorPerWorkstation(t *testing.T) {
	other := newFakeTor()
	other.info["status/circuit-established"] = "0"
	var h *harness
	h = newHarness(t, func(c *Config) {
		c.Tor = func(who netip.Addr) Tor {
			if who == wsB {
				return other
			}
			return h.tor
		}
	})
	a, b := h.authed(wsA), h.authed(wsB)
	for range 2 {
		if got := a.cmd("GETINFO status/circuit-established"); got[0] != "250-status/circuit-established=1" {
			t.Errorf("A (Tor 0): %q", got)
		}
		if got := b.cmd("GETINFO status/circuit-established"); got[0] != "250-status/circuit-established=0" {
			t.Errorf("B (Tor 1): %q", got)
		}
	}
	if h.tor.numCalls() != 1 || other.numCalls() != 1 {
		t.Errorf("Tor 0 asked %d times, Tor 1 %d; want once each", h.tor.numCalls(), other.numCalls())
	}
}

// TestTorUnavailable: when Tor does not answer, the Tor keys get 551,
// torgate's own key is still answered, and PROTOCOLINFO names
// FallbackVersion.
func TestTorUnavailable(t *testing.T) {
	h := newHarness(t, nil)
	h.tor.err = errors.New("not connected to tor's control port")
	c := h.dial(wsA, gw)
	if got := c.cmd("PROTOCOLINFO"); got[2] != `250-VERSION Tor="`+FallbackVersion+`"` {
		t.Errorf("PROTOCOLINFO = %q", got)
	}
	c.cmd("AUTHENTICATE")
	if got := c.cmd("GETINFO status/circuit-established"); !slices.Equal(got, []string{"551 Not available"}) {
		t.Errorf("GETINFO with Tor down = %q", got)
	}
	if got := c.cmd("GETINFO net/listeners/socks"); len(got) != 2 {
		t.Errorf("GETINFO net/listeners/socks with Tor down = %q", got)
	}
}

// TestPlainMode: without a control connection the status keys come
// from Ready and the rest is 551.
func TestPlainMode(t *testing.T) {
	var ready error
	h := newHarness(t, func(c *Config) {
		c.Tor = nil
		c.Ready = func() error { return ready }
	})
	c := h.authed(wsA)
	for _, tc := range []struct {
		send string
		want []string
	}{
		{send: "GETINFO status/circuit-established", want: []string{"250-status/circuit-established=1", "250 OK"}},
		{send: "GETINFO status/bootstrap-phase", want: []string{`250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`, "250 OK"}},
		{send: "GETINFO version", want: []string{"551 Not available"}},
		{send: "GETINFO consensus/valid-until", want: []string{"551 Not available"}},
		{send: "GETINFO address", want: []string{`552 Unrecognized key "address"`}},
		{send: "PROTOCOLINFO", want: []string{"250-PROTOCOLINFO 1", "250-AUTH METHODS=NULL", `250-VERSION Tor="` + FallbackVersion + `"`, "250 OK"}},
	} {
		if got := c.cmd(tc.send); !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.send, got, tc.want)
		}
	}
	ready = errors.New("tor not ready")
	if got := c.cmd("GETINFO status/circuit-established"); got[0] != "250-status/circuit-established=0" {
		t.Errorf("not ready: %q", got)
	}
	if got := c.cmd("GETINFO status/bootstrap-phase"); !slices.Equal(got, []string{"551 Not available"}) {
		t.Errorf("not ready: %q", got)
	}
}

// TestMultiLineValue: a value of several lines goes as a dot-stuffed
// data block (no allowed key has one today; Tor is trusted, but a line
// break must never end up as a reply line of its own).
func TestMultiLineValue(t *testing.T) {
	h := newHarness(t, nil)
	h.tor.info["version"] = "a\r\n.b"
	c := h.authed(wsA)
	want := []string{"250+version=", "a", "..b", ".", "250 OK"}
	if got := c.cmd("GETINFO version"); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestConfig: New refuses what it cannot serve with.
func TestConfig(t *testing.T) {
	ok := Config{NewIdentity: func(netip.Addr) error { return nil }, SOCKSListeners: socksOn}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{name: "no NewIdentity", edit: func(c *Config) { c.NewIdentity = nil }},
		{name: "no SOCKSListeners", edit: func(c *Config) { c.SOCKSListeners = nil }},
		{name: "negative MaxConns", edit: func(c *Config) { c.MaxConns = -1 }},
		{name: "per source above total", edit: func(c *Config) { c.MaxConns, c.MaxConnsPerSource = 2, 3 }},
		{name: "MaxLine tiny", edit: func(c *Config) { c.MaxLine = 10 }},
		{name: "MaxLine huge", edit: func(c *Config) { c.MaxLine = 1 << 30 }},
	} {
		cfg := ok
		tc.edit(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	s, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close() // twice is fine
}

// TestMetrics: the collectors lint clean and have bounded labels that do
// not grow with what a workstation sends.
func TestMetrics(t *testing.T) {
	synctest.Test(t, testMetrics)
}

func testMetrics(t *testing.T) {
	h := newHarness(t, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.srv.Metrics()...)
	before := testutil.CollectAndCount(h.srv.m.commands)
	c := h.authed(wsA)
	for i := range 50 {
		c.cmd("X" + strings.Repeat("Y", i))
	}
	if n := testutil.CollectAndCount(h.srv.m.commands); n != before {
		t.Errorf("commands_total series %d → %d", before, n)
	}
	if v := testutil.ToFloat64(h.srv.m.commands.WithLabelValues("other")); v != 50 {
		t.Errorf("commands{other} = %v", v)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
