package socks

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// The server's side of the wire format: what a SOCKS server reads from a
// client. The servers are torgate's SOCKS ports for workstations
// (internal/socksport) and the stand-ins for Tor (sockstest's scripted
// server, bench/socksd's fast one), which parse the client's handshake
// here, once, rather than each its own way.
//
// A server reads each message with a ServerReader and writes the answers
// itself:
//
//	client sends                  server reads    server answers
//	05 NMETHODS METHODS...        ReadGreeting    05 M, M = Methods.Select
//	01 ULEN USER PLEN PASS        ReadUserPass    01 STATUS; only when M = 02
//	05 CMD 00 ATYP ADDR PORT      ReadRequest     05 REP 00 ATYP ADDR PORT
//
// A server that also speaks SOCKS4 and SOCKS4a (torgate's SOCKS ports do,
// as Tor's SocksPort does) looks at the first byte with Version and reads
// the one SOCKS4 message with ReadRequest4:
//
//	04 CMD PORT IP USERID 00 [HOST 00]   ReadRequest4   00 5A|5B PORT IP

// serverBufLen is a ServerReader's buffer: at least the longest client
// message (an RFC 1929 auth, 3+255+255 bytes), with room to read ahead so
// that a message usually costs one read.
const serverBufLen = 1024

// maxClientMessage is the longest message a client sends: the auth, or a
// SOCKS4a request (maxRequest4, a few bytes longer).
const maxClientMessage = max(3+255+255, maxRequest4)

// SOCKS4 has no length fields: the user ID and the SOCKS4a hostname end
// with a NUL. A ServerReader takes at most maxField4 bytes of each, as a
// SOCKS5 message can carry, so that a request is bounded; Tor's own limit
// on the user ID is larger, but no client sends more than a hostname's
// worth (Tor Browser uses SOCKS5).
const (
	maxField4   = 255
	maxRequest4 = 8 + maxField4 + 1 + maxField4 + 1
)

// The buffer holds the longest message (a negative constant does not
// convert to uint, so a smaller buffer does not compile).
const _ = uint(serverBufLen - maxClientMessage)

// version4 is the VN byte of a SOCKS4 request.
const version4 = 0x04

// Methods are the authentication methods a client offered in its greeting,
// of the two a Tor SocksPort supports.
type Methods struct {
	NoAuth   bool // MethodNoAuth (0x00) was offered
	UserPass bool // MethodUserPass (0x02, RFC 1929) was offered
}

// Select returns the method to answer with, chosen as Tor chooses:
// username/password whenever it is offered, because Tor isolates streams
// by the credentials (IsolateSOCKSAuth); else no authentication, unless
// requireAuth; else MethodNoAcceptable, after which the server closes.
func (m Methods) Select(requireAuth bool) byte {
	switch {
	case m.UserPass:
		return MethodUserPass
	case m.NoAuth && !requireAuth:
		return MethodNoAuth
	}
	return MethodNoAcceptable
}

// Request is a client's request as a server reads it.
type Request struct {
	// Command is the CMD byte as sent: CmdConnect, CmdResolve,
	// CmdResolvePTR or anything else, which a server answers with
	// ReplyCommandNotSupported.
	Command byte
	// Dst is the destination exactly as sent: Name for ATYP 0x03 (its
	// bytes as they came, 1 to 255 of them; judging them is the server's
	// business), a 4-byte IP for ATYP 0x01 and a 16-byte IP for ATYP 0x04
	// (an IPv4-mapped address stays mapped).
	Dst Addr
}

// RequestError is a request a server must refuse with a reply rather than
// just close on: a non-zero reserved byte or an empty hostname
// (ReplyGeneralFailure), or an unknown address type
// (ReplyAddressNotSupported). The rest of the message is not read, so the
// connection is of no further use.
type RequestError struct {
	// Reply is the code to answer with, never ReplySucceeded.
	Reply Reply
	// Err describes what is wrong with the request.
	Err error
}

