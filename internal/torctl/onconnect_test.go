package torctl

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestOnConnect: the hook runs on every new control connection, before
// it serves, with a connection that takes commands; an error from it
// drops the connection, which is retried.
func TestOnConnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.setReady()
		var mu sync.Mutex
		var conns []*Conn
		fail := true
		hook := func(ctx context.Context, c *Conn) error {
			mu.Lock()
			defer mu.Unlock()
			if _, err := c.Request(ctx, "SIGNAL HOOK"); err != nil {
				return err
			}
			conns = append(conns, c)
			if fail {
				fail = false
				return errors.New("hook refused")
			}
			return nil
		}
		cfg := Config{ControlAddr: "127.0.0.1:9051", OnConnect: hook, dial: f.dial, Logger: testLogger(t)}
		tor, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := tor.Start(t.Context()); err == nil {
			t.Fatal("Start succeeded although OnConnect failed")
		}
		tor.Close()

		tor = startAttached(t, f, Config{OnConnect: hook})
		synctest.Wait()
		if !tor.Ready() {
			t.Fatalf("not ready after the hook succeeded: %+v", tor.Status())
		}
		f.dropAll()
		time.Sleep(2 * DefaultReconnectInterval)
		synctest.Wait()
		if !tor.Ready() {
			t.Fatalf("not ready after reconnecting: %+v", tor.Status())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(conns) != 3 || conns[1] == conns[2] {
			t.Fatalf("hook ran on %d connections, want 3 distinct (failed start, start, reconnect)", len(conns))
		}
		if got := f.signalsSent(); len(got) != 3 || got[2] != "HOOK" {
			t.Errorf("commands from the hook = %v", got)
		}
	})
}
