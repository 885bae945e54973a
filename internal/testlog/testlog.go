// Package testlog holds the log sinks tests share: a Buffer a logger
// writes to while the test reads it, and a Writer that sends log lines
// to t.Log.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Writer sends each write, one log line, to tb.Log.
type Writer struct{ TB testing.TB }

func (w Writer) Write(p []byte) (int, error) {
	w.TB.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// New returns a text logger at level writing to tb.Log.
func New(tb testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer{tb}, &slog.HandlerOptions{Level: level}))
}
