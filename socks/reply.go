package socks

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// Reply is a SOCKS5 reply code: RFC 1928's REP field, extended by Tor.
//
// Tor sends the 0xF0-0xF7 codes for onion service failures when the SocksPort
// has the ExtendedErrors flag; without it those failures arrive as
// ReplyGeneralFailure or ReplyTTLExpired.
type Reply byte

// Reply codes of RFC 1928 section 6 and of Tor's ExtendedErrors
// (socks-extensions.txt, "Extended error codes").
const (
	ReplySucceeded           Reply = 0x00 // succeeded
	ReplyGeneralFailure      Reply = 0x01 // general SOCKS server failure
	ReplyNotAllowed          Reply = 0x02 // connection not allowed by ruleset (Tor: exit policy)
	ReplyNetworkUnreachable  Reply = 0x03 // network unreachable
	ReplyHostUnreachable     Reply = 0x04 // host unreachable (Tor: also resolve failures)
	ReplyConnectionRefused   Reply = 0x05 // connection refused by the destination
	ReplyTTLExpired          Reply = 0x06 // TTL expired (Tor: also timeouts)
	ReplyCommandNotSupported Reply = 0x07 // command not supported
	ReplyAddressNotSupported Reply = 0x08 // address type not supported

	ReplyOnionDescNotFound      Reply = 0xF0 // onion service descriptor can not be found
	ReplyOnionDescInvalid       Reply = 0xF1 // onion service descriptor is invalid
	ReplyOnionIntroFailed       Reply = 0xF2 // onion service introduction failed
	ReplyOnionRendezvousFailed  Reply = 0xF3 // onion service rendezvous failed
	ReplyOnionMissingClientAuth Reply = 0xF4 // onion service missing client authorization
	ReplyOnionWrongClientAuth   Reply = 0xF5 // onion service wrong client authorization
	ReplyOnionInvalidAddress    Reply = 0xF6 // onion service invalid address
	ReplyOnionIntroTimedOut     Reply = 0xF7 // onion service introduction timed out
)

// replyNames holds the label and the human text of each known code.
var replyNames = map[Reply]struct{ label, text string }{
	ReplySucceeded:              {"succeeded", "succeeded"},
	ReplyGeneralFailure:         {"general_failure", "general server failure"},
	ReplyNotAllowed:             {"not_allowed", "connection not allowed by ruleset"},
	ReplyNetworkUnreachable:     {"network_unreachable", "network unreachable"},
	ReplyHostUnreachable:        {"host_unreachable", "host unreachable"},
	ReplyConnectionRefused:      {"connection_refused", "connection refused"},
	ReplyTTLExpired:             {"ttl_expired", "TTL expired"},
	ReplyCommandNotSupported:    {"command_not_supported", "command not supported"},
	ReplyAddressNotSupported:    {"address_not_supported", "address type not supported"},
	ReplyOnionDescNotFound:      {"onion_desc_not_found", "onion service descriptor not found"},
	ReplyOnionDescInvalid:       {"onion_desc_invalid", "onion service descriptor invalid"},
	ReplyOnionIntroFailed:       {"onion_intro_failed", "onion service introduction failed"},
	ReplyOnionRendezvousFailed:  {"onion_rendezvous_failed", "onion service rendezvous failed"},
	ReplyOnionMissingClientAuth: {"onion_missing_client_auth", "onion service client authorization missing"},
	ReplyOnionWrongClientAuth:   {"onion_wrong_client_auth", "onion service client authorization wrong"},
	ReplyOnionInvalidAddress:    {"onion_invalid_address", "invalid onion service address"},
	ReplyOnionIntroTimedOut:     {"onion_intro_timed_out", "onion service introduction timed out"},
}

// String returns a short, stable, lowercase label such as "host_unreachable"
// or "onion_desc_not_found", usable as a Prometheus label value; every code
// outside the known set is "unknown", which keeps label sets bounded.
func (r Reply) String() string {
	if n, ok := replyNames[r]; ok {
		return n.label
	}
	return "unknown"
}

// text returns the human description of r used in error messages.
func (r Reply) text() string {
	if n, ok := replyNames[r]; ok {
		return n.text
	}
	return "unknown reply"
}

// SOCKS5 commands (RFC 1928 CMD field and Tor's extensions).
const (
	CmdConnect    byte = 0x01 // CONNECT: open a TCP stream
	CmdResolve    byte = 0xF0 // Tor RESOLVE: hostname to one address
	CmdResolvePTR byte = 0xF1 // Tor RESOLVE_PTR: address to one hostname
)

// commandName names cmd in error messages.
func commandName(cmd byte) string {
	switch cmd {
	case CmdConnect:
		return "connect"
	case CmdResolve:
		return "resolve"
	case CmdResolvePTR:
		return "resolve_ptr"
	}
	return "command 0x" + strconv.FormatUint(uint64(cmd), 16)
}

// ReplyError is returned when the server answers a request with a non-zero
// reply code. The server did its job and reported why the destination could
// not be reached (or resolved), so the caller may map Reply to a metric label
// or to the right failure toward the application; the connection has been
// closed.
type ReplyError struct {
	// Command is the request's command: CmdConnect, CmdResolve or
	// CmdResolvePTR.
	Command byte
	// Reply is the server's reply code, never ReplySucceeded.
	Reply Reply
}

