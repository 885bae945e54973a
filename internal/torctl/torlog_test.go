package torctl

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestTorLog(t *testing.T) {
	var out bytes.Buffer
	w := newTorLog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	// Lines split across writes, CRLF, a blank line, and levels.
	for _, chunk := range []string{
		"Nov 27 02:07:00.555 [notice] Bootstr", "apped 5% (conn)\r\n\n",
		"Nov 27 02:07:00.557 [warn] You are running Tor as root.\n",
		"Nov 27 02:07:00.558 [err] Reading config failed\nno brackets here\n",
	} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	got := out.String()
	for _, want := range []string{
		`level=DEBUG msg="tor log" line="Bootstrapped 5% (conn)"`,
		`level=WARN msg="tor log" line="You are running Tor as root."`,
		`level=ERROR msg="tor log" line="Reading config failed"`,
		`level=DEBUG msg="tor log" line="no brackets here"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "tor log"); n != 4 {
		t.Errorf("%d records, want 4", n)
	}
	for i := range 10 {
		w.Write([]byte("line " + string(rune('0'+i)) + "\n"))
	}
	if tail := w.tail(); !slices.Equal(tail, []string{"line 5", "line 6", "line 7", "line 8", "line 9"}) {
		t.Errorf("tail = %q", tail)
	}
	// A line longer than the cap is cut, not buffered without bound.
	out.Reset()
	w.Write([]byte(strings.Repeat("x", 3*maxTorLine)))
	w.Write([]byte(strings.Repeat("y", maxTorLine) + "\n"))
	if l := len(w.tail()[tailLines-1]); l != maxTorLine {
		t.Errorf("long line kept at %d bytes, want %d", l, maxTorLine)
	}
}
