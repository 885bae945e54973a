package socks

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

// errNoMethod ends readClientHalf when the server would answer 0xFF and
// close.
var errNoMethod = errors.New("no acceptable method")

// clientHalf is what a server that accepts any client read.
type clientHalf struct {
	methods    Methods
	method     byte // Methods.Select(false)
	user, pass string
	req        Request
}

// readClientHalf reads greeting, username/password if chosen, and request
// as a server that requires nothing would.
func readClientHalf(sr *ServerReader) (clientHalf, error) {
	var h clientHalf
	var err error
	if h.methods, err = sr.ReadGreeting(); err != nil {
		return h, err
	}
	switch h.method = h.methods.Select(false); h.method {
	case MethodNoAcceptable:
		return h, errNoMethod
	case MethodUserPass:
		user, pass, err := sr.ReadUserPass()
		if err != nil {
			return h, err
		}
		h.user, h.pass = string(user), string(pass)
	}
	h.req, err = sr.ReadRequest()
	return h, err
}

// FuzzReadRequest checks that a ServerReader never panics, fails only with
// the documented error types, loses no byte (what it consumed plus what it
// buffered is what it read), gives the same answers however the bytes are
// split, reads nothing past the request when bytes come one at a time, and
// that what it accepts re-encodes to exactly the bytes it consumed.
// Annotated seeds live in testdata/fuzz/FuzzReadRequest.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("\x05\x01\x00" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50" + "GET / HTTP/1.1\r\n"))
	f.Add([]byte("\x05\x01\x02" + "\x01\x03tg1\x01x" + "\x05\xf0\x00\x03\x0bexample.com\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{data: data}
		sr := NewServerReader(r)
		h, err := readClientHalf(sr)
		buffered := sr.Buffered()
		consumed := r.n - len(buffered)
		if consumed < 0 || !bytes.Equal(buffered, data[consumed:r.n]) {
			t.Fatalf("buffered %x is not what followed the %d consumed bytes of %d read", buffered, consumed, r.n)
		}
		var pe *ProtocolError
		var re *RequestError
		switch {
		case err == nil:
			if (h.req.Dst.Name == "") == !h.req.Dst.IP.IsValid() {
				t.Fatalf("destination %#v must have exactly one of Name and IP", h.req.Dst)
			}
			if len(h.req.Dst.Name) > maxNameLen {
				t.Fatalf("parsed a %d-byte hostname", len(h.req.Dst.Name))
			}
			// Round trip: after the greeting, whose method list is not
			// kept, the consumed bytes are the encoding of what was parsed.
			enc := bytes.Clone(data[:2+int(data[1])]) // appending to a subslice would write into data
			if h.method == MethodUserPass {
				enc = append(append(enc, userPassVersion, byte(len(h.user))), h.user...)
				enc = append(append(enc, byte(len(h.pass))), h.pass...)
			}
			if enc = appendMessage(enc, h.req.Command, h.req.Dst); !bytes.Equal(enc, data[:consumed]) {
				t.Fatalf("re-encoded %x, consumed %x", enc, data[:consumed])
			}
		case errors.Is(err, errNoMethod):
			if h.methods.UserPass || h.methods.NoAuth {
				t.Fatalf("methods %+v refused", h.methods)
			}
		case errors.As(err, &re):
			if re.Reply != ReplyGeneralFailure && re.Reply != ReplyAddressNotSupported {
				t.Fatalf("request error %v with reply %v", err, re.Reply)
			}
		case errors.As(err, &pe):
		default:
			t.Fatalf("error %v is neither a *ProtocolError nor a *RequestError", err)
		}
		// The same bytes, one per Read: the same answers, and nothing read
		// past the request.
		r1 := &countingReader{data: data}
		sr1 := NewServerReader(iotest.OneByteReader(r1))
		h1, err1 := readClientHalf(sr1)
		if h1 != h || (err1 == nil) != (err == nil) || (err != nil && err.Error() != err1.Error()) {
			t.Fatalf("byte-at-a-time read gave %+v, %v; want %+v, %v", h1, err1, h, err)
		}
		if err == nil && (len(sr1.Buffered()) != 0 || r1.n != consumed) {
			t.Fatalf("byte-at-a-time read %d bytes and buffered %d, want %d and none", r1.n, len(sr1.Buffered()), consumed)
		}
	})
}