// Error returns, for example, "bad request: unknown address type 0x05
// (reply 0x08)".
func (e *RequestError) Error() string {
	return fmt.Sprintf("bad request: %v (reply 0x%02x)", e.Err, byte(e.Reply))
}

// Unwrap returns the cause.
func (e *RequestError) Unwrap() error { return e.Err }

// A ServerReader reads the client's half of a SOCKS5 handshake, one
// message per call, for a server that answers each one in between.
//
// It reads ahead: a read fetches whatever the connection has, and what
// follows a message stays in the reader for the next call. So messages that
// arrive together are parsed one after the other, among them a greeting and
// a username/password sent in one write (a pipelining client; Tor 0.4.9
// mishandles that, see the package comment, but telling the client so is
// the server's choice). Bytes the client sent after its request, without
// waiting for the reply, are left in Buffered for the server to pass on.
//
// The errors are a *ProtocolError for a malformed or truncated message (its
// Err is io.EOF if the client closed the connection before the message,
// io.ErrUnexpectedEOF if within it), a *RequestError for a request to
// refuse with a reply, or what the underlying reader returned. Parsing
// allocates nothing, except the string of a hostname.
//
// A ServerReader holds a 1 KiB buffer. Make one with NewServerReader, or
// pool them and Reset each for its connection.
type ServerReader struct {
	r        io.Reader
	buf      [serverBufLen]byte
	off, end int // buf[off:end] has been read but not consumed
}

// NewServerReader returns a ServerReader reading from r.
func NewServerReader(r io.Reader) *ServerReader {
	return &ServerReader{r: r}
}

// Reset makes s read from r, discarding anything buffered. Reset(nil)
// drops the reference to the old reader, before putting s in a pool.
func (s *ServerReader) Reset(r io.Reader) {
	s.r, s.off, s.end = r, 0, 0
}

// Buffered returns the bytes read past the last message, which belong to
// what comes next: after ReadRequest, the start of the client's stream.
// The slice is valid until the next call on s.
func (s *ServerReader) Buffered() []byte { return s.buf[s.off:s.end] }

// ReadGreeting reads VER NMETHODS METHODS and returns the methods offered
// among those Tor knows. A greeting that is not SOCKS5 or offers no method
// is a *ProtocolError.
func (s *ServerReader) ReadGreeting() (Methods, error) {
	const step = "greeting"
	b, err := s.need(2, step)
	if err != nil {
		return Methods{}, err
	}
	if b[0] != version5 {
		return Methods{}, &ProtocolError{Step: step, Err: fmt.Errorf("unexpected version 0x%02x", b[0])}
	}
	if b[1] == 0 {
		return Methods{}, &ProtocolError{Step: step, Err: errors.New("no methods")}
	}
	if b, err = s.need(2+int(b[1]), step); err != nil {
		return Methods{}, err
	}
	var m Methods
	for _, method := range b[2:] {
		m.NoAuth = m.NoAuth || method == MethodNoAuth
		m.UserPass = m.UserPass || method == MethodUserPass
	}
	s.off += len(b)
	return m, nil
}

// ReadUserPass reads an RFC 1929 VER ULEN UNAME PLEN PASSWD message and
// returns the username and password, of 0 to 255 bytes each (Tor accepts
// empty ones). They point into s's buffer and are valid until the next
// call on s; copy them to keep them.
func (s *ServerReader) ReadUserPass() (user, pass []byte, err error) {
	const step = "auth"
	b, err := s.need(2, step)
	if err != nil {
		return nil, nil, err
	}
	if b[0] != userPassVersion {
		return nil, nil, &ProtocolError{Step: step, Err: fmt.Errorf("unexpected version 0x%02x", b[0])}
	}
	ulen := int(b[1])
	if b, err = s.need(2+ulen+1, step); err != nil {
		return nil, nil, err
	}
	plen := int(b[2+ulen])
	if b, err = s.need(2+ulen+1+plen, step); err != nil {
		return nil, nil, err
	}
	s.off += len(b)
	return b[2 : 2+ulen : 2+ulen], b[3+ulen:], nil
}

// ReadRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT. Any command is
// returned; the checks are those of the message's structure.
func (s *ServerReader) ReadRequest() (Request, error) {
	const step = "request"
	// VER CMD RSV ATYP and the first address byte: a hostname's length.
	b, err := s.need(5, step)
	if err != nil {
		return Request{}, err
	}
	if b[0] != version5 {
		return Request{}, &ProtocolError{Step: step, Err: fmt.Errorf("unexpected version 0x%02x", b[0])}
	}
	if b[2] != 0 {
		return Request{}, &RequestError{Reply: ReplyGeneralFailure, Err: fmt.Errorf("non-zero reserved byte 0x%02x", b[2])}
	}
	var n int // address bytes after ATYP
	switch b[3] {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if b[4] == 0 {
			return Request{}, &RequestError{Reply: ReplyGeneralFailure, Err: errors.New("empty hostname")}
		}
		n = 1 + int(b[4])
	default:
		return Request{}, &RequestError{Reply: ReplyAddressNotSupported, Err: fmt.Errorf("unknown address type 0x%02x", b[3])}
	}
	if b, err = s.need(4+n+2, step); err != nil {
		return Request{}, err
	}
	req := Request{Command: b[1]}
	a := b[4 : 4+n]
	switch b[3] {
	case atypIPv4:
		req.Dst.IP = netip.AddrFrom4([4]byte(a))
	case atypIPv6:
		req.Dst.IP = netip.AddrFrom16([16]byte(a))
	default:
		req.Dst.Name = string(a[1:])
	}
	req.Dst.Port = uint16(b[4+n])<<8 | uint16(b[4+n+1])
	s.off += len(b)
	return req, nil
}

