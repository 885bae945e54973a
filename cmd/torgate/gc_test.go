package main

import (
	"runtime/debug"
	"testing"
)

// TestGCPercentDefault: the binary's GOGC default applies only when the
// environment sets none.
func TestGCPercentDefault(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	setGCPercent("50") // the runtime read GOGC=50 itself
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, GC percent changed to %d", got)
	}
	setGCPercent("")
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("without GOGC, GC percent %d, want %d", got, defaultGCPercent)
	}
}