func TestReadRequest(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::7")
	for _, tt := range []struct {
		name     string
		in       string
		want     clientHalf // when errText is ""
		buffered string     // left after the request
		errText  string     // in the error, "" for success
		reply    Reply      // for a *RequestError
	}{
		{
			name: "no auth, ipv4",
			in:   "\x05\x01\x00" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: CmdConnect, Dst: Addr{IP: v4, Port: 80}}},
		},
		{
			name: "greeting and auth in one read, hostname",
			in:   "\x05\x01\x02\x01\x03tg1\x01x" + "\x05\x01\x00\x03\x0bexample.com\x01\xbb",
			want: clientHalf{methods: Methods{UserPass: true}, method: MethodUserPass, user: "tg1", pass: "x",
				req: Request{Command: CmdConnect, Dst: HostPort("example.com", 443)}},
		},
		{
			name: "both methods offered: username/password wins",
			in:   "\x05\x03\x00\x01\x02" + "\x01\x01u\x01p" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50",
			want: clientHalf{methods: Methods{NoAuth: true, UserPass: true}, method: MethodUserPass, user: "u", pass: "p",
				req: Request{Command: CmdConnect, Dst: Addr{IP: v4, Port: 80}}},
		},
		{
			name: "empty credentials",
			in:   "\x05\x01\x02" + "\x01\x00\x00" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50",
			want: clientHalf{methods: Methods{UserPass: true}, method: MethodUserPass,
				req: Request{Command: CmdConnect, Dst: Addr{IP: v4, Port: 80}}},
		},
		{
			name: "ipv6 and stream bytes behind",
			in:   "\x05\x01\x00" + "\x05\x01\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x01\xbb" + "GET /",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: CmdConnect, Dst: Addr{IP: v6, Port: 443}}},
			buffered: "GET /",
		},
		{
			name: "mapped address stays ipv6",
			in:   "\x05\x01\x00" + "\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xc0\x00\x02\x01\x00\x16",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: CmdConnect, Dst: Addr{IP: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 22}}},
		},
		{
			name: "resolve",
			in:   "\x05\x01\x00" + "\x05\xf0\x00\x03\x0bexample.com\x00\x00",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: CmdResolve, Dst: HostPort("example.com", 0)}},
		},
		{
			name: "resolve_ptr",
			in:   "\x05\x01\x00" + "\x05\xf1\x00\x01\xc0\x00\x02\x01\x00\x00",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: CmdResolvePTR, Dst: Addr{IP: v4}}},
		},
		{
			name: "bind is returned for the server to refuse",
			in:   "\x05\x01\x00" + "\x05\x02\x00\x01\xc0\x00\x02\x01\x00\x50",
			want: clientHalf{methods: Methods{NoAuth: true}, method: MethodNoAuth,
				req: Request{Command: 0x02, Dst: Addr{IP: v4, Port: 80}}},
		},
		{name: "nothing", in: "", errText: "protocol error in greeting: EOF"},
		{name: "socks4", in: "\x04\x01\x00\x50\xc0\x00\x02\x01\x00", errText: "protocol error in greeting: unexpected version 0x04"},
		{name: "no methods", in: "\x05\x00", errText: "protocol error in greeting: no methods"},
		{name: "truncated greeting", in: "\x05\x02\x00", errText: "protocol error in greeting: unexpected EOF"},
		{name: "gssapi only", in: "\x05\x01\x01", errText: errNoMethod.Error()},
		{name: "auth version", in: "\x05\x01\x02" + "\x05\x01u\x01p", errText: "protocol error in auth: unexpected version 0x05"},
		{name: "truncated auth", in: "\x05\x01\x02" + "\x01\x05us", errText: "protocol error in auth: unexpected EOF"},
		{name: "no request", in: "\x05\x01\x00", errText: "protocol error in request: EOF"},
		{name: "request version", in: "\x05\x01\x00" + "\x04\x01\x00\x01\xc0\x00\x02\x01\x00\x50", errText: "protocol error in request: unexpected version 0x04"},
		{name: "reserved byte", in: "\x05\x01\x00" + "\x05\x01\x01\x01\xc0\x00\x02\x01\x00\x50",
			errText: "bad request: non-zero reserved byte 0x01 (reply 0x01)", reply: ReplyGeneralFailure},
		{name: "address type", in: "\x05\x01\x00" + "\x05\x01\x00\x05\xc0\x00\x02\x01\x00\x50",
			errText: "bad request: unknown address type 0x05 (reply 0x08)", reply: ReplyAddressNotSupported},
		{name: "empty hostname", in: "\x05\x01\x00" + "\x05\x01\x00\x03\x00\x00\x50",
			errText: "bad request: empty hostname (reply 0x01)", reply: ReplyGeneralFailure},
		{name: "truncated hostname", in: "\x05\x01\x00" + "\x05\x01\x00\x03\x0bexample", errText: "protocol error in request: unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []string{"whole", "byte by byte"} {
				var r io.Reader = strings.NewReader(tt.in)
				if split == "byte by byte" {
					r = iotest.OneByteReader(r)
				}
				sr := NewServerReader(r)
				got, err := readClientHalf(sr)
				if tt.errText != "" {
					var re *RequestError
					if err == nil || err.Error() != tt.errText || errors.As(err, &re) != (tt.reply != 0) || (re != nil && re.Reply != tt.reply) {
						t.Fatalf("%s: error %v, want %q with reply %v", split, err, tt.errText, tt.reply)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Fatalf("%s: read %+v, %v; want %+v", split, got, err, tt.want)
				}
				if b := string(sr.Buffered()); split == "whole" && b != tt.buffered {
					t.Errorf("%s: buffered %q, want %q", split, b, tt.buffered)
				}
			}
		})
	}
}

