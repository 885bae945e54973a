package torctl

import (
	"context"
	"errors"
	"time"
)

// When Tor ends a SOCKS stream, the relay cannot tell from the socket
// whether the exit ended it or Tor is going away: both read as a clean
// end of stream. A killed managed Tor is marked exiting by the kernel
// before its sockets close (ProcessState; an attached Tor's process is
// not inspected), but a Tor that exits on SIGTERM or SIGINT closes every
// connection itself, in tor_cleanup after its main loop has stopped,
// while its process is still an ordinary running one (measured
// 2026-12-06: a download cut off by SIGTERM read as complete). What
// separates the two is the main loop: after the exit ended a stream it
// goes on and answers the controller; after a SIGTERM it never answers
// again. Confirm asks it.

// Confirm reports, through done, whether Tor answered a control command
// sent after this call: true once it did (Tor was running its main loop
// after whatever happened before the call), false when there is no
// control connection, it closed, or no answer came within ProbeDeadline.
// It does not block; done runs on another goroutine. Calls that arrive
// while a command is out wait for the next one, so one command answers
// every end of stream that came before it was sent.
func (t *Tor) Confirm(done func(alive bool)) {
	t.confirmMu.Lock()
	t.confirmWait = append(t.confirmWait, done)
	start := !t.confirming
	t.confirming = true
	t.confirmMu.Unlock()
	if start {
		go t.confirmLoop()
	}
}

// confirmLoop sends one command per batch of waiters until none is left.
func (t *Tor) confirmLoop() {
	for {
		t.confirmMu.Lock()
		batch := t.confirmWait
		t.confirmWait = nil
		if len(batch) == 0 {
			t.confirming = false
			t.confirmMu.Unlock()
			return
		}
		t.confirmMu.Unlock()
		alive := t.answers()
		for _, done := range batch {
			done(alive)
		}
	}
}

// answers sends GETINFO version on the current control connection and
// reports whether Tor answered within ProbeDeadline. An error reply is
// an answer: Tor's main loop wrote it. At the deadline the batch hears
// false (a Tor that does not answer is hung or going away, and an end of
// stream it closed must not pass for a complete one); the command itself
// runs on, bounded by CommandTimeout like every command, and the next
// one queues behind it on the connection.
func (t *Tor) answers() bool {
	t.mu.Lock()
	c := t.cur
	connected := t.st.Connected
	t.mu.Unlock()
	if c == nil || !connected {
		return false
	}
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.CommandTimeout)
		defer cancel()
		_, err := c.Request(ctx, "GETINFO version")
		res <- err
	}()
	deadline := time.NewTimer(t.cfg.ProbeDeadline)
	defer deadline.Stop()
	select {
	case err := <-res:
		var re *ReplyError
		return err == nil || errors.As(err, &re)
	case <-deadline.C:
		return false
	}
}
