package gate

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	g := New(nil, "tor", "upstream")
	if g.Ready() || !errors.Is(g.Err(), ErrNotReported) {
		t.Fatalf("new gate: ready %v, err %v", g.Ready(), g.Err())
	}
	ch := g.Changed()
	g.Set(0, nil)
	select {
	case <-ch:
	default:
		t.Fatal("Set did not signal a change")
	}
	if g.Ready() {
		t.Fatal("ready with one part unreported")
	}
	var nre *NotReadyError
	if err := g.Err(); !errors.As(err, &nre) || nre.Part != "upstream" {
		t.Fatalf("Err = %v, want the upstream part", err)
	}
	g.Set(1, nil)
	if !g.Ready() || g.Err() != nil {
		t.Fatalf("all parts ready: ready %v, err %v", g.Ready(), g.Err())
	}
	// The same state again wakes nobody.
	ch = g.Changed()
	g.Set(1, nil)
	g.Set(0, nil)
	select {
	case <-ch:
		t.Fatal("a report of the same state signalled a change")
	default:
	}
	down := errors.New("control connection lost")
	g.Set(0, down)
	if g.Ready() || !errors.Is(g.Err(), down) {
		t.Fatalf("tor down: ready %v, err %v", g.Ready(), g.Err())
	}
}

// TestWait: Wait returns when the last part reports ready, and with the
// reason when its context ends first.
func TestWait(t *testing.T) {
	g := New(nil, "a")
	done := make(chan error, 1)
	go func() { done <- g.Wait(context.Background()) }()
	g.Set(0, errors.New("booting"))
	g.Set(0, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	g.Set(0, errors.New("booting"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || err.Error() == context.DeadlineExceeded.Error() {
		t.Fatalf("Wait = %v, want the deadline and the reason", err)
	}
}

// TestExtra: a condition that cannot report is read on each decision.
func TestExtra(t *testing.T) {
	var refuse error
	g := New(func() error { return refuse }, "a")
	g.Set(0, nil)
	if !g.Ready() {
		t.Fatal("not ready")
	}
	refuse = errors.New("embedder says no")
	if g.Ready() || g.Err() != refuse {
		t.Fatalf("extra ignored: ready %v, err %v", g.Ready(), g.Err())
	}
}

// TestReadyOf: a subset of parts is ready while a part outside it is
// not, and ErrOf names the first part of the subset that is not.
func TestReadyOf(t *testing.T) {
	g := New(nil, "router", "tor0", "tor1")
	g.Set(0, nil)
	g.Set(1, nil)
	own0, own1 := MaskOf(0, 1), MaskOf(0, 2)
	if !g.ReadyOf(own0) || g.ErrOf(own0) != nil {
		t.Fatalf("router and tor0 ready: ReadyOf %v, ErrOf %v", g.ReadyOf(own0), g.ErrOf(own0))
	}
	var nre *NotReadyError
	if g.ReadyOf(own1) || !errors.As(g.ErrOf(own1), &nre) || nre.Part != "tor1" {
		t.Fatalf("tor1 unreported: ReadyOf %v, ErrOf %v", g.ReadyOf(own1), g.ErrOf(own1))
	}
	if g.Ready() {
		t.Fatal("Ready with tor1 unreported")
	}
	g.Set(2, nil)
	g.Set(1, errors.New("down"))
	if g.ReadyOf(own0) || !g.ReadyOf(own1) || g.Ready() {
		t.Fatalf("tor0 down: ReadyOf(0) %v, ReadyOf(1) %v, Ready %v", g.ReadyOf(own0), g.ReadyOf(own1), g.Ready())
	}
	g.Set(1, nil)
	if !g.Ready() || !g.ReadyOf(own0) || !g.ReadyOf(own1) {
		t.Fatal("every part ready, gate not")
	}
	big := make([]string, MaxParts)
	for i := range big {
		big[i] = "p"
	}
	g = New(nil, big...)
	for i := range big {
		g.Set(Part(i), nil)
	}
	if !g.Ready() || g.Err() != nil {
		t.Fatalf("%d parts ready: Ready %v, Err %v", MaxParts, g.Ready(), g.Err())
	}
}
