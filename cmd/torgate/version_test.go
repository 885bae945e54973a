package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "GOARCH", Value: "mips"},
		{Key: "GOOS", Value: "linux"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "7c6ca5c50ec60fbf4206c146a1dfbc7e4ec4cb63"},
		{Key: "vcs.time", Value: "2026-12-02T05:10:27Z"},
		{Key: "vcs.modified", Value: "false"},
	}
	dirty := append(vcs[:len(vcs)-1:len(vcs)-1], debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, tt := range []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string
	}{
		{
			name: "go install at a tag",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
				Settings: []debug.BuildSetting{{Key: "GOARCH", Value: "arm64"}, {Key: "GOOS", Value: "linux"}}},
			want: "v1.2.3 (go1.26.8 linux/arm64)",
		},
		{
			name: "git checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202051027-7c6ca5c50ec6"}, Settings: vcs},
			want: "v0.0.0-20261202051027-7c6ca5c50ec6 (revision 7c6ca5c50ec6, committed 2026-12-02T05:10:27Z, go1.26.8 linux/mips)",
		},
		{
			name: "dirty checkout, no module version",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: dirty},
			want: "devel (revision 7c6ca5c50ec6-dirty, committed 2026-12-02T05:10:27Z, go1.26.8 linux/mips)",
		},
		{
			name: "no VCS, override",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
				Settings: []debug.BuildSetting{{Key: "GOARCH", Value: "arm"}, {Key: "GOARM", Value: "7"}, {Key: "GOOS", Value: "linux"}}},
			override: "v1.2.3-openwrt1",
			want:     "v1.2.3-openwrt1 (go1.26.8 linux/armv7)",
		},
		{
			name:     "override wins over the module version, revision kept",
			bi:       &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202051027-7c6ca5c50ec6"}, Settings: vcs},
			override: "v1.2.3",
			want:     "v1.2.3 (revision 7c6ca5c50ec6, committed 2026-12-02T05:10:27Z, go1.26.8 linux/mips)",
		},
		{
			name: "plain build outside VCS",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: "devel (go1.26.8)",
		},
		{
			name: "no build info",
			want: "devel (no build information)",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatVersion(tt.bi, tt.override); got != tt.want {
				t.Errorf("formatVersion = %q\nwant            %q", got, tt.want)
			}
		})
	}
}

// TestVersionCommand checks the real binary's own build info reaches the
// command (go test builds with a module version of "(devel)" or empty).
func TestVersionCommand(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"version"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "torgate ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("torgate version printed %q", out.String())
	}
}
