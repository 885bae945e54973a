package main

// The hostile LAN against the workstation services (issue 21): the SOCKS
// ports and the filtered control port that torgate serves on the
// gateway's LAN addresses, inside its own network stack. A floods them,
// borrows B's credentials and finally wears B's MAC, while B (and C) want
// their service; the uplink must stay as clean as in the other recipes.
//
// Recipes: S1 SOCKS flood (connections that never finish the greeting,
// CONNECTs that hang upstream, a burst of CONNECTs); S2 control-port flood
// (a thousand idle connections, overlong lines, binary garbage, NULs); S3
// A sends B's SOCKS credentials; S4 A takes B's MAC. The floods come from
// testdata/hostile/svcflood.py (plain sockets).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

const (
	// torBrowserPort is the SOCKS port Tor Browser uses on a
	// Whonix-Workstation, among the default ports.
	torBrowserPort = "9150"
	// controlPort is the filtered control port's default.
	controlPort = "9051"

	// The bounds a workstation meets, from docs/limits.md (the services'
	// own tests hold the constants to their rows):
	//
	// socksHandshakesPerWS: SOCKS handshakes in progress per workstation
	// (socksport.DefaultMaxHandshakesPerSource); over it, a RST.
	socksHandshakesPerWS = 32
	// socksHandshakeTimeout: a SOCKS handshake that does not finish is
	// closed (socksport.DefaultHandshakeTimeout).
	socksHandshakeTimeout = 10 * time.Second
	// dialsPerWS: SOCKS dials in progress per workstation (the tunnel's);
	// a CONNECT over it gets a failure reply.
	dialsPerWS = 128
	// controlConnsPerWS: control port connections per workstation; over
	// it, a RST.
	controlConnsPerWS = 8
	// controlPreAuth: a control connection that does not AUTHENTICATE
	// within it is closed.
	controlPreAuth = 10 * time.Second
)

// testServices plays the services recipes. Services are on by default:
// startTorgate passes no service flags.
func (h *hostileNet) testServices(t *testing.T) {
	t.Run("S1-socks-flood", h.socksFlood)
	t.Run("S2-control-flood", h.controlFlood)
	t.Run("S3-borrowed-credentials", h.borrowedCredentials)
	t.Run("S4-spoofed-mac", h.spoofedMAC)
}

// floodReport is svcflood.py's account of one kind of connection.
type floodReport struct {
	Opened, Connected, Refused int
	Closed, Reset, Open        int
	Connecting                 int
	HeldMax                    int     `json:"held_max"`
	ClosedMedianS              float64 `json:"closed_median_s"`
	First                      string
	OK, Failed                 int // burst only
}

// parseFlood reads svcflood.py's last line.
func parseFlood(t *testing.T, line string) map[string]floodReport {
	t.Helper()
	i := strings.IndexByte(line, '{')
	var r map[string]floodReport
	if i < 0 || json.Unmarshal([]byte(line[i:]), &r) != nil {
		t.Fatalf("svcflood.py: no report in %q", line)
	}
	return r
}

// socksArgs are curl's arguments to fetch through the gateway's SOCKS
// port (on its IPv4 LAN address, or IPv6 for a port "[v6]:9150") with
// creds ("user:password", "" for none), the name resolved by the gateway,
// as Tor Browser does.
func socksArgs(port, creds string) []string {
	proxy := net.JoinHostPort(gwLAN4, port)
	if p, ok := strings.CutPrefix(port, "[v6]:"); ok {
		proxy = net.JoinHostPort(gwLAN6, p)
	}
	args := []string{"--socks5-hostname", proxy}
	if creds != "" {
		args = append(args, "-U", creds)
	}
	return args
}

