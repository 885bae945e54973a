package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/torgate/torgate"
)

func TestTorUpstream(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The default user depends on the machine: debian-tor as root where
	// it exists, else none.
	auto := ""
	if _, err := user.Lookup(defaultTorUser); err == nil && os.Geteuid() == 0 {
		auto = defaultTorUser
	}
	type (
		M = torgate.ManagedTor
		A = torgate.AttachedTor
	)
	for _, tc := range []struct {
		name      string
		f         torFlags
		socks     string
		stateDir  string
		managed   *M
		attached  *A
		wantSocks string // plain SOCKS
		err       string
	}{
		{name: "managed default", managed: &M{DataDir: "/var/lib/torgate/tor", User: auto}},
		{name: "managed state dir", stateDir: "/srv/tg", f: torFlags{torrc: "/etc/torgate/torrc", torPath: "/opt/tor"},
			managed: &M{DataDir: "/srv/tg/tor", TorrcFile: "/etc/torgate/torrc", TorPath: "/opt/tor", User: auto}},
		{name: "managed tor user", f: torFlags{user: "alice"}, managed: &M{DataDir: "/var/lib/torgate/tor", User: "alice"}},
		{name: "exec data dir", f: torFlags{dataDir: "/var/lib/torgate/exec-tor"}, managed: &M{DataDir: "/var/lib/torgate/exec-tor", User: auto}},
		{name: "tor user with socks", f: torFlags{user: "alice"}, socks: "127.0.0.1:9050", err: "--tor-user"},
		{name: "plain socks", socks: "127.0.0.1:9050", wantSocks: "127.0.0.1:9050"},
		{name: "attach", f: torFlags{control: "127.0.0.1:9051"}, attached: &A{ControlAddr: "127.0.0.1:9051"}},
		{name: "attach with socks", f: torFlags{control: "/run/tor/control"}, socks: "unix:/run/tor/socks",
			attached: &A{ControlAddr: "/run/tor/control", SocksAddr: "unix:/run/tor/socks"}},
		{name: "attach password file", f: torFlags{control: "127.0.0.1:9051", passwordFile: pwFile},
			attached: &A{ControlAddr: "127.0.0.1:9051", ControlPassword: "s3cret"}},
		{name: "torrc with socks", f: torFlags{torrc: "/x"}, socks: "127.0.0.1:9050", err: "--torrc"},
		{name: "torrc with control", f: torFlags{torrc: "/x", control: "127.0.0.1:9051"}, err: "--torrc"},
		{name: "password without control", f: torFlags{password: "x"}, err: "needs --tor-control"},
		{name: "both passwords", f: torFlags{control: "127.0.0.1:9051", password: "x", passwordFile: pwFile}, err: "exclude"},
		{name: "managed instances", f: torFlags{instances: 3}, managed: &M{DataDir: "/var/lib/torgate/tor", User: auto, Instances: 3}},
		{name: "instances with socks", f: torFlags{instances: 2}, socks: "127.0.0.1:9050", err: "--tor-instances"},
		{name: "instances with control", f: torFlags{instances: 2, control: "127.0.0.1:9051"}, err: "--tor-instances"},
		{name: "too many instances", f: torFlags{instances: torgate.MaxTorInstances + 1}, err: "--tor-instances"},
		{name: "missing password file", f: torFlags{control: "127.0.0.1:9051", passwordFile: "/nonexistent"}, err: "--tor-control-password-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got torgate.Config
			err := tc.f.upstream(&got, tc.socks, tc.stateDir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ManagedTor, tc.managed) || !reflect.DeepEqual(got.AttachedTor, tc.attached) || got.SocksAddr != tc.wantSocks {
				t.Fatalf("upstream = managed %+v attached %+v socks %q; want %+v %+v %q",
					got.ManagedTor, got.AttachedTor, got.SocksAddr, tc.managed, tc.attached, tc.wantSocks)
			}
		})
	}
}

