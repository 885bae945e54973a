package ctlport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// session is one workstation's control connection. Its goroutine is the
// only one to touch it.
type session struct {
	s     *Server
	conn  net.Conn
	who   netip.Addr // the workstation: NEWNYM's scope
	local netip.Addr // the gateway address it connected to
	r     *bufio.Reader
	out   bytes.Buffer // the reply being built

	authed  bool
	preAuth int // commands before AUTHENTICATE

	tokens float64   // the command-rate bucket
	filled time.Time // when tokens was last topped up
}

func newSession(s *Server, conn net.Conn, who, local netip.Addr) *session {
	return &session{
		s: s, conn: conn, who: who, local: local,
		r:      bufio.NewReaderSize(conn, s.cfg.MaxLine),
		tokens: CommandBurst,
		filled: s.now(),
	}
}

// run reads and answers commands until the workstation leaves, breaks a
// rule or the Server closes.
func (c *session) run() {
	c.conn.SetReadDeadline(time.Now().Add(PreAuthTimeout))
	for {
		b, err := c.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			c.s.m.refuse(reasonLineTooLong)
			c.fail("510 Line too long")
			return
		case err != nil:
			var ne net.Error
			if !c.authed && errors.As(err, &ne) && ne.Timeout() {
				c.s.m.refuse(reasonPreAuth)
			}
			return
		}
		cmd, err := parseLine(trimEOL(b))
		if err != nil {
			c.s.m.refuse(reasonControlChar)
			c.fail("510 Control character in command")
			return
		}
		if httpMethods[cmd.keyword] {
			c.s.m.refuse(reasonHTTP)
			return
		}
		if cmd.multi && c.authed && !c.skipData() {
			return
		}
		if !c.throttle() {
			return
		}
		c.s.m.command(cmd.keyword)
		keep := c.handle(cmd)
		if c.out.Len() > 0 {
			c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := c.conn.Write(c.out.Bytes()); err != nil {
				return
			}
			c.out.Reset()
		}
		if !keep {
			return
		}
	}
}

// fail sends a last error line and gives up.
func (c *session) fail(line string) {
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.conn.Write([]byte(line + "\r\n"))
}

// skipData reads and drops a multi-line command's data, up to the line
// holding only ".". False: the data was too long or the connection ended.
func (c *session) skipData() bool {
	n := 0
	for {
		b, err := c.r.ReadSlice('\n')
		n += len(b)
		switch {
		case errors.Is(err, bufio.ErrBufferFull) || n > maxDataBytes:
			c.s.m.refuse(reasonDataTooLong)
			c.fail("510 Data too long")
			return false
		case err != nil:
			return false
		}
		if string(trimEOL(b)) == "." {
			return true
		}
	}
}

// throttle takes a token for one command, waiting for the rate when the
// burst is spent. False: the Server closed meanwhile.
func (c *session) throttle() bool {
	now := c.s.now()
	if d := now.Sub(c.filled); d > 0 {
		c.tokens = min(CommandBurst, c.tokens+d.Seconds()*CommandRate)
	}
	c.filled = now
	if c.tokens < 1 {
		c.s.m.throttled.Inc()
		wait := time.Duration((1 - c.tokens) / CommandRate * float64(time.Second))
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.s.ctx.Done():
			return false
		}
		c.tokens, c.filled = 1, c.filled.Add(wait)
	}
	c.tokens--
	return true
}

// reply appends one reply line.
func (c *session) reply(format string, args ...any) {
	fmt.Fprintf(&c.out, format, args...)
	c.out.WriteString("\r\n")
}

// handle answers one command; false closes the connection.
func (c *session) handle(cmd command) bool {
	if !c.authed {
		c.preAuth++
		switch {
		case cmd.keyword == "PROTOCOLINFO", cmd.keyword == "AUTHENTICATE",
			cmd.keyword == "AUTHCHALLENGE", cmd.keyword == "QUIT":
		default:
			c.s.m.refuse(reasonAuthRequired)
			c.reply("514 Authentication required.")
			return false
		}
		if c.preAuth > maxPreAuthCommands {
			c.s.m.refuse(reasonPreAuth)
			c.reply("514 Authentication required.")
			return false
		}
	}
	if cmd.multi {
		c.s.m.refuse(reasonCommand)
		c.reply("510 Unrecognized command %s", quote(cmd.keyword))
		return true
	}
	switch cmd.keyword {
	case "PROTOCOLINFO":
		c.reply("250-PROTOCOLINFO 1")
		c.reply("250-AUTH METHODS=NULL")
		c.reply("250-VERSION Tor=%s", quote(c.s.torVersion(c.who)))
		c.reply("250 OK")
	case "AUTHENTICATE":
		if !c.authed {
			c.authed = true
			c.conn.SetReadDeadline(time.Time{}) // Tor Browser stays for hours
		}
		c.reply("250 OK")
	case "AUTHCHALLENGE":
		c.s.m.refuse(reasonCommand)
		c.reply("513 Cookie authentication is disabled")
	case "QUIT":
		c.reply("250 closing connection")
		return false
	case "GETINFO":
		c.getinfo(cmd.args)
	case "GETCONF":
		c.getconf(cmd.args)
	case "SETEVENTS":
		c.setevents(cmd.args)
	case "SIGNAL":
		c.signal(cmd.args)
	case "USEFEATURE":
		c.usefeature(cmd.args)
	default:
		c.s.m.refuse(reasonCommand)
		c.reply("510 Unrecognized command %s", quote(cmd.keyword))
	}
	return true
}