// socksFetch fetches a name of its own through a SOCKS port from host and
// returns the credentials of the CONNECT torgate made for it upstream
// (ok false if the fetch failed or made no CONNECT).
func (h *hostileNet) socksFetch(t *testing.T, host *lanHost, port, creds string, curlArgs ...string) (auth socks.Auth, took time.Duration, ok bool) {
	t.Helper()
	name := fmt.Sprintf("s%d-%s.example.test", h.names.Add(1), h.id)
	m := h.mark()
	body, took, err := h.fetch(host, "http://"+name+"/", append(socksArgs(port, creds), curlArgs...)...)
	if err != nil || !strings.Contains(body, gwMarker) {
		t.Logf("%s through SOCKS :%s (-U %q %v): %v after %v: %s", host.name, port, creds, curlArgs, err, took.Round(time.Millisecond), strings.TrimSpace(body))
		return auth, took, false
	}
	c := h.connectsSince(m, func(r sockstest.Request) bool { return r.Dst == socks.HostPort(name, 80) })
	if len(c) != 1 {
		t.Errorf("%s's fetch of %s through SOCKS :%s made %d CONNECTs for it, want 1", host.name, name, port, len(c))
		return auth, took, false
	}
	return c[0].Auth, took, true
}

// transparentFetch fetches url4 on the transparent path from host and
// returns the credentials of torgate's CONNECT for it (ok false if the
// fetch failed or made no CONNECT).
func (h *hostileNet) transparentFetch(t *testing.T, host *lanHost, curlArgs ...string) (auth socks.Auth, took time.Duration, ok bool) {
	t.Helper()
	m := h.mark()
	body, took, err := h.fetch(host, url4, curlArgs...)
	if err != nil || !strings.Contains(body, gwMarker) {
		t.Logf("%s transparent %v: %v after %v: %s", host.name, curlArgs, err, took.Round(time.Millisecond), strings.TrimSpace(body))
		return auth, took, false
	}
	c := h.connectsSince(m, toDst(inetAddr4+":80"))
	if len(c) != 1 {
		t.Errorf("%s's transparent fetch of %s made %d CONNECTs for it, want 1", host.name, url4, len(c))
		return auth, took, false
	}
	return c[0].Auth, took, true
}

// mustSOCKS wants host served through a SOCKS port within normalTime and
// returns the upstream credentials.
func (h *hostileNet) mustSOCKS(t *testing.T, host *lanHost, what, port, creds string) socks.Auth {
	t.Helper()
	auth, took, ok := h.socksFetch(t, host, port, creds)
	if !ok {
		t.Errorf("%s: %s not served through SOCKS :%s", what, host.name, port)
	} else {
		t.Logf("%s: %s fetched through SOCKS :%s in %v", what, host.name, port, took.Round(time.Millisecond))
	}
	return auth
}

// authString shortens derived credentials for the log.
func authString(a socks.Auth) string {
	short := func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	}
	return short(a.Username) + ":" + short(a.Password)
}

// controlSession plays what Tor Browser does on the control port from
// host: PROTOCOLINFO, AUTHENTICATE, GETINFO status/circuit-established
// and net/listeners/socks, SIGNAL NEWNYM, each wanting 250 (and a line
// containing what it wants), all within normalTime.
func (h *hostileNet) controlSession(host *lanHost) (time.Duration, error) {
	return h.controlSessionFrom(host, "", normalTime)
}

// controlSessionFrom is controlSession from local address src ("": the
// kernel's choice), all within limit.
func (h *hostileNet) controlSessionFrom(host *lanHost, src string, limit time.Duration) (time.Duration, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var c net.Conn
	err := netns.Do(host.ns, func() (err error) {
		var d net.Dialer
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(gwLAN4, controlPort))
		return err
	})
	if err != nil {
		return time.Since(began), err
	}
	defer c.Close()
	c.SetDeadline(began.Add(limit))
	r := bufio.NewReader(c)
	for _, step := range []struct{ cmd, want string }{
		{"PROTOCOLINFO 1", "250-AUTH METHODS="},
		{"AUTHENTICATE", "250 OK"},
		{"GETINFO status/circuit-established", "250-status/circuit-established=1"},
		{"GETINFO net/listeners/socks", `"` + net.JoinHostPort(gwLAN4, torBrowserPort) + `"`},
		{"SIGNAL NEWNYM", "250 OK"},
	} {
		lines, err := controlCommand(c, r, step.cmd)
		if err != nil {
			return time.Since(began), fmt.Errorf("%s: %w", step.cmd, err)
		}
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, step.want)
		}
		if !found || lines[len(lines)-1] != "250 OK" {
			return time.Since(began), fmt.Errorf("%s: got %q, want a line %q and 250 OK", step.cmd, lines, step.want)
		}
	}
	controlCommand(c, r, "QUIT")
	return time.Since(began), nil
}