// fakeAdmin serves POST /newnym on a unix socket and records the queries.
type fakeAdmin struct {
	path   string
	mu     sync.Mutex
	got    []string
	status int
}

func newFakeAdmin(t *testing.T) *fakeAdmin {
	a := &fakeAdmin{path: filepath.Join(t.TempDir(), "admin.sock"), status: http.StatusOK}
	ln, err := net.Listen("unix", a.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.got = append(a.got, r.Method+" "+r.URL.String())
		status := a.status
		a.mu.Unlock()
		if status != http.StatusOK {
			http.Error(w, "tor rate-limits NEWNYM to one per 10s: retry in 7s", status)
			return
		}
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func TestNewnymCommand(t *testing.T) {
	a := newFakeAdmin(t)
	for _, tc := range []struct {
		args []string
		want string // request seen, "" for none
		err  string
	}{
		{args: []string{"--admin", a.path}, want: "POST /newnym"},
		{args: []string{"--admin", a.path, "10.152.152.11"}, want: "POST /newnym?source=10.152.152.11"},
		{args: []string{"fd19:7a2b::11", "--admin", "unix:" + a.path}, want: "POST /newnym?source=fd19:7a2b::11"},
		{args: []string{"--admin", a.path, "web.example"}, err: "not an IP address"},
		{args: []string{"--admin", a.path, "10.0.0.1", "10.0.0.2"}, err: "one SOURCE at most"},
		{args: []string{"--admin", filepath.Join(t.TempDir(), "none.sock")}, err: "admin endpoint"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			a.mu.Lock()
			a.got = nil
			a.mu.Unlock()
			var out bytes.Buffer
			err := cmdNewnym(context.Background(), tc.args, &out, io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if len(a.got) != 1 || a.got[0] != tc.want {
				t.Fatalf("requests %q, want %q", a.got, tc.want)
			}
			if !strings.Contains(out.String(), "new identity") {
				t.Errorf("output %q", out.String())
			}
		})
	}
	a.mu.Lock()
	a.status = http.StatusServiceUnavailable
	a.mu.Unlock()
	err := cmdNewnym(context.Background(), []string{"--admin", a.path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "retry in 7s") {
		t.Fatalf("rate-limited newnym: %v, want the server's reason", err)
	}
}

func TestProgressLogLines(t *testing.T) {
	var logs bytes.Buffer
	p := newProgressView(&logs, "text")
	if p.tty {
		t.Fatal("a buffer is not a terminal")
	}
	// As in cmdRun: the logger writes through the view.
	p.log = slog.New(slog.NewTextHandler(p, nil))
	for _, n := range []int{0, 5, 5, 50, 100} {
		p.update(torgate.Bootstrap{Progress: n, Tag: "t", Summary: "s"})
	}
	if got := strings.Count(logs.String(), "tor bootstrap"); got != 4 {
		t.Fatalf("%d progress lines, want 4 (one per new percentage):\n%s", got, logs.String())
	}
}

func TestProgressBar(t *testing.T) {
	var screen bytes.Buffer
	p := &progressView{w: &screen, tty: true, fd: -1, last: -1}
	p.update(torgate.Bootstrap{Progress: 50, Summary: "Loading relay descriptors"})
	fmt.Fprintf(p, "a log line\n")
	p.update(torgate.Bootstrap{Progress: 100, Summary: "Done"})
	fmt.Fprintf(p, "after\n")
	want := "\r\x1b[KTor [###############...............]  50% Loading relay descriptors" +
		"\r\x1b[Ka log line\nTor [###############...............]  50% Loading relay descriptors" +
		"\r\x1b[KTor [##############################] 100% Done"
	got := screen.String()
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "s)\nafter\n") {
		t.Fatalf("screen:\n%q\nwant prefix\n%q", got, want)
	}
	if s := renderBar(torgate.Bootstrap{Progress: 10, Summary: strings.Repeat("x", 200)}, 40); len(s) != 40 {
		t.Errorf("bar not cut to the width: %d", len(s))
	}
}
