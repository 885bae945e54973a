package socks

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// countingReader serves data and counts the bytes handed out.
type countingReader struct {
	data []byte
	n    int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n == len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.n:])
	r.n += n
	return n, nil
}

// FuzzReadReply checks that ReadReply never panics, never reads past the
// reply, rejects only with *ProtocolError, gives the same answer however the
// bytes are split, and that what it accepts re-encodes to exactly the bytes
// it consumed. Annotated seeds live in testdata/fuzz/FuzzReadReply.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte("\x05\x00\x00\x01\x7f\x00\x00\x01\x23\x28" + "stream data"))
	f.Add([]byte("\x05\x04\x00\x03\x0bexample.com\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{data: data}
		rep, a, err := ReadReply(r)
		if r.n > maxMessageLen {
			t.Fatalf("read %d bytes, more than the longest reply", r.n)
		}
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProtocolError", err)
			}
			if rep != 0 || a != (Addr{}) {
				t.Fatalf("error %v came with reply %v and address %v", err, rep, a)
			}
		} else {
			if (a.Name == "") == !a.IP.IsValid() {
				t.Fatalf("address %#v must have exactly one of Name and IP", a)
			}
			if len(a.Name) > maxNameLen {
				t.Fatalf("parsed a %d-byte hostname", len(a.Name))
			}
			// Round trip: the consumed bytes are exactly the encoding of
			// what was parsed, so nothing after the reply was read.
			if enc := appendMessage(nil, byte(rep), a); !bytes.Equal(enc, data[:r.n]) {
				t.Fatalf("re-encoded %x, consumed %x", enc, data[:r.n])
			}
		}
		// The same bytes, one per Read, give the same result.
		rep2, a2, err2 := ReadReply(iotest.OneByteReader(bytes.NewReader(data)))
		if rep2 != rep || a2 != a || (err2 == nil) != (err == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("byte-at-a-time read gave %v %v %v, want %v %v %v", rep2, a2, err2, rep, a, err)
		}
	})
}

func TestReadReply(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		rep     Reply
		addr    string // Addr.String() on success
		errText string // in the error, "" for success
		n       int    // bytes consumed on success
	}{
		{name: "ipv4", in: "\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90rest", addr: "127.0.0.1:8080", n: 10},
		{name: "ipv6", in: "\x05\x00\x00\x04\x20\x01\x0d\xb8" + "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x00\x35rest", addr: "[2001:db8::7]:53", n: 22},
		{name: "domain", in: "\x05\x00\x00\x03\x0bexample.com\x00\x50rest", addr: "example.com:80", n: 18},
		{name: "error code", in: "\x05\xf3\x00\x01\x00\x00\x00\x00\x00\x00", rep: ReplyOnionRendezvousFailed, addr: "0.0.0.0:0", n: 10},
		{name: "empty", in: "", errText: "protocol error in reply: EOF"},
		{name: "truncated", in: "\x05\x00\x00\x04\x20\x01", errText: "protocol error in reply: unexpected EOF"},
		{name: "version", in: "\x04\x00\x00\x01", errText: "unexpected version 0x04"},
		{name: "atyp", in: "\x05\x00\x00\x00", errText: "unknown address type 0x00"},
		{name: "empty name", in: "\x05\x00\x00\x03\x00\x00\x00", errText: "empty hostname"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &countingReader{data: []byte(tt.in)}
			rep, a, err := ReadReply(r)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ReadReply = %v, want error containing %q", err, tt.errText)
				}
				return
			}
			if err != nil || rep != tt.rep || a.String() != tt.addr || r.n != tt.n {
				t.Fatalf("ReadReply = %v %v %v after %d bytes, want %v %v after %d", rep, a, err, r.n, tt.rep, tt.addr, tt.n)
			}
		})
	}
}