// getinfo answers GETINFO: served keys only, all or nothing, as Tor.
func (c *session) getinfo(args string) {
	keys := strings.Fields(args)
	if len(keys) > maxInfoKeys {
		c.s.m.refuse(reasonSyntax)
		c.reply("512 Too many keys")
		return
	}
	for _, k := range keys {
		if !torKeys[k] && k != keySocks {
			c.s.m.refuse(reasonInfoKey)
			c.reply("552 Unrecognized key %s", quote(k))
			return
		}
	}
	vals, err := c.infoValues(keys)
	if err != nil {
		c.s.m.refuse(reasonUnavailable)
		c.reply("551 Not available")
		return
	}
	for _, k := range keys {
		v := vals[k]
		if strings.ContainsAny(v, "\r\n") {
			// A value of lines goes as a data block, dot-stuffed.
			c.reply("250+%s=", k)
			for l := range strings.Lines(v) {
				l = strings.TrimRight(l, "\r\n")
				if strings.HasPrefix(l, ".") {
					l = "." + l
				}
				c.reply("%s", l)
			}
			c.reply(".")
			continue
		}
		c.reply("250-%s=%s", k, v)
	}
	c.reply("250 OK")
}

// confValues are the GETCONF keys answered, by lower-cased name: the
// value Tor would give for what the workstation sees ("" is unset).
var confValues = map[string]struct{ name, value string }{
	"disablenetwork":            {"DisableNetwork", "0"},
	"__owningcontrollerprocess": {"__OwningControllerProcess", ""},
}

// getconf answers GETCONF for confValues' keys.
func (c *session) getconf(args string) {
	keys := strings.Fields(args)
	if len(keys) == 0 {
		c.reply("250 OK")
		return
	}
	if len(keys) > maxInfoKeys {
		c.s.m.refuse(reasonSyntax)
		c.reply("512 Too many keys")
		return
	}
	for _, k := range keys {
		if _, ok := confValues[strings.ToLower(k)]; !ok {
			c.s.m.refuse(reasonConfKey)
			c.reply("552 Unrecognized configuration key %s", quote(k))
			return
		}
	}
	for i, k := range keys {
		sep := "-"
		if i == len(keys)-1 {
			sep = " "
		}
		v := confValues[strings.ToLower(k)]
		if v.value == "" {
			c.reply("250%s%s", sep, v.name)
		} else {
			c.reply("250%s%s=%s", sep, v.name, v.value)
		}
	}
}

// events are Tor's event names (control-spec, "SETEVENTS"), and
// EXTENDED, which old clients still send.
var events = map[string]bool{
	"EXTENDED": true, "CIRC": true, "STREAM": true, "ORCONN": true, "BW": true,
	"DEBUG": true, "INFO": true, "NOTICE": true, "WARN": true, "ERR": true,
	"NEWDESC": true, "ADDRMAP": true, "AUTHDIR_NEWDESCS": true,
	"DESCCHANGED": true, "STATUS_GENERAL": true, "STATUS_CLIENT": true,
	"STATUS_SERVER": true, "GUARD": true, "NS": true, "STREAM_BW": true,
	"CLIENTS_SEEN": true, "NEWCONSENSUS": true, "BUILDTIMEOUT_SET": true,
	"SIGNAL": true, "CONF_CHANGED": true, "CIRC_MINOR": true,
	"TRANSPORT_LAUNCHED": true, "CONN_BW": true, "CIRC_BW": true,
	"CELL_STATS": true, "TB_EMPTY": true, "HS_DESC": true,
	"HS_DESC_CONTENT": true, "NETWORK_LIVENESS": true, "PT_LOG": true,
	"PT_STATUS": true,
}

// setevents accepts a list of known events and sends none of them: no
// Tor event is scoped to one workstation.
func (c *session) setevents(args string) {
	for _, e := range strings.Fields(args) {
		if !events[strings.ToUpper(e)] {
			c.s.m.refuse(reasonEvent)
			c.reply("552 Unrecognized event %s", quote(e))
			return
		}
	}
	c.reply("250 OK")
}

// signal serves NEWNYM for this workstation only.
func (c *session) signal(args string) {
	sigs := strings.Fields(args)
	if len(sigs) != 1 {
		c.s.m.refuse(reasonSyntax)
		c.reply("512 Syntax error in SIGNAL")
		return
	}
	if !strings.EqualFold(sigs[0], "NEWNYM") {
		c.s.m.refuse(reasonSignal)
		c.reply("552 Unrecognized signal code %s", quote(sigs[0]))
		return
	}
	result, err := c.s.newnym(c.who)
	c.s.m.newnym.WithLabelValues(result).Inc()
	if err != nil {
		c.s.warnNewnym(err)
		c.reply("551 New identity failed")
		return
	}
	c.reply("250 OK")
}

// features are USEFEATURE's names: always on in Tor since 0.2.2.
var features = []string{"VERBOSE_NAMES", "EXTENDED_EVENTS"}

func (c *session) usefeature(args string) {
	for _, f := range strings.Fields(args) {
		if !slices.Contains(features, strings.ToUpper(f)) {
			c.s.m.refuse(reasonFeature)
			c.reply("552 Unrecognized feature %s", quote(f))
			return
		}
	}
	c.reply("250 OK")
}