// TestServerReaderReuse: messages longer than what is left of the buffer
// after earlier ones, and a Reset reader, parse like fresh ones.
func TestServerReaderReuse(t *testing.T) {
	long := strings.Repeat("u", 255)
	msg := "\x05\x01\x02" + "\x01\xff" + long + "\xff" + long + "\x05\x01\x00\x03\xff" + long + "\x01\xbb"
	stream := strings.Repeat(msg, 3) // back to back, as if one connection after another
	sr := NewServerReader(strings.NewReader(stream))
	for i := range 3 {
		got, err := readClientHalf(sr)
		if err != nil || got.user != long || got.pass != long || got.req.Dst != HostPort(long, 443) {
			t.Fatalf("message %d: %+v, %v", i, got, err)
		}
	}
	sr.Reset(strings.NewReader(msg))
	if got, err := readClientHalf(sr); err != nil || got.req.Dst != HostPort(long, 443) {
		t.Fatalf("after Reset: %+v, %v", got, err)
	}
}

// TestMethodsSelect: Tor's choice.
func TestMethodsSelect(t *testing.T) {
	for _, tt := range []struct {
		m           Methods
		requireAuth bool
		want        byte
	}{
		{m: Methods{NoAuth: true}, want: MethodNoAuth},
		{m: Methods{UserPass: true}, want: MethodUserPass},
		{m: Methods{NoAuth: true, UserPass: true}, want: MethodUserPass},
		{m: Methods{}, want: MethodNoAcceptable},
		{m: Methods{NoAuth: true}, requireAuth: true, want: MethodNoAcceptable},
		{m: Methods{NoAuth: true, UserPass: true}, requireAuth: true, want: MethodUserPass},
	} {
		if got := tt.m.Select(tt.requireAuth); got != tt.want {
			t.Errorf("%+v.Select(%v) = %#x, want %#x", tt.m, tt.requireAuth, got, tt.want)
		}
	}
}

