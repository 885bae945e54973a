package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestHelpExitsZero: help that was asked for, on every command, is
// printed to stdout and is no error (exit status 0); help shown because
// of a usage error goes to stderr with status 2 (issue 22).
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"run", "-h"}, {"run", "--help"}, {"run", "--socks", "127.0.0.1:1", "-h"},
		{"check", "-h"}, {"newnym", "-h"}, {"lan", "-h"}, {"lan", "help"}, {"exec", "-h"},
	} {
		var out, errw bytes.Buffer
		err := run(context.Background(), args, &out, &errw)
		if err != nil {
			t.Errorf("%v: %v (exit %d)", args, err, exitCode(err))
		}
		if out.Len() == 0 || errw.Len() != 0 {
			t.Errorf("%v: %d bytes to stdout, %q to stderr; want the help on stdout", args, out.Len(), errw.String())
		}
	}
	var out, errw bytes.Buffer
	if err := run(context.Background(), nil, &out, &errw); !errors.Is(err, flag.ErrHelp) || exitCode(err) != 2 || errw.Len() == 0 {
		t.Errorf("no command: %v, exit %d, %d bytes to stderr; want usage on stderr, exit 2", err, exitCode(err), errw.Len())
	}
}

// TestVersionFlag: --version is version.
func TestVersionFlag(t *testing.T) {
	for _, a := range []string{"version", "--version"} {
		var out, errw bytes.Buffer
		if err := run(context.Background(), []string{a}, &out, &errw); err != nil || !strings.HasPrefix(out.String(), "torgate ") {
			t.Errorf("%s: %v, %q", a, err, out.String())
		}
	}
}

// TestStrayArgumentRefused: a word that is not a flag stops run and
// check before they act (issue 22: "run --lan eth1 extra-arg" started,
// and the flags after the word were silently dropped).
func TestStrayArgumentRefused(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--socks", "127.0.0.1:1", "extra-arg", "--torrc", "/etc/tor/torrc"},
		{"check", "extra-arg"},
	} {
		var out, errw bytes.Buffer
		err := run(context.Background(), args, &out, &errw)
		if err == nil || !strings.Contains(err.Error(), `unexpected argument "extra-arg"`) {
			t.Errorf("%v: %v, want the stray argument named", args, err)
		}
	}
}

// TestExecHelpIsTheCommands: after exec's command, -h is the command's.
func TestExecHelpIsTheCommands(t *testing.T) {
	if helpRequested("exec", []string{"curl", "-h"}) || helpRequested("run", []string{"--", "-h"}) {
		t.Error("an -h that is not torgate's taken as a help request")
	}
	if !helpRequested("exec", []string{"--user", "-h"}) && !helpRequested("exec", []string{"-h", "curl"}) {
		t.Error("exec -h not seen")
	}
}
