package endpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Endpoint
		wantErr bool
	}{
		{in: "127.0.0.1:9050", want: Endpoint{Network: "tcp", Address: "127.0.0.1:9050"}},
		{in: "[::1]:9051", want: Endpoint{Network: "tcp", Address: "[::1]:9051"}},
		{in: "/run/tor/socks", want: Endpoint{Network: "unix", Address: "/run/tor/socks"}},
		{in: "unix:/run/tor/control", want: Endpoint{Network: "unix", Address: "/run/tor/control"}},
		{in: "unix:relative.sock", want: Endpoint{Network: "unix", Address: "relative.sock"}},
		{in: "", wantErr: true},
		{in: "unix:", wantErr: true},
		{in: "localhost:9050", wantErr: true},
		{in: "127.0.0.1:0", wantErr: true},
		{in: "127.0.0.1", wantErr: true},
		{in: "/" + strings.Repeat("x", MaxUnixPath), wantErr: true},
		{in: "/a\x00b", wantErr: true},
	} {
		got, err := Parse(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q) = %v, %v; want ErrSyntax", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		if back, err := Parse(got.String()); err != nil || back != got {
			t.Errorf("Parse(%q.String()) = %v, %v", tc.in, back, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9050", "unix:/x", "/x", "[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		if back, err := Parse(e.String()); err != nil || back != e {
			t.Fatalf("Parse(%q) = %v, but its String %q parses to %v, %v", s, e, e.String(), back, err)
		}
	})
}
