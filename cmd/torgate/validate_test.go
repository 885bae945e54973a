package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validateArgs parses args as run's and validates them.
func validateArgs(t *testing.T, args ...string) (validated, error) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f runFlags
	f.register(fs)
	if err := parseRunFlags(fs, &f, args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return f.validate(false)
}

// TestValidationNamesFlagAndValue: every refusal names the flag (which is
// the config key) and the value (issue 22: "max-flows = -5" said
// "tunnel: negative limit").
func TestValidationNamesFlagAndValue(t *testing.T) {
	state := t.TempDir()
	base := []string{"--socks", "127.0.0.1:9050", "--state-dir", state}
	for _, c := range []struct {
		args []string
		want string
	}{
		{args: []string{"--max-flows", "-5"}, want: "--max-flows -5: must be >= 0"},
		{args: []string{"--max-flows-per-source", "-1"}, want: "--max-flows-per-source -1: must be >= 0"},
		{args: []string{"--max-flows", "100"}, want: "--max-flows-per-source 1024 (default) is above --max-flows 100"},
		{args: []string{"--admin", "0.0.0.0:9083"}, want: `--admin "0.0.0.0:9083": address must be loopback`},
		{args: []string{"--admin", "/nonexistent-dir/admin.sock"}, want: `--admin "/nonexistent-dir/admin.sock"`},
		{args: []string{"--socks-ports", "9050,53"}, want: `--socks-ports "9050,53": port 53`},
		{args: []string{"--socks-ports", "9050-9040"}, want: `--socks-ports "9050-9040": range 9050-9040 runs backwards`},
		{args: []string{"--control-port", "9050"}, want: "--control-port 9050: also one of --socks-ports"},
		{args: []string{"--control-port", "70000"}, want: "--control-port 70000: not a port"},
		{args: []string{"--onion", "80"}, want: `--onion "80": want PORT=ADDRESS:PORT`},
		{args: []string{"--onion", "80=10.152.152.11:80"}, want: "--onion needs a Tor control port"},
		{args: []string{"--dns-pool4", "10.152.152.0/24"}, want: "--dns-pool4 10.152.152.0/24 overlaps --addr 10.152.152.10/18"},
		{args: []string{"--dns-pool4", "10.192.0.0/30"}, want: "--dns-pool4 10.192.0.0/30: prefix length"},
		{args: []string{"--dns-pool6", "10.0.0.0/8"}, want: "--dns-pool6 10.0.0.0/8 is not an IPv6 prefix"},
		{args: []string{"--dns-pool4", "x"}, want: `--dns-pool4 "x": not a prefix`},
		{args: []string{"--tun", "a/b"}, want: `--tun "a/b": not an interface name`},
		{args: []string{"--tun", "a-name-far-too-long"}, want: `--tun "a-name-far-too-long": interface names have at most 15 bytes`},
		{args: []string{"--addr", "fd00::1/64"}, want: "--addr fd00::1/64: not an IPv4 address"},
		{args: []string{"--mtu", "100"}, want: "--mtu 100: must be 1280-65535"},
		{args: []string{"--tun-fd", "-3"}, want: "--tun-fd -3: must be >= 0"},
		{args: []string{"--log-level", "loud"}, want: `--log-level "loud"`},
		{args: []string{"--log-format", "xml"}, want: `--log-format "xml"`},
		{args: []string{"--isolation", "host"}, want: `--isolation "host"`},
		{args: []string{"--dns-mode", "auto"}, want: `--dns-mode "auto"`},
		{args: []string{"--socks", "nowhere"}, want: `--socks "nowhere"`},
		{args: []string{"--state-dir", "/proc/version"}, want: "--state-dir /proc/version: not a directory"},
		{args: []string{"--lan", "eth1", "--mtu", "9000"}, want: "--mtu does not go with --lan"},
		{args: []string{"--lan", "eth1", "--addr", "10.1.1.1/24"}, want: "--addr does not go with --lan"},
		{args: []string{"--lan", "eth1", "--lan", "eth1"}, want: "--lan eth1: given twice"},
		{args: []string{"--torrc", "/etc/tor/torrc"}, want: "--tor-path, --torrc and --tor-user configure the Tor torgate starts"},
	} {
		_, err := validateArgs(t, append(append([]string{}, base...), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v\nwant an error containing %q", c.args, err, c.want)
		}
	}
	if _, err := validateArgs(t, base...); err != nil {
		t.Errorf("a good configuration refused: %v", err)
	}
	// A TUN flag at its default (a config file that spells out every key)
	// changes nothing with --lan, and is no error.
	if _, err := validateArgs(t, append(append([]string{}, base...), "--lan", "eth1", "--mtu", "1500", "--tun-fd", "0")...); err != nil && strings.Contains(err.Error(), "does not go with --lan") {
		t.Errorf("defaults refused with --lan: %v", err)
	}
}

// TestValidationManagedTor: the managed Tor's flags are checked before
// Tor starts.
func TestValidationManagedTor(t *testing.T) {
	state := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{args: []string{"--tor-path", "/nonexistent/tor"}, want: `--tor-path "/nonexistent/tor"`},
		{args: []string{"--torrc", "/nonexistent/torrc"}, want: `--torrc "/nonexistent/torrc"`},
		{args: []string{"--tor-user", "no-such-user-tg"}, want: `--tor-user "no-such-user-tg": no such user`},
		{args: []string{"--onion", "80=10.152.152.11:80"}, want: "--onion needs --lan"},
	} {
		_, err := validateArgs(t, append([]string{"--tor-path", "/bin/true", "--state-dir", state}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v\nwant an error containing %q", c.args, err, c.want)
		}
	}
}

// TestValidationReportsEveryError: one run of "config check" lists every
// mistake, not just the first.
func TestValidationReportsEveryError(t *testing.T) {
	_, err := validateArgs(t, "--socks", "127.0.0.1:9050", "--state-dir", t.TempDir(),
		"--max-flows", "-5", "--admin", "0.0.0.0:1", "--mtu", "10")
	for _, want := range []string{"--max-flows -5", "--admin", "--mtu 10"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %q not reported", err, want)
		}
	}
}