// FuzzReadRequest4 checks that ReadRequest4 never panics, fails only with
// the documented error types, loses no byte, gives the same answers
// however the bytes are split, reads nothing past the request when bytes
// come one at a time, and that what it accepts re-encodes to the bytes it
// consumed. Annotated seeds live in testdata/fuzz/FuzzReadRequest4.
func FuzzReadRequest4(f *testing.F) {
	f.Add([]byte("\x04\x01\x00\x50\xc0\x00\x02\x01user\x00" + "GET / HTTP/1.0\r\n"))
	f.Add([]byte("\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.onion\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{data: data}
		sr := NewServerReader(r)
		req, err := sr.ReadRequest4()
		buffered := sr.Buffered()
		consumed := r.n - len(buffered)
		if consumed < 0 || !bytes.Equal(buffered, data[consumed:r.n]) {
			t.Fatalf("buffered %x is not what followed the %d consumed bytes of %d read", buffered, consumed, r.n)
		}
		if consumed > maxRequest4 {
			t.Fatalf("consumed %d bytes, more than the longest request", consumed)
		}
		var pe *ProtocolError
		var re *RequestError
		switch {
		case err == nil:
			if (req.Dst.Name == "") == !req.Dst.IP.IsValid() {
				t.Fatalf("destination %#v must have exactly one of Name and IP", req.Dst)
			}
			if len(req.Dst.Name) > maxField4 || len(req.UserID) > maxField4 {
				t.Fatalf("parsed a %d-byte hostname, a %d-byte user ID", len(req.Dst.Name), len(req.UserID))
			}
			if bytes.IndexByte(req.UserID, 0) >= 0 || strings.IndexByte(req.Dst.Name, 0) >= 0 {
				t.Fatalf("NUL inside a field: %q %q", req.UserID, req.Dst.Name)
			}
			enc := []byte{version4, req.Command, byte(req.Dst.Port >> 8), byte(req.Dst.Port)}
			if req.Dst.Name != "" {
				// SOCKS4a: 0.0.0.x for any non-zero x, which is not kept.
				if x := data[7]; data[4]|data[5]|data[6] != 0 || x == 0 {
					t.Fatalf("SOCKS4a request with IP %x", data[4:8])
				}
				enc = append(enc, 0, 0, 0, data[7])
			} else {
				ip := req.Dst.IP.As4()
				enc = append(enc, ip[:]...)
			}
			enc = append(append(enc, req.UserID...), 0)
			if req.Dst.Name != "" {
				enc = append(append(enc, req.Dst.Name...), 0)
			}
			if !bytes.Equal(enc, data[:consumed]) {
				t.Fatalf("re-encoded %x, consumed %x", enc, data[:consumed])
			}
		case errors.As(err, &re):
			if re.Reply != ReplyGeneralFailure {
				t.Fatalf("request error %v with reply %v", err, re.Reply)
			}
		case errors.As(err, &pe):
		default:
			t.Fatalf("error %v is neither a *ProtocolError nor a *RequestError", err)
		}
		r1 := &countingReader{data: data}
		sr1 := NewServerReader(iotest.OneByteReader(r1))
		req1, err1 := sr1.ReadRequest4()
		if req1.Command != req.Command || req1.Dst != req.Dst || !bytes.Equal(req1.UserID, req.UserID) ||
			(err1 == nil) != (err == nil) || (err != nil && err.Error() != err1.Error()) {
			t.Fatalf("byte-at-a-time read gave %+v, %v; want %+v, %v", req1, err1, req, err)
		}
		if err == nil && (len(sr1.Buffered()) != 0 || r1.n != consumed) {
			t.Fatalf("byte-at-a-time read %d bytes and buffered %d, want %d and none", r1.n, len(sr1.Buffered()), consumed)
		}
	})
}

