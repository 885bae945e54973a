package ctlport

import (
	"errors"
	"strings"
)

// errControlChar: a command line holds a control character (NUL, or
// binary data): no controller sends one, so the connection is closed.
var errControlChar = errors.New("control character in a command line")

// command is one parsed command line.
type command struct {
	// keyword is the command's name, upper-cased (Tor's keywords are
	// case-insensitive), without the leading '+' of a multi-line command.
	keyword string
	// multi: the line began with '+', so a data block ended by a line
	// holding only "." follows.
	multi bool
	// args is everything after the first space, as sent.
	args string
}

// parseLine parses one command line, its line ending (LF or CRLF, both
// of which Tor accepts) already removed. It fails only on a control
// character: anything else is a command, known or not.
func parseLine(b []byte) (command, error) {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return command{}, errControlChar
		}
	}
	kw, args, _ := strings.Cut(string(b), " ")
	var cmd command
	if strings.HasPrefix(kw, "+") {
		cmd.multi = true
		kw = kw[1:]
	}
	cmd.keyword = strings.ToUpper(kw)
	cmd.args = args
	return cmd, nil
}

// trimEOL removes a trailing LF or CRLF.
func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// httpMethods start the lines of a web page's request sent to the control
// port (a cross-protocol attack through a form POST); none is a control
// command, and Tor also closes on them.
var httpMethods = map[string]bool{
	"GET": true, "POST": true, "PUT": true, "HEAD": true, "DELETE": true,
	"OPTIONS": true, "CONNECT": true, "PATCH": true, "TRACE": true,
}

// quote returns s as a control-protocol quoted string, for echoing a
// workstation's word back in an error reply; s never holds a line break
// (parseLine refused it).
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
