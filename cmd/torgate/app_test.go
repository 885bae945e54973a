package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestRunTasks(t *testing.T) {
	errBoom := errors.New("boom")
	// untilDone is a task as app's are: it runs until its context ends,
	// then returns nil.
	untilDone := func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	}
	for _, tc := range []struct {
		name    string
		first   func(context.Context) error
		cancel  bool // cancel the parent context
		wantErr error
	}{
		{name: "a failure ends the others", first: func(context.Context) error { return errBoom }, wantErr: errBoom},
		{name: "a task that returns nil ends the others", first: func(context.Context) error { return nil }},
		{name: "the parent's end ends them all", first: func(ctx context.Context) error { <-ctx.Done(); return nil }, cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(10*time.Millisecond, cancel)
			}
			done := make(chan error, 1)
			go func() {
				done <- runTasks(ctx, slog.New(slog.DiscardHandler), []func(context.Context) error{tc.first, untilDone, untilDone})
			}()
			select {
			case err := <-done:
				if err != tc.wantErr {
					t.Errorf("got %v, want %v", err, tc.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("runTasks did not return")
			}
		})
	}
}