func TestReadRequest4(t *testing.T) {
	long := strings.Repeat("a", 255)
	for _, tt := range []struct {
		name    string
		in      string
		cmd     byte
		dst     string // Addr.String() on success
		user    string
		rest    string // Buffered after the request
		errText string // in the error, "" for success
		reply   Reply  // of a *RequestError
	}{
		{name: "socks4", in: "\x04\x01\x00\x50\xc0\x00\x02\x01\x00", cmd: CmdConnect, dst: "192.0.2.1:80"},
		{name: "user id and early data", in: "\x04\x01\x00\x50\xc0\x00\x02\x01bob\x00GET", cmd: CmdConnect, dst: "192.0.2.1:80", user: "bob", rest: "GET"},
		{name: "socks4a", in: "\x04\x01\x01\xbb\x00\x00\x00\x07u\x00example.com\x00", cmd: CmdConnect, dst: "example.com:443", user: "u"},
		{name: "resolve", in: "\x04\xf0\x00\x00\x00\x00\x00\x01\x00example.com\x00", cmd: CmdResolve, dst: "example.com:0"},
		{name: "longest", in: "\x04\x01\x00\x50\x00\x00\x00\x01" + long + "\x00" + long + "\x00", cmd: CmdConnect, dst: long + ":80", user: long},
		{name: "user id too long", in: "\x04\x01\x00\x50\xc0\x00\x02\x01" + long + "a\x00", errText: "user ID longer than 255 bytes"},
		{name: "hostname too long", in: "\x04\x01\x00\x50\x00\x00\x00\x01\x00" + long + "a\x00", errText: "hostname longer than 255 bytes"},
		{name: "empty hostname", in: "\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", errText: "empty hostname", reply: ReplyGeneralFailure},
		{name: "unterminated", in: "\x04\x01\x00\x50\xc0\x00\x02\x01bob", errText: "unexpected EOF"},
		{name: "truncated", in: "\x04\x01\x00", errText: "unexpected EOF"},
		{name: "socks5", in: "\x05\x01\x00", errText: "unexpected version 0x05"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sr := NewServerReader(strings.NewReader(tt.in))
			if v, err := sr.Version(); err != nil || v != tt.in[0] {
				t.Fatalf("Version = %#x, %v", v, err)
			}
			req, err := sr.ReadRequest4()
			if tt.errText != "" {
				var re *RequestError
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ReadRequest4 = %v, want error containing %q", err, tt.errText)
				}
				if tt.reply != 0 && (!errors.As(err, &re) || re.Reply != tt.reply) {
					t.Fatalf("error %v, want a *RequestError with reply %v", err, tt.reply)
				}
				return
			}
			if err != nil || req.Command != tt.cmd || req.Dst.String() != tt.dst || string(req.UserID) != tt.user || string(sr.Buffered()) != tt.rest {
				t.Fatalf("ReadRequest4 = %+v, %v, buffered %q", req, err, sr.Buffered())
			}
		})
	}
	if _, err := NewServerReader(strings.NewReader("")).Version(); !errors.Is(err, io.EOF) {
		t.Errorf("Version of nothing = %v, want io.EOF", err)
	}
}

func TestAppendReply(t *testing.T) {
	for _, tt := range []struct {
		name string
		rep  Reply
		bnd  Addr
		want string // "" for refused
	}{
		{name: "zero", rep: ReplySucceeded, want: "\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"},
		{name: "onion error", rep: ReplyOnionIntroFailed, want: "\x05\xf2\x00\x01\x00\x00\x00\x00\x00\x00"},
		{name: "ipv4", rep: ReplySucceeded, bnd: Addr{IP: netip.MustParseAddr("192.0.2.1")}, want: "\x05\x00\x00\x01\xc0\x00\x02\x01\x00\x00"},
		{name: "ipv6", rep: ReplySucceeded, bnd: Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 1}, want: "\x05\x00\x00\x04\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x01" + "\x00\x01"},
		{name: "name", rep: ReplySucceeded, bnd: Addr{Name: "example.com"}, want: "\x05\x00\x00\x03\x0bexample.com\x00\x00"},
		{name: "nul in name", rep: ReplySucceeded, bnd: Addr{Name: "a\x00b"}},
		{name: "long name", rep: ReplySucceeded, bnd: Addr{Name: strings.Repeat("a", 256)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := AppendReply(nil, tt.rep, tt.bnd)
			if ok != (tt.want != "") || string(got) != tt.want {
				t.Fatalf("AppendReply = %q, %v; want %q", got, ok, tt.want)
			}
			if ok {
				// What a server sends, the client reads back.
				rep, a, err := ReadReply(bytes.NewReader(got))
				if err != nil || rep != tt.rep {
					t.Fatalf("ReadReply = %v %v %v", rep, a, err)
				}
			}
		})
	}
	if got := AppendReply4(nil, ReplySucceeded, netip.MustParseAddr("192.0.2.1"), 80); string(got) != "\x00\x5a\x00\x50\xc0\x00\x02\x01" {
		t.Errorf("AppendReply4 granted = %q", got)
	}
	if got := AppendReply4(nil, ReplyHostUnreachable, netip.Addr{}, 0); string(got) != "\x00\x5b\x00\x00\x00\x00\x00\x00" {
		t.Errorf("AppendReply4 rejected = %q", got)
	}
}
