// Command torgate is a userspace Tor router: workstations' packets arrive
// on a TUN device, every TCP flow leaves through Tor with per-source stream
// isolation, DNS is answered through Tor, and everything else is dropped.
//
// Usage:
//
//	torgate run [flags]                         # starts and manages its own Tor
//	torgate run --tor-control 127.0.0.1:9051    # uses a running Tor
//	torgate run --socks 127.0.0.1:9050          # any SOCKS5 proxy, no control port
//	torgate config check --config /etc/torgate/torgate.toml
//	torgate newnym [SOURCE]
//	torgate onion list
//
// Run "torgate run -h" for the flags. Logs go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

func main() {
	setGCPercent(os.Getenv("GOGC"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if !errors.Is(err, flag.ErrHelp) && !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "torgate:", err)
		}
		os.Exit(exitCode(err))
	}
}

// defaultGCPercent is torgate's GOGC unless the environment sets one.
// The router's live heap is small and mostly short-lived (endpoints in
// TIME_WAIT, pools): with Go's default of 100 the heap grows to twice it
// between collections. Measured 2026-12-02 (bench/README.md, release
// build, 16 closed-loop workers, ~1,800 conn/s, medians of 4): peak RSS
// 28.9 MiB at 25, 33.0 at 50, 38.2 at 100; router CPU per connection
// 452 / 421 / 437 µs there, and up to 17 % more at 25 than at 100 in
// other sittings. A soft limit instead (GOMEMLIMIT=16MiB) made the
// collector run constantly. Operators with memory to spare can set
// GOGC=100.
const defaultGCPercent = 25

// setGCPercent applies defaultGCPercent when env (GOGC) is empty; an
// operator's GOGC (or GOMEMLIMIT alongside it) is the runtime's to read.
func setGCPercent(env string) {
	if env == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// exitError carries a specific exit status (for example a child's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `usage: torgate <command> [flags]

commands:
  run      run the router on a TUN device
  check    self-test from a workstation: route, DNS, a fetch through Tor, no leaks
  exec     run one command in a fresh network namespace whose only way out is Tor
  newnym   new identity for one workstation (SOURCE) or all, through the admin endpoint
  lan      remove (lan down IFACE) or pre-install (lan guard IFACE...) a LAN's guard rules
  onion    list the .onion addresses of the onion services hosted on workstations
  config   check a configuration without starting anything (config check [run's flags])
  version  print the version (also --version)

"torgate <command> -h" lists a command's flags.
`

// run is main without the process: a test can drive it. Help that was
// asked for ("torgate run -h", "torgate --help") goes to stdout and is no
// error; help shown for a usage error goes to stderr with exit status 2.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	if len(args) > 1 && helpRequested(args[0], args[1:]) {
		if err := dispatch(ctx, args, stdout, stdout); !errors.Is(err, flag.ErrHelp) {
			return err
		}
		return nil
	}
	return dispatch(ctx, args, stdout, stderr)
}

// helpRequested reports whether a command's arguments ask for its help:
// -h, -help or --help among its flags, that is before "--" (and, for
// exec, before the command it runs).
func helpRequested(cmd string, args []string) bool {
	for _, a := range args {
		switch {
		case a == "--":
			return false
		case a == "-h" || a == "-help" || a == "--help" || ((cmd == "lan" || cmd == "onion" || cmd == "config") && a == "help"):
			return true
		case cmd == "exec" && !strings.HasPrefix(a, "-"):
			return false // exec's command (or a flag's value): its own -h is the command's
		}
	}
	return false
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "exec":
		return cmdExec(ctx, args[1:], stdout, stderr)
	case "__exec-child":
		// Internal: the re-executed child of "torgate exec".
		if os.Getenv(childEnv) != "1" {
			return errors.New("__exec-child is internal to torgate exec")
		}
		return execChild(args[1:])
	case "check":
		return cmdCheck(ctx, args[1:], stdout, stderr)
	case "newnym":
		return cmdNewnym(ctx, args[1:], stdout, stderr)
	case "lan":
		return cmdLAN(args[1:], stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "onion":
		return cmdOnion(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "torgate", version())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newLogger(w io.Writer, level slog.Level, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q (want text or json)", format)
}
