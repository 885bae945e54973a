package torctl

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSplitFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "", want: nil},
		{in: "a b  c", want: []string{"a", "b", "c"}},
		{in: `KEY="two words" X=1`, want: []string{"KEY=two words", "X=1"}},
		{in: `"127.0.0.1:9050" "unix:/run/tor/socks"`, want: []string{"127.0.0.1:9050", "unix:/run/tor/socks"}},
		{in: `"a\"b\\c\n"`, want: []string{"a\"b\\c\n"}},
		{in: `""`, want: []string{""}},
		{in: `"open`, err: true},
		{in: `"esc\`, err: true},
	} {
		got, err := SplitFields(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("SplitFields(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseBootstrap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bootstrap
		ok   bool
		err  bool
	}{
		{in: `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`, want: Bootstrap{Progress: 100, Tag: "done", Summary: "Done"}, ok: true},
		{in: `NOTICE BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading relay descriptors"`,
			want: Bootstrap{Progress: 50, Tag: "loading_descriptors", Summary: "Loading relay descriptors"}, ok: true},
		{in: `WARN BOOTSTRAP PROGRESS=10 TAG=conn_done SUMMARY="Connected to a relay" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=warn HOSTID="A" HOSTADDR="1.2.3.4:443"`,
			want: Bootstrap{Progress: 10, Tag: "conn_done", Summary: "Connected to a relay", Warning: "Connection refused"}, ok: true},
		{in: `WARN BOOTSTRAP PROGRESS=10 TAG=conn_done REASON=NOROUTE`, want: Bootstrap{Progress: 10, Tag: "conn_done", Warning: "NOROUTE"}, ok: true},
		{in: `NOTICE CIRCUIT_ESTABLISHED`, ok: false},
		{in: `NOTICE BOOTSTRAP PROGRESS=101`, err: true},
		{in: `NOTICE BOOTSTRAP PROGRESS=x`, err: true},
		{in: `NOTICE BOOTSTRAP`, err: true},
		{in: `NOTICE`, err: true},
		{in: `NOTICE BOOTSTRAP SUMMARY="open`, err: true},
	} {
		got, ok, err := parseBootstrap(tc.in)
		if (err != nil) != tc.err || ok != tc.ok || got != tc.want {
			t.Errorf("parseBootstrap(%q) = %+v, %v, %v; want %+v, %v, error %v", tc.in, got, ok, err, tc.want, tc.ok, tc.err)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("parseBootstrap(%q) error %v is not ErrSyntax", tc.in, err)
		}
	}
}

func TestPickSocks(t *testing.T) {
	for _, tc := range []struct {
		in            string
		network, addr string
		err           error
	}{
		{in: `"127.0.0.1:9050"`, network: "tcp", addr: "127.0.0.1:9050"},
		{in: `127.0.0.1:9050`, network: "tcp", addr: "127.0.0.1:9050"},
		{in: `"127.0.0.1:9050" "unix:/run/tor/socks"`, network: "unix", addr: "/run/tor/socks"},
		{in: `"[::1]:9050" "127.0.0.1:9150"`, network: "tcp", addr: "[::1]:9050"},
		{in: `"0.0.0.0:9050"`, network: "tcp", addr: "127.0.0.1:9050"},
		{in: `"[::]:9050"`, network: "tcp", addr: "[::1]:9050"},
		{in: `"unix:" "garbage" "127.0.0.1:0"`, err: ErrNoSocksPort},
		{in: ``, err: ErrNoSocksPort},
	} {
		ls, err := parseListeners(tc.in)
		if err != nil {
			t.Fatalf("parseListeners(%q): %v", tc.in, err)
		}
		n, a, err := pickSocks(ls)
		if n != tc.network || a != tc.addr || !errors.Is(err, tc.err) {
			t.Errorf("pickSocks(%q) = %q %q %v; want %q %q %v", tc.in, n, a, err, tc.network, tc.addr, tc.err)
		}
	}
}

