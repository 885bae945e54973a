package main

import (
	"runtime"
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

// TestMaxProcsDefault: the binary's GOMAXPROCS default applies only when
// the environment sets none.
func TestMaxProcsDefault(t *testing.T) {
	old := runtime.GOMAXPROCS(3)
	defer runtime.GOMAXPROCS(old)
	setMaxProcs("3") // the runtime read GOMAXPROCS=3 itself
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("with GOMAXPROCS set, it changed to %d", got)
	}
	setMaxProcs("")
	if got := runtime.GOMAXPROCS(0); got != defaultMaxProcs {
		t.Errorf("without GOMAXPROCS, %d, want %d", got, defaultMaxProcs)
	}
}
