package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func runFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f runFlags
	f.register(fs)
	return fs
}

func values(fs *flag.FlagSet) map[string]string {
	m := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { m[f.Name] = f.Value.String() })
	return m
}

// TestExampleConfigMatchesFlags parses the shipped example and checks that
// it sets exactly what the equivalent command line sets.
func TestExampleConfigMatchesFlags(t *testing.T) {
	const path = "../../examples/torgate.toml"
	fromFile := runFlagSet()
	if err := applyConfigFile(fromFile, path); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		t.Fatal(err)
	}
	var args []string
	for k, v := range raw {
		vs, ok := v.([]any) // a repeatable flag: given once per element
		if !ok {
			vs = []any{v}
		}
		for _, v := range vs {
			s, err := tomlScalar(v)
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "--"+k+"="+s)
		}
	}
	fromArgs := runFlagSet()
	if err := fromArgs.Parse(args); err != nil {
		t.Fatal(err)
	}
	a, b := values(fromFile), values(fromArgs)
	for k := range a {
		if a[k] != b[k] {
			t.Errorf("flag %s: file gives %q, command line %q", k, a[k], b[k])
		}
	}
	if _, err := (&runFlags{socks: "x"}).config(); err != nil && !strings.Contains(err.Error(), "--") {
		t.Errorf("flag errors should name the flag: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"dns-mod = \"automap\"\n": `unknown field "dns-mod"`,
		"mtu = \"big\"\n":         `field "mtu"`,
		"mtu = [1]\n":             `field "mtu"`,
		"socks = \n":              `line 1`,
	}
	for body, want := range cases {
		p := filepath.Join(dir, "c.toml")
		os.WriteFile(p, []byte(body), 0o644)
		err := applyConfigFile(runFlagSet(), p)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %s", body, err, want)
		}
	}
}

func TestCommandLineOverridesConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("mtu = 9000\nisolation = \"none\"\n"), 0o644)
	fs := runFlagSet()
	if err := fs.Parse([]string{"--mtu", "1400"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, p); err != nil {
		t.Fatal(err)
	}
	v := values(fs)
	if v["mtu"] != "1400" || v["isolation"] != "none" {
		t.Fatalf("mtu %s isolation %s, want 1400 (flag) and none (file)", v["mtu"], v["isolation"])
	}
}

// TestConfigArrays: a repeatable flag takes an array in the file (or a
// single string); other flags refuse arrays.
func TestConfigArrays(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	for body, want := range map[string]string{
		"lan = [\"eth1\", \"eth2\"]\n": "eth1,eth2",
		"lan = \"eth1\"\n":             "eth1",
	} {
		os.WriteFile(p, []byte(body), 0o644)
		fs := runFlagSet()
		if err := applyConfigFile(fs, p); err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		if got := fs.Lookup("lan").Value.String(); got != want {
			t.Errorf("%q: lan = %q, want %q", body, got, want)
		}
	}
	os.WriteFile(p, []byte("lan = [\"eth1\", 3]\n"), 0o644)
	if err := applyConfigFile(runFlagSet(), p); err != nil {
		t.Fatalf("a number is a valid scalar for a string flag: %v", err)
	}
	os.WriteFile(p, []byte("socks = [\"a\"]\n"), 0o644)
	if err := applyConfigFile(runFlagSet(), p); err == nil || !strings.Contains(err.Error(), `field "socks"`) {
		t.Fatalf("array for a plain flag: %v", err)
	}
}

func TestLANFlag(t *testing.T) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := fs.Parse([]string{"--lan", "eth1", "--lan", "eth2", "--socks", "127.0.0.1:9050"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.LAN) != 2 || c.LAN[0] != "eth1" || c.TUNName != "" || c.Addr4.IsValid() {
		t.Fatalf("config %+v", c)
	}
	f.tunFD = 3
	if _, err := f.config(); err == nil || !strings.Contains(err.Error(), "--lan and --tun-fd") {
		t.Fatalf("--lan with --tun-fd: %v", err)
	}
}