// controlCommand sends one command and reads its reply: lines up to the
// one whose fourth byte is a space (Tor's control protocol, section 2.3),
// data lines ("250+", up to ".") included.
func controlCommand(c net.Conn, r *bufio.Reader, cmd string) ([]string, error) {
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return nil, err
	}
	var lines []string
	for inData := false; ; {
		l, err := r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		switch {
		case inData:
			inData = l != "."
		case len(l) >= 4 && l[3] == '+':
			inData = true
		case len(l) < 4 || l[3] == ' ':
			return lines, nil
		}
	}
}

// alive fails t if torgate has exited.
func (h *hostileNet) alive(t *testing.T, what string) {
	t.Helper()
	if h.tg == nil {
		t.Fatalf("%s: torgate not running", what)
	}
	select {
	case <-h.tg.done:
		t.Fatalf("%s: torgate exited: %v\n%s", what, h.tg.err, tail(h.tg.out.String(), 40))
	default:
	}
}

// logServiceMetrics logs torgate's non-zero counters of the services and
// of the shares they count in.
func (h *hostileNet) logServiceMetrics(t *testing.T, what string) []string {
	m := h.metrics(t, "socksport_", "ctlport_", "isolation", "flows", "drop", "refused")
	t.Logf("%s: metrics:\n%s", what, strings.Join(m, "\n"))
	return m
}

// servedDuring wants B served through its SOCKS port and the transparent
// path, three times each, and logs how long each took.
func (h *hostileNet) servedDuring(t *testing.T, what string) {
	t.Helper()
	B := h.hosts["B"]
	var viaSOCKS, viaTransparent []string
	for range 3 {
		if _, took, ok := h.socksFetch(t, B, torBrowserPort, "b:x"); ok {
			viaSOCKS = append(viaSOCKS, took.Round(time.Millisecond).String())
		} else {
			t.Errorf("%s: B not served through SOCKS :%s", what, torBrowserPort)
		}
		body, took, err := h.fetch(B, url4)
		if err != nil || !strings.Contains(body, gwMarker) {
			t.Errorf("%s: B fetching %s: %v after %v: %s", what, url4, err, took.Round(time.Millisecond), strings.TrimSpace(body))
		} else {
			viaTransparent = append(viaTransparent, took.Round(time.Millisecond).String())
		}
	}
	t.Logf("%s: B's fetches through SOCKS :%s took %s; transparent %s", what, torBrowserPort,
		strings.Join(viaSOCKS, ", "), strings.Join(viaTransparent, ", "))
}

