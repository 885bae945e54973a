package main

import (
	"runtime/debug"
	"strings"
)

// versionOverride is set at link time by a release build that knows better
// than the build info, for example a packager building from a tarball
// (no VCS) or one that names its own release:
//
//	go build -trimpath -buildvcs=true -ldflags "-s -w -X main.versionOverride=v1.2.3" ./cmd/torgate
//
// Empty means: use what runtime/debug.ReadBuildInfo reports.
var versionOverride string

// version is the one-line answer of "torgate version".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return formatVersion(bi, versionOverride)
}

// formatVersion says which code a binary runs, from the best source there
// is: the -X override, else the module version ("go install
// ...@v1.2.3" gives v1.2.3; since Go 1.24 a build in a git checkout gives
// a pseudo-version), else "devel". In parentheses follow the VCS revision
// with -dirty for uncommitted changes and the commit time (stamped when
// the build ran in a git checkout with -buildvcs not false; a git
// worktree is not detected by Go 1.26), then the Go version and the
// target platform, which matters on router images built for many
// architectures.
func formatVersion(bi *debug.BuildInfo, override string) string {
	v := override
	if v == "" && bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	if v == "" {
		v = "devel"
	}
	if bi == nil {
		return v + " (no build information)"
	}
	set := make(map[string]string, len(bi.Settings))
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	var details []string
	if rev := set["vcs.revision"]; rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if set["vcs.modified"] == "true" {
			rev += "-dirty"
		}
		details = append(details, "revision "+rev)
	}
	if t := set["vcs.time"]; t != "" {
		details = append(details, "committed "+t)
	}
	platform := set["GOOS"] + "/" + set["GOARCH"]
	if arm := set["GOARM"]; arm != "" {
		platform += "v" + arm
	}
	if platform == "/" {
		platform = ""
	}
	details = append(details, strings.TrimSpace(bi.GoVersion+" "+platform))
	return v + " (" + strings.Join(details, ", ") + ")"
}
