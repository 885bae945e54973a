package onion

import (
	"io"
	"net"
	"sync"
	"time"
)

// relayBufSize is one direction's copy buffer. Onion services are
// circuit-bound (a few hundred KiB/s at best), so 32 KiB, io.Copy's own
// size, keeps a busy relay's memory at 64 KiB per connection.
const relayBufSize = 32 << 10

// relayBufs pools copy buffers as pointers (a slice in an interface
// would allocate on every Put).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// relay copies between a (Tor's connection) and b (the target's) until
// both directions end, and returns the bytes copied each way. A direction
// that ends cleanly (EOF) is passed on as a half-close (CloseWrite), and
// the other direction then has linger to finish; a direction that fails,
// or whose destination cannot half-close, ends both. The caller closes a
// and b.
func relay(a, b net.Conn, linger time.Duration) (ab, ba int64) {
	var wg sync.WaitGroup
	wg.Go(func() { ab = pipe(b, a, linger) })
	ba = pipe(a, b, linger)
	wg.Wait()
	return ab, ba
}

// pipe copies src to dst, one direction of relay.
func pipe(dst, src net.Conn, linger time.Duration) int64 {
	buf := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(buf)
	// The wrappers hide ReadFrom and WriteTo, so that the pooled buffer
	// is the one used.
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *buf)
	cw, ok := dst.(interface{ CloseWrite() error })
	if err != nil || !ok || cw.CloseWrite() != nil {
		// Unblocks the other direction's read and write.
		src.Close()
		dst.Close()
		return n
	}
	// The other direction reads from dst: bound how long it goes on.
	dst.SetReadDeadline(time.Now().Add(linger))
	return n
}