// Version returns the first byte of the next message without consuming
// it: 0x05 for a SOCKS5 greeting, 0x04 for a SOCKS4 request, anything
// else for a client that speaks neither. An error is a *ProtocolError
// (io.EOF: the client closed first) or the reader's.
func (s *ServerReader) Version() (byte, error) {
	b, err := s.need(1, "greeting")
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// Request4 is a SOCKS4 or SOCKS4a request as a server reads it.
type Request4 struct {
	// Command is the CD byte as sent: CmdConnect (0x01), BIND (0x02),
	// Tor's CmdResolve (0xF0), or anything else.
	Command byte
	// Dst is the destination: a 4-byte IP for SOCKS4, or for SOCKS4a
	// (an IP of 0.0.0.x, x non-zero) the Name that follows the user ID,
	// its bytes as they came (1 to 255).
	Dst Addr
	// UserID is the user ID, 0 to 255 bytes. It points into the
	// reader's buffer and is valid until the next call on it; copy it to
	// keep it.
	UserID []byte
}

// ReadRequest4 reads a SOCKS4 request, VN CD DSTPORT DSTIP USERID NUL,
// or a SOCKS4a one, where DSTIP is 0.0.0.x (x non-zero) and a hostname
// and a NUL follow the user ID. A user ID or hostname longer than 255
// bytes, a missing NUL or a version other than 4 is a *ProtocolError; an
// empty SOCKS4a hostname a *RequestError (reply ReplyGeneralFailure,
// which a SOCKS4 server sends as its one failure code, 0x5B).
func (s *ServerReader) ReadRequest4() (Request4, error) {
	const step = "request"
	b, err := s.need(1, step)
	if err != nil {
		return Request4{}, err
	}
	if b[0] != version4 {
		return Request4{}, &ProtocolError{Step: step, Err: fmt.Errorf("unexpected version 0x%02x", b[0])}
	}
	if b, err = s.need(8, step); err != nil {
		return Request4{}, err
	}
	req := Request4{Command: b[1], Dst: Addr{Port: uint16(b[2])<<8 | uint16(b[3])}}
	ip := [4]byte(b[4:8])
	user, err := s.needNUL(8, step, "user ID")
	if err != nil {
		return Request4{}, err
	}
	end := user + 1
	name := -1
	if ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0 {
		if name, err = s.needNUL(end, step, "hostname"); err != nil {
			return Request4{}, err
		}
		if name == end {
			return Request4{}, &RequestError{Reply: ReplyGeneralFailure, Err: errors.New("empty hostname")}
		}
	}
	// needNUL may have moved the bytes: slice them only now.
	b = s.buf[s.off:]
	req.UserID = b[8:user:user]
	if name >= 0 {
		req.Dst.Name = string(b[end:name])
		end = name + 1
	} else {
		req.Dst.IP = netip.AddrFrom4(ip)
	}
	s.off += end
	return req, nil
}

// needNUL returns the offset, from the message's start, of the NUL that
// ends the field starting at from, reading until it arrives. The first
// from bytes must have been read. A field longer than maxField4 is a
// *ProtocolError.
func (s *ServerReader) needNUL(from int, step, field string) (int, error) {
	for {
		w := s.buf[s.off+from : s.end]
		if i := bytes.IndexByte(w[:min(len(w), maxField4+1)], 0); i >= 0 {
			return from + i, nil
		}
		if len(w) > maxField4 {
			return 0, &ProtocolError{Step: step, Err: fmt.Errorf("%s longer than %d bytes", field, maxField4)}
		}
		if _, err := s.need(s.end-s.off+1, step); err != nil {
			return 0, err
		}
	}
}

// AppendReply appends a SOCKS5 reply, VER REP RSV ATYP BND.ADDR BND.PORT,
// to b: bnd as an IP or, for RESOLVE_PTR's answer, a name; a zero bnd as
// 0.0.0.0:0, as Tor sends. It reports false (and appends nothing) for a
// name a reply cannot carry (empty, over 255 bytes, or with a NUL).
func AppendReply(b []byte, rep Reply, bnd Addr) ([]byte, bool) {
	switch {
	case bnd.Name != "":
		if validateName(bnd.Name) != nil {
			return b, false
		}
	case !bnd.IP.IsValid():
		bnd.IP = netip.IPv4Unspecified()
	}
	return appendMessage(b, byte(rep), bnd), true
}

// SOCKS4 reply codes (CD of a reply). SOCKS4 has one failure code: every
// SOCKS5 failure maps to Reply4Rejected.
const (
	Reply4Granted  byte = 0x5A // request granted
	Reply4Rejected byte = 0x5B // request rejected or failed
)

// AppendReply4 appends a SOCKS4 reply, VN=0 CD DSTPORT DSTIP, to b: the
// CD is Reply4Granted for ReplySucceeded and Reply4Rejected for anything
// else. ip is the address of a RESOLVE's answer, else the zero Addr
// (0.0.0.0); it must be IPv4 if valid.
func AppendReply4(b []byte, rep Reply, ip netip.Addr, port uint16) []byte {
	cd := Reply4Rejected
	if rep == ReplySucceeded {
		cd = Reply4Granted
	}
	b = append(b, 0, cd, byte(port>>8), byte(port))
	if ip.Is4() {
		a := ip.As4()
		return append(b, a[:]...)
	}
	return append(b, 0, 0, 0, 0)
}

// need returns the first n bytes of the message at s.off, reading as much
// as the connection has until there are n. It moves the unconsumed bytes
// to the front of the buffer when the message would not fit behind them,
// so a slice it returned earlier may be stale; n is at most
// maxClientMessage.
func (s *ServerReader) need(n int, step string) ([]byte, error) {
	for s.end-s.off < n {
		if s.off+n > len(s.buf) {
			s.end = copy(s.buf[:], s.buf[s.off:s.end])
			s.off = 0
		}
		k, err := s.r.Read(s.buf[s.end:])
		s.end += k
		if err != nil && s.end-s.off < n {
			if err != io.EOF {
				return nil, err
			}
			if s.end > s.off {
				err = io.ErrUnexpectedEOF
			}
			return nil, &ProtocolError{Step: step, Err: err}
		}
	}
	return s.buf[s.off : s.off+n], nil
}
