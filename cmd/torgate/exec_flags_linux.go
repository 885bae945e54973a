package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// execFlags are exec's own flags and its command.
type execFlags struct {
	user string        // --user: whom the command runs as
	wait time.Duration // --wait: how long to wait for Tor
	argv []string      // the command and its arguments
}

// parseExecFlags parses exec's command line: run's flags into f, exec's
// own into the result. An exec has no admin endpoint unless --admin is
// given: each exec is its own router, and must not fight "torgate run"
// (or another exec) for the default admin address.
func parseExecFlags(args []string, stderr io.Writer, f *runFlags) (execFlags, error) {
	fs := flag.NewFlagSet("torgate exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: torgate exec [flags] [--] CMD [ARGS...]")
		fs.PrintDefaults()
	}
	f.register(fs)
	var o execFlags
	fs.StringVar(&o.user, "user", "", "run CMD as this user (default: the sudo caller from SUDO_UID/SUDO_GID, else root)")
	fs.DurationVar(&o.wait, "wait", defaultExecWait, "how long to wait for Tor to bootstrap before giving up with a diagnosis (exit status 1)")
	if err := parseRunFlags(fs, f, args); err != nil {
		return o, err
	}
	o.argv = fs.Args()
	if len(o.argv) == 0 {
		fs.Usage()
		return o, errors.New("exec: no command given")
	}
	explicit := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { explicit[fl.Name] = true })
	if !explicit["admin"] {
		f.tor.admin = ""
	}
	return o, nil
}
