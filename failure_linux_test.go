package torgate_test

import (
	"context"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestRunEndsWhenTUNDeleted: deleting the TUN under a running router
// ends Run with an error (cmd then exits non-zero) instead of leaving a
// process that looks alive and forwards nothing.
func TestRunEndsWhenTUNDeleted(t *testing.T) {
	nstest.RequireRoot(t)
	ws := nstest.New(t, nstest.Options{})
	srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
	r, err := torgate.New(torgate.Config{Device: ws.Dev, Upstream: srv.Dialer().Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	if err := r.Healthy(); err != nil {
		t.Fatalf("not healthy before the TUN was deleted: %v", err)
	}
	if err := netns.Do(ws.Name, func() error {
		l, err := netlink.LinkByName("tg0")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil after the TUN was deleted")
		}
		t.Logf("Run returned %v after the TUN was deleted: %v", time.Since(deleted).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after the TUN was deleted")
	}
}
