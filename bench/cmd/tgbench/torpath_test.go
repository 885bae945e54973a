//go:build linux

package main

import (
	"testing"

	"github.com/torgate/torgate/internal/assign"
)

// TestPickSources checks the workstation addresses: consecutive on the
// single-tor paths, and on torgate-n spread round-robin over the
// instances under the harness's key, by torgate's own assignment.
func TestPickSources(t *testing.T) {
	e := &torEnv{f: torFlags{workstations: 7, instances: 3}}
	for _, path := range []string{torPathTransport, torPathTorgate, torPathTorgateN} {
		srcs, err := e.pickSources(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(srcs) != 7 {
			t.Fatalf("%s: %d addresses, want 7", path, len(srcs))
		}
		for i := 1; i < len(srcs); i++ {
			if !srcs[i-1].Less(srcs[i]) {
				t.Errorf("%s: %v not ascending", path, srcs)
			}
			if path != torPathTorgateN && srcs[i] != srcs[i-1].Next() {
				t.Errorf("%s: %v not consecutive", path, srcs)
			}
		}
		if path != torPathTorgateN {
			continue
		}
		pick := assign.New(e.instKey, 3)
		for i, a := range srcs {
			if k := pick.Pick(a); k != i%3 {
				t.Errorf("workstation %d (%v) on instance %d, want %d", i, a, k, i%3)
			}
		}
	}
}

func TestUnevenTors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mb   []float64
		want string
	}{
		{name: "one tor", mb: []float64{5}, want: ""},
		{name: "even", mb: []float64{5, 6}, want: ""},
		{name: "unknown", mb: []float64{5, -1}, want: ""},
		{name: "nothing moved", mb: []float64{0, 0}, want: ""},
		{name: "one idle", mb: []float64{10, 0.5}, want: "tor 1 5 %"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tors []TorInstSample
			for i, mb := range tc.mb {
				tors = append(tors, TorInstSample{Instance: i, MB: mb})
			}
			if got := unevenTors(tors); got != tc.want {
				t.Errorf("unevenTors(%v) = %q, want %q", tc.mb, got, tc.want)
			}
		})
	}
}
