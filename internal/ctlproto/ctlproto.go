// Package ctlproto holds the parts of Tor's control-port text format
// (control-spec section 2) that both torctl and the test network's control
// client need: splitting a reply line into fields.
package ctlproto

import (
	"errors"
	"strings"
)

// ErrSyntax is returned for a line with an unterminated quoted string or
// a dangling escape.
var ErrSyntax = errors.New("ctlproto: malformed control-port line")

// SplitFields splits a control-protocol line into space-separated fields,
// where a field may be or contain a quoted string with C-style escapes
// (KEY="some value"). Quotes are removed and escapes resolved.
func SplitFields(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	inField, inQuote := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case inQuote && ch == '\\':
			i++
			if i == len(s) {
				return nil, ErrSyntax
			}
			b.WriteByte(unescape(s[i]))
		case inQuote && ch == '"':
			inQuote = false
		case inQuote:
			b.WriteByte(ch)
		case ch == '"':
			inQuote, inField = true, true
		case ch == ' ':
			if inField {
				out = append(out, b.String())
				b.Reset()
				inField = false
			}
		default:
			b.WriteByte(ch)
			inField = true
		}
	}
	if inQuote {
		return nil, ErrSyntax
	}
	if inField {
		out = append(out, b.String())
	}
	return out, nil
}

func unescape(ch byte) byte {
	switch ch {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return ch
}
