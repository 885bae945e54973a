package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/torgate/torgate"
)

// barWidth is the number of cells in the progress bar.
const barWidth = 30

// progressView shows Tor's bootstrap progress. On a terminal it draws a
// bar on the last line of stderr and keeps it there while log lines
// scroll above it (log output goes through Write); elsewhere it logs one
// line per new percentage.
type progressView struct {
	w   io.Writer
	tty bool
	fd  int          // of w, when tty
	log *slog.Logger // set after the logger, which writes through the view

	mu    sync.Mutex
	bar   string // the bar on screen, "" when none; guarded by mu
	last  int    // last percentage reported; guarded by mu
	began time.Time
}

// newProgressView wraps stderr. A bar is drawn only if stderr is a
// terminal and the logs are text.
func newProgressView(stderr io.Writer, logFormat string) *progressView {
	p := &progressView{w: stderr, last: -1, began: time.Now()}
	if f, ok := stderr.(*os.File); ok && logFormat == "text" {
		if isTerminal(int(f.Fd())) {
			p.tty, p.fd = true, int(f.Fd())
		}
	}
	return p
}

// width is the terminal's width in columns (80 if unknown).
func (p *progressView) width() int {
	if cols := terminalColumns(p.fd); cols > 0 {
		return cols
	}
	return 80
}

// Write writes log output above the bar.
func (p *progressView) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == "" {
		return p.w.Write(b)
	}
	io.WriteString(p.w, "\r\x1b[K")
	n, err := p.w.Write(b)
	io.WriteString(p.w, p.bar)
	return n, err
}

// update is torctl's OnProgress. With several Tor instances the view
// follows instance 0: one bar, not N interleaved; the others' progress is
// in tor_bootstrap_progress{instance} and /readyz.
func (p *progressView) update(b torgate.Bootstrap) {
	if b.Instance != 0 {
		return
	}
	p.mu.Lock()
	if b.Progress < p.last {
		// Tor restarted: report from the start again.
		p.began = time.Now()
	}
	if p.tty {
		defer p.mu.Unlock()
		// One column short of the width: a full line would wrap and
		// the next \r would not return to the bar's start.
		p.bar = renderBar(b, p.width()-1)
		io.WriteString(p.w, "\r\x1b[K"+p.bar)
		if b.Progress >= 100 {
			fmt.Fprintf(p.w, " (%.1fs)\n", time.Since(p.began).Seconds())
			p.bar = ""
		}
		p.last = b.Progress
		return
	}
	report := b.Progress != p.last && p.log != nil
	p.last = b.Progress
	elapsed := time.Since(p.began)
	// Log without p.mu: the logger writes through p.Write.
	p.mu.Unlock()
	if report {
		p.log.Info("tor bootstrap", "progress", b.Progress, "tag", b.Tag, "summary", b.Summary,
			"elapsed", elapsed.Round(100*time.Millisecond))
	}
}

// renderBar draws "Tor [#########.....]  45% Loading relay descriptors",
// cut to width columns.
func renderBar(b torgate.Bootstrap, width int) string {
	n := min(max(b.Progress, 0), 100) * barWidth / 100
	s := fmt.Sprintf("Tor [%s%s] %3d%% %s", strings.Repeat("#", n), strings.Repeat(".", barWidth-n), b.Progress, b.Summary)
	if b.Warning != "" {
		s += " (" + b.Warning + ")"
	}
	if r := []rune(s); len(r) > width && width > 0 {
		s = string(r[:width])
	}
	return s
}
