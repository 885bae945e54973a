package torctl

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Limits of torLog, so that a runaway tor cannot grow memory.
const (
	maxTorLine = 4 << 10 // longer lines are cut
	tailLines  = 5       // lines kept for the restart log and errors
)

// torLog turns the managed tor's stdout ("Nov 27 02:07:00.555 [warn]
// text") into log records: notice at Debug (the bootstrap lines are
// reported by torctl itself), warn at Warn, err at Error. It keeps the
// last lines for error messages.
type torLog struct {
	log *slog.Logger

	mu      sync.Mutex
	partial []byte   // guarded by mu
	last    []string // ring of the last tailLines lines; guarded by mu
	next    int      // guarded by mu
}

func newTorLog(log *slog.Logger) *torLog {
	return &torLog{log: log, last: make([]string, 0, tailLines)}
}

// Write implements io.Writer.
func (w *torLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxTorLine - len(w.partial)
			w.partial = append(w.partial, p[:min(len(p), max(room, 0))]...)
			break
		}
		line := p[:i]
		p = p[i+1:]
		if len(w.partial) > 0 {
			room := maxTorLine - len(w.partial)
			w.partial = append(w.partial, line[:min(len(line), max(room, 0))]...)
			line = w.partial
		}
		w.line(string(bytes.TrimRight(line, "\r")))
		w.partial = w.partial[:0]
	}
	return n, nil
}

// line logs one line; w.mu is held.
func (w *torLog) line(s string) {
	if s == "" {
		return
	}
	if len(w.last) < tailLines {
		w.last = append(w.last, s)
	} else {
		w.last[w.next] = s
		w.next = (w.next + 1) % tailLines
	}
	level := slog.LevelDebug
	msg := s
	if i := strings.Index(s, "] "); i >= 0 && strings.LastIndexByte(s[:i], '[') >= 0 {
		sev := s[strings.LastIndexByte(s[:i], '[')+1 : i]
		msg = s[i+2:]
		switch sev {
		case "warn":
			level = slog.LevelWarn
		case "err":
			level = slog.LevelError
		}
	}
	w.log.Log(context.Background(), level, "tor log", "line", msg)
}

// lastProblem returns the newest [warn] or [err] line among the last
// ones kept, else the newest [notice] line, else "".
func (w *torLog) lastProblem() string {
	lines := w.tail()
	for _, sev := range []string{"[warn] ", "[err] ", "[notice] "} {
		for i := len(lines) - 1; i >= 0; i-- {
			if _, after, ok := strings.Cut(lines[i], sev); ok {
				return after
			}
		}
	}
	return ""
}

// tail returns the last lines, oldest first.
func (w *torLog) tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.last))
	out = append(out, w.last[w.next:]...)
	return append(out, w.last[:w.next]...)
}
