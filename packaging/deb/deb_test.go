package deb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/torgate/torgate/internal/nstest"
)

// requireTools skips the test outside the integration opt-in, and skips
// (under CI: fails) it if a command is missing.
func requireTools(tb testing.TB, cmds ...string) {
	tb.Helper()
	nstest.Integration(tb)
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			if nstest.CI() {
				tb.Fatalf("needs %s in PATH (.ci/run installs it)", c)
			}
			tb.Skipf("needs %s in PATH", c)
		}
	}
}

var (
	debOnce sync.Once
	debDir  string
	debErr  error
	debOut  []byte
)

// debs builds the packages of the test architectures once per test binary
// and returns the one for arch.
func debs(tb testing.TB, arch string) string {
	tb.Helper()
	debOnce.Do(func() {
		if debDir, debErr = os.MkdirTemp("", "torgate-deb"); debErr != nil {
			return
		}
		// amd64 (what the container test installs) and armhf (32-bit,
		// GOARM=7): the pair that differs most in what build maps.
		cmd := exec.Command("./build", "-o", debDir, "amd64", "armhf")
		debOut, debErr = cmd.CombinedOutput()
	})
	if debErr != nil {
		tb.Fatalf("packaging/deb/build: %v\n%s", debErr, debOut)
	}
	m, _ := filepath.Glob(filepath.Join(debDir, "torgate_*_"+arch+".deb"))
	if len(m) != 1 {
		tb.Fatalf("no single torgate_*_%s.deb in %s: %v", arch, debDir, m)
	}
	return m[0]
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

func output(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackage checks each package's control fields, its file list (paths,
// modes) and lintian, which must report nothing beyond the overrides
// packaging/deb/lintian-overrides explains.
func TestPackage(t *testing.T) {
	requireTools(t, "dpkg-deb", "lintian", "git")
	for _, tc := range []struct {
		arch    string
		elf     []byte // ELF header bytes 4-5 and 18: class, data, machine
		machine byte
	}{
		{arch: "amd64", elf: []byte{2, 1}, machine: 62},
		{arch: "armhf", elf: []byte{1, 1}, machine: 40},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			deb := debs(t, tc.arch)
			fields := map[string]string{}
			for _, f := range []string{"Package", "Architecture", "Depends", "Section", "Version", "Maintainer"} {
				fields[f] = strings.TrimSpace(output(t, "dpkg-deb", "-f", deb, f))
			}
			if fields["Package"] != "torgate" || fields["Architecture"] != tc.arch || fields["Depends"] != "tor" || fields["Section"] != "net" {
				t.Errorf("control fields %v", fields)
			}
			if !strings.Contains(filepath.Base(deb), "_"+fields["Version"]+"_") {
				t.Errorf("file name %s does not carry Version %s", deb, fields["Version"])
			}
			if c := output(t, "dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(c) != "/etc/torgate/torgate.toml" {
				t.Errorf("conffiles %q", c)
			}
			// The file list: the mode and path of each entry that matters.
			want := map[string]string{
				"./usr/sbin/torgate":                                 "-rwxr-xr-x",
				"./usr/lib/systemd/system/torgate.service":           "-rw-r--r--",
				"./usr/lib/systemd/system/torgate-lan-guard.service": "-rw-r--r--",
				"./etc/torgate/torgate.toml":                         "-rw-r--r--",
				"./var/lib/torgate/":                                 "drwx------",
				"./usr/share/doc/torgate/copyright":                  "-rw-r--r--",
				"./usr/share/doc/torgate/changelog.gz":               "-rw-r--r--",
				"./usr/share/man/man8/torgate.8.gz":                  "-rw-r--r--",
				"./usr/share/lintian/overrides/torgate":              "-rw-r--r--",
				"./":                                                 "drwxr-xr-x",
			}
			for _, line := range strings.Split(output(t, "dpkg-deb", "-c", deb), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					continue
				}
				path, mode := f[len(f)-1], f[0]
				if f[1] != "root/root" {
					t.Errorf("%s owned by %s, want root/root", path, f[1])
				}
				if w, ok := want[path]; ok {
					if mode != w {
						t.Errorf("%s: mode %s, want %s", path, mode, w)
					}
					delete(want, path)
				}
			}
			for p := range want {
				t.Errorf("%s missing from the package", p)
			}

			// The binary: the architecture's ELF, static (no interpreter),
			// naming the revision it was built from.
			dir := t.TempDir()
			output(t, "dpkg-deb", "-x", deb, dir)
			bin, err := os.ReadFile(filepath.Join(dir, "usr/sbin/torgate"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bin[4:6], tc.elf) || bin[18] != tc.machine {
				t.Errorf("binary ELF class/data %v machine %d, want %v %d", bin[4:6], bin[18], tc.elf, tc.machine)
			}
			if bytes.Contains(bin, []byte("/lib/ld-linux")) || bytes.Contains(bin, []byte("/lib64/ld-linux")) {
				t.Errorf("binary has a dynamic loader: built with cgo")
			}
			rev := strings.TrimSpace(output(t, "git", "rev-parse", "--short=7", "HEAD"))
			if !strings.Contains(fields["Version"], rev) && !regexp.MustCompile(`^\d`).MatchString(fields["Version"]) {
				t.Errorf("Version %s names neither a tag nor revision %s", fields["Version"], rev)
			}
			if tc.arch == runtime.GOARCH {
				v := output(t, filepath.Join(dir, "usr/sbin/torgate"), "version")
				if !strings.Contains(v, fields["Version"]) {
					t.Errorf("torgate version = %q, want %s", v, fields["Version"])
				}
			}
			// Units installed by the package call the packaged binary.
			for _, u := range []string{"torgate.service", "torgate-lan-guard.service"} {
				b, err := os.ReadFile(filepath.Join(dir, "usr/lib/systemd/system", u))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Contains(b, []byte("ExecStart=/usr/sbin/torgate ")) {
					t.Errorf("%s: no ExecStart=/usr/sbin/torgate", u)
				}
			}

			// lintian (as root it warns that it should not run as root).
			out, err := exec.Command("lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic", deb).CombinedOutput()
			var tags []string
			for _, l := range strings.Split(string(out), "\n") {
				if l != "" && !strings.HasPrefix(l, "running with root privileges") {
					tags = append(tags, l)
				}
			}
			if err != nil || len(tags) > 0 {
				t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
			}
		})
	}
}

// TestUnitsVerify runs systemd-analyze verify on the packaged units, with
// ExecStart= pointing at the packaged binary (verify checks that it
// exists); it must print nothing. The container test runs verify again
// where the package is installed.
func TestUnitsVerify(t *testing.T) {
	requireTools(t, "dpkg-deb", "systemd-analyze", "git", "lintian")
	root := t.TempDir()
	output(t, "dpkg-deb", "-x", debs(t, "amd64"), root)
	units := t.TempDir()
	var paths []string
	for _, u := range []string{"torgate.service", "torgate-lan-guard.service"} {
		b, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/sbin/torgate"), []byte(filepath.Join(root, "usr/sbin/torgate")))
		p := filepath.Join(units, u)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
