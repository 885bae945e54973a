package ctlport

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// FuzzControlLine feeds one line to the parser and then to an
// authenticated session's handler, and checks what must hold for any
// input: the parser refuses exactly the lines with control characters;
// every reply line is a status line of a code ctlport uses (or a line of
// a data block), ends in CRLF and holds no other line break; Tor is
// never asked for a key off the allowlist; NewIdentity is only ever
// called for the connection's own workstation.
func FuzzControlLine(f *testing.F) {
	for _, s := range []string{
		"PROTOCOLINFO 1", "AUTHENTICATE \"pw\"", "GETINFO version net/listeners/socks",
		"GETINFO address", "SIGNAL NEWNYM", "SIGNAL RELOAD", "SETEVENTS CIRC STREAM",
		"GETCONF DisableNetwork", "+LOADCONF", "SETCONF a=b", "GET / HTTP/1.1",
		"GETINFO a\"b", "\x00", "",
	} {
		f.Add([]byte(s))
	}
	h := newHarness(f, func(c *Config) { c.Logger = nil })
	gwEnd, ws := net.Pipe()
	defer ws.Close()
	defer gwEnd.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := parseLine(b)
		hasCtl := bytes.ContainsFunc(b, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
		if hasCtl != (err != nil) {
			t.Fatalf("parseLine(%q): err %v, control characters %v", b, err, hasCtl)
		}
		if err != nil {
			return
		}
		if strings.ContainsRune(cmd.keyword, ' ') || cmd.keyword != strings.ToUpper(cmd.keyword) {
			t.Fatalf("parseLine(%q): keyword %q", b, cmd.keyword)
		}
		c := newSession(h.srv, gwEnd, wsA, gw)
		c.authed = true
		c.handle(cmd)
		out := c.out.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("%q: reply %q does not end in CRLF", b, out)
		}
		data := false
		for _, l := range strings.SplitAfter(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			l = strings.TrimSuffix(l, "\r\n")
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("%q: reply line %q holds a line break", b, l)
			}
			if data {
				data = l != "."
				continue
			}
			if len(l) < 4 || !strings.Contains("250 510 512 513 514 551 552", l[:3]) || !strings.ContainsRune(" -+", rune(l[3])) {
				t.Fatalf("%q: reply line %q", b, l)
			}
			data = l[3] == '+'
		}
		for _, k := range h.tor.askedKeys() {
			if !torKeys[k] {
				t.Fatalf("%q: Tor asked for %q", b, k)
			}
		}
		for _, who := range h.ids.get() {
			if who != wsA {
				t.Fatalf("%q: NewIdentity for %v", b, who)
			}
		}
	})
}