// socksFlood is recipe S1: from A, CONNECTs whose upstream hangs, a burst
// of CONNECTs, and hundreds of connections to Tor Browser's port that
// never finish the greeting, while B fetches through the same port and
// the transparent path. A holds at most its share of handshakes, each for
// at most the handshake timeout, and at most its share of dials.
func (h *hostileNet) socksFlood(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe S1")
	h.mustSOCKS(t, B, "recipe S1 before", torBrowserPort, "b:x")
	// Long enough for the handshake timeout to close what A holds.
	const seconds = 13
	m := h.mark()
	flood := h.startScript(t, A, "svcflood.py", strconv.Itoa(seconds), gwLAN4, torBrowserPort,
		fmt.Sprintf("hang=hang-%s.example.test:%d:150", h.id, hangPort),
		fmt.Sprintf("burst=burst-%s.example.test:8", h.id),
		"silent:500", "greet:200")
	t.Log(flood.waitLine(t, "svcflood: ready", 20*time.Second))
	h.servedDuring(t, "recipe S1 during the flood")
	h.alive(t, "recipe S1 during the flood")
	h.logServiceMetrics(t, "recipe S1 during the flood")
	r := parseFlood(t, flood.wait(t, seconds*time.Second+20*time.Second))
	h.alive(t, "recipe S1 after the flood")
	hangs := len(h.connectsSince(m, func(r sockstest.Request) bool { return r.Dst.Port == hangPort }))
	bursts := len(h.connectsSince(m, func(r sockstest.Request) bool { return r.Dst.Name == "burst-"+h.id+".example.test" }))
	t.Logf("recipe S1: A's flood: %+v", r)
	t.Logf("recipe S1: upstream saw %d of A's CONNECTs to the hanging port and %d of its burst (%d answered 0x00, %d failed)",
		hangs, bursts, r["burst"].OK, r["burst"].Failed)
	stalled := r["silent"].HeldMax + r["greet"].HeldMax
	t.Logf("recipe S1: of A's %d connections that never finished the handshake, %d were refused (RST to the SYN), %d reset at once, %d closed later; it held at most %d, %d at the end",
		r["silent"].Opened+r["greet"].Opened, r["silent"].Refused+r["greet"].Refused, r["silent"].Reset+r["greet"].Reset,
		r["silent"].Closed+r["greet"].Closed-r["silent"].Reset-r["greet"].Reset, stalled, r["silent"].Open+r["greet"].Open)
	if stalled > socksHandshakesPerWS {
		t.Errorf("recipe S1: A held %d SOCKS handshakes that never finished, over its share of %d", stalled, socksHandshakesPerWS)
	}
	if n := r["silent"].Open + r["greet"].Open; n > 0 {
		t.Errorf("recipe S1: %d of A's handshakes that never finished were still open after %ds (handshake timeout %v)", n, seconds, socksHandshakeTimeout)
	}
	// Its hanging CONNECTs take A's whole share of dials (its burst then
	// gets failure replies). Once A hung up they end with it: a SOCKS
	// client that leaves cancels its dial, as Tor does (before that fix,
	// torgate_flows_active stayed at 128 for the 90 s dial timeout).
	if r["hang"].HeldMax > dialsPerWS || hangs > dialsPerWS {
		t.Errorf("recipe S1: A held %d CONNECTs pending, %d reached upstream, over its share of %d dials", r["hang"].HeldMax, hangs, dialsPerWS)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		active := h.metrics(t, "torgate_flows_active")
		if len(active) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("recipe S1: 5 s after A hung up, its CONNECTs are still dialling: %v", active)
			break
		}
	}
	met := h.logServiceMetrics(t, "recipe S1 after the flood")
	for _, want := range []string{`socksport_handshakes_refused_total{reason="share"}`, `socksport_handshakes_refused_total{reason="timeout"}`} {
		if !hasMetric(met, want) {
			t.Errorf("recipe S1: no %s above 0 after A's flood", want)
		}
	}
	h.servedDuring(t, "recipe S1 after the flood")
	h.checkUplink(t, "recipe S1")
}

// hasMetric reports whether one of lines (from h.metrics: non-zero
// values) names the metric with labels want, e.g. `x_total{reason="y"}`.
func hasMetric(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want+" ") {
			return true
		}
	}
	return false
}