func TestLiveness(t *testing.T) {
	for in, want := range map[string]bool{"up": true, "UP": true, "down": false, "DOWN": false} {
		if got, err := parseLiveness(in); err != nil || got != want {
			t.Errorf("parseLiveness(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseLiveness("sideways"); err == nil {
		t.Error("parseLiveness accepted nonsense")
	}
}

func TestStatusReason(t *testing.T) {
	ready := Status{Connected: true, Bootstrap: Bootstrap{Progress: 100, Tag: "done"}, CircuitEstablished: true, NetworkLive: true}
	if !ready.Ready() || ready.Reason() != "" {
		t.Fatalf("ready status: Ready %v Reason %q", ready.Ready(), ready.Reason())
	}
	for _, tc := range []struct {
		mut  func(*Status)
		want string
	}{
		{func(s *Status) { s.Connected = false }, "no connection"},
		{func(s *Status) { s.Bootstrap = Bootstrap{Progress: 45, Tag: "requesting_descriptors"} }, "bootstrapping 45% (requesting_descriptors)"},
		{func(s *Status) { s.CircuitEstablished = false }, "no working circuit"},
		{func(s *Status) { s.NetworkLive = false }, "network down"},
	} {
		s := ready
		tc.mut(&s)
		if s.Ready() || !strings.Contains(s.Reason(), tc.want) {
			t.Errorf("status %+v: Ready %v, Reason %q; want not ready with %q", s, s.Ready(), s.Reason(), tc.want)
		}
	}
}

// quoteField quotes s for SplitFields.
func quoteField(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// FuzzSplitFields: never panics, and fields survive quoting and splitting
// again.
func FuzzSplitFields(f *testing.F) {
	f.Add(`NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`)
	f.Add(`"127.0.0.1:9050" "unix:/run/tor/socks"`)
	f.Add(`"a\"b\\c\n"`)
	f.Fuzz(func(t *testing.T, s string) {
		fields, err := SplitFields(s)
		if err != nil {
			return
		}
		var b strings.Builder
		for i, fl := range fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(quoteField(fl))
		}
		again, err := SplitFields(b.String())
		if err != nil || !slices.Equal(again, fields) {
			t.Fatalf("SplitFields(%q) = %q; requoted %q splits to %q, %v", s, fields, b.String(), again, err)
		}
	})
}

// FuzzParseBootstrap: never panics; a parsed phase has progress 0..100.
func FuzzParseBootstrap(f *testing.F) {
	f.Add(`NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`)
	f.Add(`WARN BOOTSTRAP PROGRESS=10 TAG=conn_done SUMMARY="x" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3`)
	f.Fuzz(func(t *testing.T, s string) {
		b, ok, err := parseBootstrap(s)
		if err != nil && ok {
			t.Fatalf("parseBootstrap(%q): ok with error %v", s, err)
		}
		if ok && (b.Progress < 0 || b.Progress > 100) {
			t.Fatalf("parseBootstrap(%q) progress %d", s, b.Progress)
		}
		if ok && b.Progress != 0 && !strings.Contains(s, strconv.Itoa(b.Progress)) {
			t.Fatalf("parseBootstrap(%q) invented progress %d", s, b.Progress)
		}
	})
}

// FuzzPickSocks: never panics; the chosen endpoint is a unix path or a
// dialable IP:port.
func FuzzPickSocks(f *testing.F) {
	f.Add(`"127.0.0.1:9050" "unix:/run/tor/socks"`)
	f.Add(`"[::]:9050"`)
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := parseListeners(s)
		if err != nil {
			return
		}
		n, a, err := pickSocks(ls)
		switch {
		case err != nil:
			if !errors.Is(err, ErrNoSocksPort) {
				t.Fatalf("pickSocks(%q): %v", s, err)
			}
		case n == "unix":
			if a == "" {
				t.Fatalf("pickSocks(%q): empty unix path", s)
			}
		case n == "tcp":
			ap, err := netip.ParseAddrPort(a)
			if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
				t.Fatalf("pickSocks(%q) = %q: %v", s, a, err)
			}
		default:
			t.Fatalf("pickSocks(%q) network %q", s, n)
		}
	})
}
