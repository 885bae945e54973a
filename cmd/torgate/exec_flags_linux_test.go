package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseExecFlags: exec's own flags, its command, and its defaults (no
// admin endpoint unless asked for).
func TestParseExecFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		wantAdmin string
		wantUser  string
		wantWait  time.Duration
		wantArgv  []string
		wantErr   string
	}{
		{name: "defaults", args: []string{"--", "curl", "-s"}, wantWait: defaultExecWait, wantArgv: []string{"curl", "-s"}},
		{name: "own flags", args: []string{"--user", "alice", "--wait", "1m", "id"}, wantUser: "alice", wantWait: time.Minute, wantArgv: []string{"id"}},
		{name: "admin when asked", args: []string{"--admin", "127.0.0.1:9999", "id"}, wantAdmin: "127.0.0.1:9999", wantWait: defaultExecWait, wantArgv: []string{"id"}},
		{name: "no command", args: []string{"--user", "alice"}, wantErr: "no command given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f runFlags
			o, err := parseExecFlags(tc.args, io.Discard, &f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.tor.admin != tc.wantAdmin || o.user != tc.wantUser || o.wait != tc.wantWait || !slices.Equal(o.argv, tc.wantArgv) {
				t.Errorf("admin %q user %q wait %v argv %q; want %q %q %v %q",
					f.tor.admin, o.user, o.wait, o.argv, tc.wantAdmin, tc.wantUser, tc.wantWait, tc.wantArgv)
			}
		})
	}
}

// TestParseExecChildEnv: the command's environment is torgate's without
// the child's own variables.
func TestParseExecChildEnv(t *testing.T) {
	got := withoutChildEnv([]string{"PATH=/bin", childEnv + "=1", childEnv + "_UID=1000", "HOME=/root", childEnv + "_GID=1000"})
	if want := []string{"PATH=/bin", "HOME=/root"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