// controlFlood is recipe S2: from A, overlong lines, binary garbage and
// NULs, then a thousand idle connections to the control port, while B
// plays Tor Browser's control session. A holds at most its share of
// connections, each closed unless it authenticates; bad input closes the
// connection; each refusal is counted.
func (h *hostileNet) controlFlood(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe S2")
	if took, err := h.controlSession(B); err != nil {
		t.Errorf("recipe S2 before: B's control session: %v after %v", err, took.Round(time.Millisecond))
	}
	// Long enough for the pre-authentication limit to close what A holds.
	const seconds = 13
	flood := h.startScript(t, A, "svcflood.py", strconv.Itoa(seconds), gwLAN4, controlPort,
		"long:2", "binary:2", "nul:2", "silent:1000")
	t.Log(flood.waitLine(t, "svcflood: ready", 20*time.Second))
	var tooks []string
	for i := range 3 {
		took, err := h.controlSession(B)
		if err != nil {
			t.Errorf("recipe S2 during the flood (%d): B's control session: %v after %v", i+1, err, took.Round(time.Millisecond))
			continue
		}
		tooks = append(tooks, took.Round(time.Millisecond).String())
	}
	t.Logf("recipe S2 during the flood: B's control sessions took %s", strings.Join(tooks, ", "))
	h.servedDuring(t, "recipe S2 during the flood")
	h.alive(t, "recipe S2 during the flood")
	h.logServiceMetrics(t, "recipe S2 during the flood")
	r := parseFlood(t, flood.wait(t, seconds*time.Second+20*time.Second))
	h.alive(t, "recipe S2 after the flood")
	t.Logf("recipe S2: A's flood: %+v", r)
	for _, k := range []string{"long", "binary", "nul"} {
		if strings.Contains(r[k].First, "250") {
			t.Errorf("recipe S2: the control port answered %s input with %q", k, r[k].First)
		}
		if r[k].Open > 0 {
			t.Errorf("recipe S2: %d of A's connections that sent %s input still open after %ds", r[k].Open, k, seconds)
		}
	}
	held := r["silent"].HeldMax + r["long"].HeldMax + r["binary"].HeldMax + r["nul"].HeldMax
	t.Logf("recipe S2: A held at most %d control connections; of its %d idle ones %d were refused (RST to the SYN), %d reset later, %d closed after a median %.1fs, %d open at the end",
		held, r["silent"].Opened, r["silent"].Refused, r["silent"].Reset, r["silent"].Closed, r["silent"].ClosedMedianS, r["silent"].Open)
	if held > controlConnsPerWS {
		t.Errorf("recipe S2: A held %d control connections, over its share of %d", held, controlConnsPerWS)
	}
	if r["silent"].Open > 0 {
		t.Errorf("recipe S2: %d of A's idle control connections still open after %ds (AUTHENTICATE within %v)", r["silent"].Open, seconds, controlPreAuth)
	}
	met := h.logServiceMetrics(t, "recipe S2 after the flood")
	for _, reason := range []string{"source_share", "line_too_long", "control_char", "preauth"} {
		if want := `ctlport_refused_total{reason="` + reason + `"}`; !hasMetric(met, want) {
			t.Errorf("recipe S2: no %s above 0 after A's flood", want)
		}
	}
	if took, err := h.controlSession(B); err != nil {
		t.Errorf("recipe S2 after: B's control session: %v after %v", err, took.Round(time.Millisecond))
	}
	h.checkUplink(t, "recipe S2")
}

// borrowedCredentials is recipe S3: A sends the SOCKS credentials B uses
// (and none, as B does); torgate's upstream credentials are derived from
// the workstation as well, so A never lands on B's circuits.
func (h *hostileNet) borrowedCredentials(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.checkUplink(t, "before recipe S3")
	type probe struct {
		host        *lanHost
		port, creds string
	}
	probes := []probe{
		{A, torBrowserPort, "a:x"}, {B, torBrowserPort, "a:x"}, {B, torBrowserPort, "a:x"},
		{A, torBrowserPort, ""}, {B, torBrowserPort, ""},
		{B, "9050", "a:x"}, {B, torBrowserPort, "b:x"},
		{B, "[v6]:" + torBrowserPort, "a:x"},
	}
	got := make([]socks.Auth, len(probes))
	for i, p := range probes {
		auth, took, ok := h.socksFetch(t, p.host, p.port, p.creds)
		if !ok {
			t.Errorf("recipe S3: %s not served through SOCKS :%s -U %q", p.host.name, p.port, p.creds)
			continue
		}
		got[i] = auth
		t.Logf("recipe S3: %s on :%s with -U %q in %v: upstream %s", p.host.name, p.port, p.creds, took.Round(time.Millisecond), authString(auth))
		if auth.Username == "" || auth.Username == "a" || auth.Username == "b" || auth.Password == "x" {
			t.Errorf("recipe S3: %s's client credentials %q went upstream as %q:%q, not derived", p.host.name, p.creds, auth.Username, auth.Password)
		}
	}
	differ := func(i, j int, why string) {
		if got[i] != (socks.Auth{}) && got[i] == got[j] {
			t.Errorf("recipe S3: %s: both upstream %s", why, authString(got[i]))
		}
	}
	differ(0, 1, "A and B sending a:x on :9150 share credentials")
	differ(3, 4, "A and B sending none on :9150 share credentials")
	differ(1, 5, "B's a:x on :9150 and on :9050 share credentials")
	differ(1, 6, "B's a:x and b:x on :9150 share credentials")
	differ(1, 4, "B's a:x and none on :9150 share credentials")
	for _, j := range []int{2, 7} {
		if got[1] != got[j] {
			t.Errorf("recipe S3: B's requests with a:x on :9150 (%s) went upstream as %s and %s, want the same circuit", probes[j].port, authString(got[1]), authString(got[j]))
		}
	}
	h.checkUplink(t, "recipe S3")
}