// TestConfigKeyNamed: a bad value from the config file is named by its key.
func TestConfigKeyNamed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "torgate.toml")
	os.WriteFile(p, []byte("socks = \"127.0.0.1:9050\"\nmax-flows = -5\n"), 0o644)
	_, err := validateArgs(t, "--config", p, "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--max-flows -5: must be >= 0") {
		t.Fatalf("got %v", err)
	}
}

// TestRunValidatesBeforeActing: a refused configuration leaves the state
// directory as it found it (issue 22: "--admin 0.0.0.0:9083" was refused
// only after Tor had started and the state directory was written, and a
// negative limit only after the automap state was set up).
func TestRunValidatesBeforeActing(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{args: []string{"--admin", "0.0.0.0:9083"}, want: `--admin "0.0.0.0:9083"`},
		{args: []string{"--max-flows", "-5"}, want: "--max-flows -5: must be >= 0"},
	} {
		state := filepath.Join(t.TempDir(), "state")
		// --tun-fd of no open descriptor: nothing can be opened, so what
		// fails first shows which check came first.
		args := append([]string{"run", "--socks", "127.0.0.1:1", "--tun-fd", "1000", "--state-dir", state}, c.args...)
		var out, errw bytes.Buffer
		err := run(context.Background(), args, &out, &errw)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error containing %q", c.args, err, c.want)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("%v: the state directory was made before the configuration was refused (%v)", c.args, err)
		}
	}
}

// TestConfigCheck: "config check" prints the effective configuration as
// a config file that, read back, gives the same configuration; an
// invalid one is every error on stderr and exit status 1.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfgFile := filepath.Join(dir, "torgate.toml")
	os.WriteFile(cfgFile, []byte("socks = \"127.0.0.1:9050\"\nmax-flows = 5000\nisolation = \"destination\"\n"), 0o644)
	var out, errw bytes.Buffer
	err := run(context.Background(), []string{"config", "check", "--config", cfgFile, "--state-dir", state, "--mtu", "1400"}, &out, &errw)
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, errw.String())
	}
	for _, want := range []string{
		`socks = "127.0.0.1:9050"`, "max-flows = 5000", `isolation = "destination"`, "mtu = 1400",
		`state-dir = "` + state + `"`, "max-flows-per-source = 0", "log-destinations = false", "lan = []",
		"tor mode socks", `# torrc = "" (only for the Tor torgate starts)`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("config check made the state directory (%v)", err)
	}
	// Round trip: the output is a config file that says the same.
	again := filepath.Join(dir, "effective.toml")
	os.WriteFile(again, out.Bytes(), 0o644)
	var out2 bytes.Buffer
	if err := run(context.Background(), []string{"config", "check", "--config", again}, &out2, &errw); err != nil {
		t.Fatalf("config check of its own output: %v\n%s", err, errw.String())
	}
	if out2.String() != out.String() {
		t.Errorf("the effective configuration read back differs:\n%s\nvs\n%s", out.String(), out2.String())
	}

	out.Reset()
	errw.Reset()
	err = run(context.Background(), []string{"config", "check", "--socks", "127.0.0.1:9050", "--state-dir", state, "--max-flows", "-5", "--admin", "0.0.0.0:9083"}, &out, &errw)
	if exitCode(err) != 1 || out.Len() != 0 {
		t.Errorf("invalid: %v (exit %d), stdout %q; want exit 1 and nothing on stdout", err, exitCode(err), out.String())
	}
	if lines := strings.Count(errw.String(), "\n"); lines != 2 || !strings.Contains(errw.String(), "--max-flows -5") || !strings.Contains(errw.String(), "--admin") {
		t.Errorf("stderr %q: want one line per error", errw.String())
	}

	// Onion services come out as the file's [[onion]] tables.
	out.Reset()
	if err := run(context.Background(), []string{"config", "check", "--tor-control", "127.0.0.1:9051", "--state-dir", state}, &out, &errw); err != nil {
		t.Fatalf("%v: %s", err, errw.String())
	}
	if strings.Contains(out.String(), "[[onion]]") {
		t.Errorf("no onion configured, yet:\n%s", out.String())
	}
}

// TestOnionTablesPrinted: --onion prints as [[onion]] tables the file
// reads back.
func TestOnionTablesPrinted(t *testing.T) {
	var buf bytes.Buffer
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	if err := fs.Parse([]string{"--onion", "80=10.152.152.11:80", "--onion", "22=10.152.152.11:22"}); err != nil {
		t.Fatal(err)
	}
	printConfig(&buf, fs, &f, validated{mode: "managed"})
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, buf.Bytes(), 0o644)
	fs2 := flag.NewFlagSet("run", flag.ContinueOnError)
	var f2 runFlags
	f2.register(fs2)
	if err := applyConfigFile(fs2, p); err != nil {
		t.Fatalf("%v:\n%s", err, buf.String())
	}
	if got := strings.Join(f2.onions, " "); got != "80=10.152.152.11:80 22=10.152.152.11:22" {
		t.Errorf("onions read back %q:\n%s", got, buf.String())
	}
}