// Error returns, for example, "socks connect: host unreachable (reply 0x04)".
func (e *ReplyError) Error() string {
	return fmt.Sprintf("socks %s: %s (reply 0x%02x)", commandName(e.Command), e.Reply.text(), byte(e.Reply))
}

// ProtocolError means the server violated the protocol: a wrong version, an
// unexpected method, a bad address type, a truncated message and so on. It
// means the server is not the SOCKS5 server expected (or is broken); it is
// not a verdict about the destination. A ServerReader returns it for a
// client that violates the protocol.
type ProtocolError struct {
	// Step names the message that was being read: "method reply", "auth
	// reply" or "reply" by the Dialer; "greeting", "auth" or "request" by
	// a ServerReader.
	Step string
	// Err describes the violation. It is io.EOF when the peer closed the
	// connection instead of sending the message and io.ErrUnexpectedEOF when
	// it closed it in the middle of one.
	Err error
}

// Error returns "protocol error in STEP: CAUSE".
func (e *ProtocolError) Error() string {
	return "protocol error in " + e.Step + ": " + e.Err.Error()
}

// Unwrap returns the cause, so errors.Is(err, io.ErrUnexpectedEOF) works.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Errors for a rejected authentication and for bad arguments. They are
// wrapped with context; test with errors.Is. None is worth retrying as is.
var (
	// ErrAuthRejected means the server answered the RFC 1929
	// username/password with a non-zero status. Tor never rejects
	// credentials, so from Tor it means something else listens on the port.
	ErrAuthRejected = errors.New("authentication rejected")
	// ErrNoAcceptableMethod means the server accepted none of the offered
	// authentication methods (method reply 0xFF): it requires a method
	// other than the one sent (no auth when Auth is empty, username/password
	// otherwise).
	ErrNoAcceptableMethod = errors.New("no acceptable authentication method")
	// ErrInvalidRequest means an argument cannot be sent: an empty, too long
	// or NUL-containing hostname, port 0 for CONNECT, credentials of the
	// wrong length, a reserved username. Nothing was sent to the server.
	ErrInvalidRequest = errors.New("invalid request")
)

// version5 is the SOCKS protocol version (VER) of every SOCKS5 message.
const version5 = 0x05

// maxMessageLen is the longest request or reply: VER, CMD/REP, RSV, ATYP,
// a length-prefixed 255-byte hostname, and the port.
const maxMessageLen = 4 + 1 + maxNameLen + 2

// ReadReply reads one SOCKS5 reply (RFC 1928 section 6) from r and returns
// its code and bound address. It reads exactly the bytes of the reply and
// never more, so data that follows the reply (the first bytes of a stream)
// stays in r. It does not treat a non-zero code as an error; errors are
// *ProtocolError for malformed or truncated replies, or the error r
// returned. r should not be buffered by the caller beyond what is needed.
func ReadReply(r io.Reader) (Reply, Addr, error) {
	buf := bufPool.Get().(*handshakeBuf)
	defer bufPool.Put(buf)
	return readReply(r, (*[maxMessageLen]byte)(buf[:maxMessageLen]))
}

// readReply is ReadReply with the caller's scratch buffer, so a handshake can
// reuse its pooled buffer instead of allocating one.
func readReply(r io.Reader, buf *[maxMessageLen]byte) (Reply, Addr, error) {
	const step = "reply"
	// VER REP RSV ATYP; for a hostname, also its length byte, read below.
	h := buf[:4]
	if err := readFull(r, h, step); err != nil {
		return 0, Addr{}, err
	}
	if h[0] != version5 {
		return 0, Addr{}, &ProtocolError{Step: step, Err: fmt.Errorf("unexpected version 0x%02x", h[0])}
	}
	rep := Reply(h[1])
	if h[2] != 0 {
		return 0, Addr{}, &ProtocolError{Step: step, Err: fmt.Errorf("non-zero reserved byte 0x%02x", h[2])}
	}
	var n int // address bytes to read after the header, port included
	switch h[3] {
	case atypIPv4:
		n = 4 + 2
	case atypIPv6:
		n = 16 + 2
	case atypDomain:
		if err := readFull(r, buf[4:5], step); err != nil {
			return 0, Addr{}, err
		}
		if buf[4] == 0 {
			return 0, Addr{}, &ProtocolError{Step: step, Err: errors.New("empty hostname")}
		}
		n = int(buf[4]) + 2
	default:
		return 0, Addr{}, &ProtocolError{Step: step, Err: fmt.Errorf("unknown address type 0x%02x", h[3])}
	}
	b := buf[5 : 5+n]
	if err := readFull(r, b, step); err != nil {
		return 0, Addr{}, err
	}
	var a Addr
	a.Port = uint16(b[n-2])<<8 | uint16(b[n-1])
	switch h[3] {
	case atypIPv4:
		a.IP = netip.AddrFrom4([4]byte(b[:4]))
	case atypIPv6:
		a.IP = netip.AddrFrom16([16]byte(b[:16]))
	default:
		a.Name = string(b[:n-2])
	}
	return rep, a, nil
}

// readFull reads exactly len(b) bytes. A connection closed before or during
// the message is the server's fault and becomes a *ProtocolError; other
// errors (deadlines, resets) are returned as they are.
func readFull(r io.Reader, b []byte, step string) error {
	_, err := io.ReadFull(r, b)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &ProtocolError{Step: step, Err: err}
	}
	return err
}