// spoofedMAC is recipe S4: A takes B's MAC while B is off the LAN (its
// switch port down), and uses the SOCKS port, the transparent path and
// the control port with its own address, with B's and with C's.
//
// The outcome, for SECURITY.md ("cannot protect", the forged-MAC item:
// the services change nothing in it): a workstation is a machine, its
// MAC, and torgate cannot tell two machines with one MAC apart. A wearing
// B's MAC is B, with B's addresses and with an address of its own that
// no machine held yet (torgate binds it to B's MAC by its own ARP): its
// SOCKS streams and transparent flows get B's upstream credentials (B's
// circuits) and B's shares, and its SIGNAL NEWNYM is B's New Identity
// (B's circuits change; C's do not). It cannot be C: from C's address,
// bound to C's MAC, nothing is served (the frames are dropped as
// spoofed_source), on any path; it reaches nothing on the gateway but the
// services, and nothing leaves the uplink. Only the switch can stop a
// forged MAC (port security).
func (h *hostileNet) spoofedMAC(t *testing.T) {
	A, B, C := h.hosts["A"], h.hosts["B"], h.hosts["C"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe S4")
	// B's and C's upstream credentials, through the SOCKS port with the
	// same client credentials and on the transparent path. A stays quiet
	// until it wears B's MAC, so that no address is bound to A's own.
	bAuth := h.mustSOCKS(t, B, "recipe S4, B first", torBrowserPort, "s:x")
	cAuth := h.mustSOCKS(t, C, "recipe S4, C first", torBrowserPort, "s:x")
	bT, _, okB := h.transparentFetch(t, B)
	cT, _, okC := h.transparentFetch(t, C)
	if bAuth == (socks.Auth{}) || cAuth == (socks.Auth{}) || !okB || !okC {
		t.Fatal("recipe S4: B or C not served; nothing to compare")
	}
	if bAuth == cAuth || bT == cT {
		t.Fatalf("recipe S4: B and C share upstream credentials: SOCKS %s, transparent %s", authString(bAuth), authString(bT))
	}
	isC := func(a socks.Auth) bool { return a == cT || a == cAuth }

	// B leaves (its switch port down: no frame of B's, and the switch
	// forgets where B's MAC was); A takes B's MAC and B's and C's
	// addresses besides its own.
	mustRun(t, "ip", "-n", h.sw, "link", "set", B.port, "down")
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		for _, a := range []string{B.addr4, C.addr4} {
			exec.Command("ip", "-n", A.ns, "addr", "del", a+"/18", "dev", "eth0").Run()
		}
		exec.Command("ip", "-n", A.ns, "link", "set", "dev", "eth0", "address", A.mac).Run()
		exec.Command("ip", "-n", h.sw, "link", "set", B.port, "up").Run()
	}
	t.Cleanup(restore)
	mustRun(t, "ip", "-n", A.ns, "link", "set", "dev", "eth0", "address", B.mac)
	for _, a := range []string{B.addr4, C.addr4} {
		mustRun(t, "ip", "-n", A.ns, "addr", "add", a+"/18", "dev", "eth0")
	}

	m := h.mark()
	for _, src := range []struct {
		name, addr string
		asB        bool // the documented outcome: served as B, else not served
	}{
		{"its own address", A.addr4, true},
		{"B's address", B.addr4, true},
		{"C's address", C.addr4, false},
	} {
		args := []string{"--interface", src.addr}
		if !src.asB {
			// A time-out is the outcome: not worth normalTime.
			args = append(args, "--max-time", "2")
		}
		outcome := func(path string, auth, bs socks.Auth, took time.Duration, ok bool) {
			switch {
			case ok && isC(auth):
				t.Errorf("recipe S4: A with B's MAC and %s, %s: served with C's upstream credentials", src.name, path)
			case ok && auth == bs && src.asB:
				t.Logf("recipe S4: A with B's MAC and %s, %s: served as B (B's upstream credentials) in %v", src.name, path, took.Round(time.Millisecond))
			case !ok && !src.asB:
				t.Logf("recipe S4: A with B's MAC and %s, %s: not served (%v)", src.name, path, took.Round(time.Millisecond))
			case ok:
				t.Errorf("recipe S4: A with B's MAC and %s, %s: served in %v with %s (B's: %s), want %s", src.name, path, took.Round(time.Millisecond),
					authString(auth), authString(bs), map[bool]string{true: "B's", false: "no service"}[src.asB])
			default:
				t.Errorf("recipe S4: A with B's MAC and %s, %s: not served (%v), want served as B", src.name, path, took.Round(time.Millisecond))
			}
		}
		auth, took, ok := h.socksFetch(t, A, torBrowserPort, "s:x", args...)
		outcome("SOCKS :"+torBrowserPort, auth, bAuth, took, ok)
		auth, took, ok = h.transparentFetch(t, A, args...)
		outcome("transparent", auth, bT, took, ok)
		if src.asB {
			// Nothing on the gateway but its services, whoever A is:
			// checkUplink counts what the gateway's own :2222 accepted.
			if body, _, err := h.fetch(A, "http://"+net.JoinHostPort(gwLAN4, gwServicePort)+"/", args...); err == nil {
				t.Errorf("recipe S4: A with B's MAC and %s fetched the gateway's own :%s: %q", src.name, gwServicePort, body)
			}
		}
	}
	// The control port: as B, New Identity for B; as C, nothing.
	if took, err := h.controlSessionFrom(A, C.addr4, 2*time.Second); err == nil {
		t.Errorf("recipe S4: A with B's MAC and C's address had a control session (%v)", took.Round(time.Millisecond))
	} else {
		t.Logf("recipe S4: A with B's MAC and C's address, control port: %v after %v", err, took.Round(time.Millisecond))
	}
	if took, err := h.controlSessionFrom(A, A.addr4, normalTime); err != nil {
		t.Errorf("recipe S4: A with B's MAC and its own address, control port: %v after %v, want B's session", err, took.Round(time.Millisecond))
	} else {
		t.Logf("recipe S4: A with B's MAC and its own address: a control session as B, NEWNYM included, in %v", took.Round(time.Millisecond))
	}
	for _, r := range h.connectsSince(m, nil) {
		if isC(r.Auth) {
			t.Errorf("recipe S4: a CONNECT to %v while A wore B's MAC carried C's credentials", r.Dst)
		}
	}
	h.checkUplink(t, "recipe S4 while A wore B's MAC")

	// B back: A's NEWNYM was B's New Identity; C's circuits never moved.
	restore()
	if auth := h.mustSOCKS(t, B, "recipe S4, B back", torBrowserPort, "s:x"); auth == bAuth {
		t.Errorf("recipe S4: B's SOCKS credentials unchanged after A, as B, sent NEWNYM")
	}
	if auth, _, ok := h.transparentFetch(t, B); !ok {
		t.Errorf("recipe S4: B not served on the transparent path after A's visit")
	} else if auth == bT {
		t.Errorf("recipe S4: B's transparent credentials unchanged after A, as B, sent NEWNYM")
	}
	if auth := h.mustSOCKS(t, C, "recipe S4, C after", torBrowserPort, "s:x"); auth != cAuth {
		t.Errorf("recipe S4: C's SOCKS credentials changed while A wore B's MAC: %s, before %s", authString(auth), authString(cAuth))
	}
	if auth, _, ok := h.transparentFetch(t, C); !ok {
		t.Errorf("recipe S4: C not served on the transparent path after A's visit")
	} else if auth != cT {
		t.Errorf("recipe S4: C's transparent credentials changed while A wore B's MAC: %s, before %s", authString(auth), authString(cT))
	}
	h.logServiceMetrics(t, "recipe S4")
	if n := h.metrics(t, `spoofed_source`); len(n) == 0 {
		t.Errorf("recipe S4: no spoofed_source drop counted while A used C's address with B's MAC")
	} else {
		t.Logf("recipe S4: %s", strings.Join(n, "; "))
	}
	h.checkUplink(t, "recipe S4")
}
