package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/torgate/torgate/internal/onion"
)

const onionUsage = `usage: torgate onion list [--state-dir DIR]

Prints the .onion address of every onion service whose key is in the
state directory (one per workstation address declared with --onion or
[[onion]]), and the workstation address it leads to. It reads the keys
only: torgate need not run.

`

// cmdOnion is "torgate onion list".
func cmdOnion(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprint(stderr, onionUsage)
		if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return fmt.Errorf("onion: unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("torgate onion list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, onionUsage)
		fs.PrintDefaults()
	}
	stateDir := fs.String("state-dir", defaultStateDir, "torgate's state directory")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("onion list: unexpected argument %q", fs.Arg(0))
	}
	stored, err := onion.List(*stateDir)
	if err != nil {
		return fmt.Errorf("onion list: %w", err)
	}
	if len(stored) == 0 {
		return errors.New("onion list: no onion service keys in " + *stateDir + " (declare one with --onion PORT=ADDRESS:PORT and start torgate)")
	}
	for _, s := range stored {
		fmt.Fprintf(stdout, "%s\t%s\n", s.Address, s.Target)
	}
	return nil
}
