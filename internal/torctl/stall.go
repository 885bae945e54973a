package torctl

import (
	"fmt"
	"strings"
	"time"
)

// stallCauses and stallNext finish a bootstrap-stall diagnosis: what
// usually stops a Tor at a given phase, and what to do about it.
const (
	stallCauses = "likely causes: no network or a firewall that blocks Tor's relays; a wrong system clock (Tor refuses a consensus more than hours off); bridges that are wrong, down or blocked"
	stallNext   = "next: check the clock (date -u), that this machine reaches the network, and the bridge lines in --torrc; tor's own log lines show at --log-level debug"
)

// checkStall logs, once per stall, that bootstrap has made no progress
// for BootstrapStall, with Tor's last problem.
func (t *Tor) checkStall(now time.Time) {
	t.mu.Lock()
	st := t.st
	stuck := st.Connected && st.Bootstrap.Progress < 100 && t.stalled == "" &&
		!t.progressAt.IsZero() && now.Sub(t.progressAt) >= t.cfg.BootstrapStall
	var since time.Duration
	if stuck {
		since = now.Sub(t.progressAt)
		t.stalled = t.diagnosisLocked(since)
	}
	diag := t.stalled
	t.mu.Unlock()
	if !stuck {
		return
	}
	t.log.Warn("tor bootstrap stalled",
		"progress", st.Bootstrap.Progress, "tag", st.Bootstrap.Tag,
		"for", since.Round(time.Second), "diagnosis", diag)
}

// diagnosisLocked describes a stalled bootstrap; t.mu is held.
func (t *Tor) diagnosisLocked(since time.Duration) string {
	b := t.st.Bootstrap
	var s strings.Builder
	fmt.Fprintf(&s, "tor bootstrap stuck at %d%% (%s", b.Progress, b.Tag)
	if b.Summary != "" {
		fmt.Fprintf(&s, ": %s", b.Summary)
	}
	fmt.Fprintf(&s, ") for %v", since.Round(time.Second))
	last := b.Warning
	if tl := t.tlog.Load(); tl != nil {
		if l := tl.lastProblem(); l != "" {
			if last != "" {
				last += "; "
			}
			last += "log: " + l
		}
	}
	if last != "" {
		fmt.Fprintf(&s, "; tor's last problem: %s", last)
	}
	s.WriteString("; " + stallCauses + "; " + stallNext)
	return s.String()
}

// Diagnosis says why Tor is not ready, in the operator's terms: the
// reason, and once bootstrap has stalled for BootstrapStall, Tor's last
// problem, the likely causes and the next step. "" when ready.
func (t *Tor) Diagnosis() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.st.Ready() {
		return ""
	}
	if t.stalled != "" && t.st.Bootstrap.Progress < 100 {
		return t.stalled
	}
	if t.st.Connected && t.st.Bootstrap.Progress < 100 && !t.progressAt.IsZero() {
		// Not (yet) a stall, but the same hints help a caller that gives up.
		return t.diagnosisLocked(time.Since(t.progressAt))
	}
	return t.st.Reason()
}
