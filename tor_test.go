package torgate_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/internal/wstest"
)

// TestUpstreamChoice: exactly one of ManagedTor, AttachedTor, SocksAddr
// and Upstream.
func TestUpstreamChoice(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  torgate.Config
	}{
		{name: "none"},
		{name: "managed and socks", cfg: torgate.Config{ManagedTor: &torgate.ManagedTor{DataDir: "/x"}, SocksAddr: "127.0.0.1:9050"}},
		{name: "attached and managed", cfg: torgate.Config{ManagedTor: &torgate.ManagedTor{DataDir: "/x"}, AttachedTor: &torgate.AttachedTor{ControlAddr: "127.0.0.1:9051"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub, _ := wstest.New(t, 1500)
			tc.cfg.Device = hub
			_, err := torgate.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), "exactly one of ManagedTor, AttachedTor, SocksAddr and Upstream") {
				t.Fatalf("New = %v, want the upstream choice refused", err)
			}
		})
	}
}

// TestRouterOwnsManagedTor runs a Router with a managed tor that stays
// off the network (DisableNetwork): the Router starts and supervises it,
// is not ready while it has not bootstrapped, carries out new identities
// within Tor's NEWNYM rate limit, counts them, and ends Run with an error
// once Tor's supervisor stops.
func TestRouterOwnsManagedTor(t *testing.T) {
	testnet.Require(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hub, _ := wstest.New(t, 1500, netip.MustParseAddr("10.152.152.11"))
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	r, err := torgate.NewContext(ctx, torgate.Config{
		Device: hub,
		ManagedTor: &torgate.ManagedTor{
			DataDir:    filepath.Join(dir, "tor"),
			TorrcLines: []string{"DisableNetwork 1", "GeoIPFile " + empty, "GeoIPv6File " + empty},
		},
		Registerer: reg,
		Logger:     testlog.New(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Mode() != torgate.ModeManaged || r.Tor() == nil {
		t.Fatalf("Mode %q, Tor %v; want managed with a Tor", r.Mode(), r.Tor())
	}
	ran := make(chan error, 1)
	go func() { ran <- r.Run(t.Context()) }()
	for !r.Tor().Status().Connected {
		if ctx.Err() != nil {
			t.Fatal("the Router's tor never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Ready(); err == nil {
		t.Fatal("ready with a tor that cannot bootstrap")
	}
	if got := metric(t, reg, "ready", ""); got != 0 {
		t.Errorf("ready = %v, want 0", got)
	}
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if err := r.WaitReady(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady = %v, want a deadline error", err)
	}
	wcancel()

	if err := r.NewIdentity(netip.MustParseAddr("10.152.152.11")); !errors.Is(err, torgate.ErrUnknownWorkstation) {
		t.Errorf("NewIdentity of a source that never connected = %v, want ErrUnknownWorkstation", err)
	}
	if err := r.NewIdentityAll(ctx); err != nil {
		t.Fatalf("NewIdentityAll: %v", err)
	}
	if err := r.NewIdentityAll(ctx); !errors.Is(err, torgate.ErrRateLimited) {
		t.Fatalf("second NewIdentityAll = %v, want Tor's rate limit", err)
	}
	if src, all := metric(t, reg, "new_identity_total", "source"), metric(t, reg, "new_identity_total", "all"); src != 0 || all != 1 {
		t.Errorf("new_identity_total: source %v, all %v; want 0 (the unknown source not counted) and 1 (the rate-limited one not counted)", src, all)
	}

	// A supervisor that stops (here: closed behind the Router's back)
	// ends Run with an error: a router without its Tor must not look up.
	r.Tor().Close()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "tor supervisor stopped") {
			t.Fatalf("Run = %v, want the supervisor's end", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after Tor's supervisor stopped")
	}
}

// metric returns the value of reg's gauge or counter name, of the series
// whose first label has value label ("" for an unlabelled metric).
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); label == "" || (len(l) > 0 && l[0].GetValue() == label) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}
