package dns

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

func TestTruncate(t *testing.T) {
	resp := append([]byte{0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 1}, make([]byte, 100)...)
	if got := truncate(bytes.Clone(resp), len(resp)); !bytes.Equal(got, resp) {
		t.Fatal("an answer that fits was changed")
	}
	got := truncate(bytes.Clone(resp), 50)
	want := []byte{0xab, 0xcd, 0x83, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("truncate = % x, want % x (header only, TC set, no sections)", got, want)
	}
}

// TestServeTCPFraming: pipelined queries are answered in order, each
// with its length prefix; a failed answer ends the connection with a
// FIN after the answers already written.
func TestServeTCPFraming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serveConn(c.(*net.TCPConn), func(q, scratch []byte) ([]byte, error) {
			if q[0] == 0xff {
				return nil, io.ErrUnexpectedEOF
			}
			return append(scratch, bytes.Repeat(q[:1], headerLen)...), nil
		})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []byte
	for _, q := range []byte{1, 2, 0xff, 3} {
		out = binary.BigEndian.AppendUint16(out, headerLen)
		out = append(out, bytes.Repeat([]byte{q}, headerLen)...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // until the FIN
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, q := range []byte{1, 2} {
		want = binary.BigEndian.AppendUint16(want, headerLen)
		want = append(want, bytes.Repeat([]byte{q}, headerLen)...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read % x\nwant % x", got, want)
	}
	c.Close()
	<-done
}
