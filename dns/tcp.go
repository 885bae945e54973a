package dns

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// DNS over TCP (RFC 7766): each message is preceded by its length in two
// bytes (RFC 1035 4.2.2). A workstation's resolver opens a connection per
// query or pipelines a few; anything longer-lived is holding a slot, so a
// connection has limits of its own.
const (
	// TCPIdle closes a connection with no query for this long (RFC 7766
	// 6.2.3 suggests seconds).
	TCPIdle = 10 * time.Second
	// TCPMaxLife closes a connection this long after it opened, however
	// busy: a query every few seconds must not hold a slot for good.
	TCPMaxLife = 2 * time.Minute
	// TCPMaxQueries are answered per connection; then the connection ends
	// with a FIN after the last answer.
	TCPMaxQueries = 256
	// TCPLinger bounds how long a closing connection waits for the client
	// to read the last answers and close its side.
	TCPLinger = 5 * time.Second
)

// headerLen is the DNS header's size: no answer is shorter.
const headerLen = 12

// truncate returns resp unchanged if it fits in max bytes, else its
// header alone with TC set and every section count zero: the client
// retries over TCP (RFC 1035 4.2.1, RFC 7766 5). It cuts resp in place.
// Handle already fits UDP answers to 512 bytes or the client's EDNS
// size; truncate is for a smaller limit Handle cannot know, the MTU of
// the link the answer goes out on (ServeDatagram's maxAnswer).
func truncate(resp []byte, max int) []byte {
	if len(resp) <= max || len(resp) < headerLen {
		return resp
	}
	resp = resp[:headerLen]
	resp[2] |= 0x02 // TC
	clear(resp[4:headerLen])
	return resp
}

// TCPConn is what ServeTCP needs of an accepted connection: deadlines
// and a half-close.
type TCPConn interface {
	net.Conn
	CloseWrite() error
}

// serveConn answers length-prefixed DNS messages on c with answer until
// the client closes, a limit above is reached, or answer fails (then the
// connection ends with a FIN after the answers already written). answer
// gets each query and scratch space to append its answer to; a nil or
// short answer ends the connection. serveConn neither closes c nor
// bounds answer's time: the caller (ServeTCP) does both.
func serveConn(c TCPConn, answer func(query, scratch []byte) ([]byte, error)) {
	msg := make([]byte, 65535)
	scratch := make([]byte, 0, 4096)
	frame := make([]byte, 0, 2+4096)
	end := time.Now().Add(TCPMaxLife)
	for range TCPMaxQueries {
		deadline := time.Now().Add(TCPIdle)
		if deadline.After(end) {
			deadline = end
		}
		c.SetReadDeadline(deadline)
		if _, err := io.ReadFull(c, msg[:2]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().After(end) {
				finishTCP(c, msg)
			}
			return
		}
		n := int(binary.BigEndian.Uint16(msg[:2]))
		if _, err := io.ReadFull(c, msg[:n]); err != nil {
			return
		}
		out, err := answer(msg[:n], scratch[:0])
		if err != nil || len(out) < headerLen || len(out) > 65535 {
			finishTCP(c, msg)
			return
		}
		frame = binary.BigEndian.AppendUint16(frame[:0], uint16(len(out)))
		frame = append(frame, out...)
		c.SetWriteDeadline(time.Now().Add(TCPIdle))
		if _, err := c.Write(frame); err != nil {
			return
		}
	}
	finishTCP(c, msg)
}

// finishTCP ends a connection that may have unread pipelined queries
// without losing the answers already written: closing a socket with
// unread data sends a RST, and a RST makes the client discard what it
// has not read yet. So: FIN after the last answer, then read and discard
// until the client closes (it resends the unanswered queries on a new
// connection, RFC 7766 6.2.1) or TCPLinger passes; only then close.
func finishTCP(c TCPConn, buf []byte) {
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(TCPLinger))
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}
