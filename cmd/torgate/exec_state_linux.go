package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// execState sets up what an exec keeps on disk. With a managed Tor (no
// --socks, no --tor-control) that Tor is exec's own, never a running
// torgate's, but with the state of the execs before it (guards,
// consensus): see execTorDir. Without --state-dir the router's own state
// (the automap table) stays per run, in a temporary directory. notice,
// if not empty, is for the log; release undoes it all once the router
// and its Tor have stopped.
func execState(f *runFlags) (notice string, release func(), err error) {
	var undo []func()
	release = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if f.socks == "" && f.tor.control == "" {
		base := f.stateDir
		if base == "" {
			base = defaultStateDir
		}
		dir, note, releaseTor, err := execTorDir(base)
		if err != nil {
			return "", nil, err
		}
		undo = append(undo, releaseTor)
		f.tor.dataDir, notice = dir, note
	}
	if f.stateDir == "" && f.socks == "" && f.tor.control == "" {
		dir, err := os.MkdirTemp("", "torgate-exec-")
		if err != nil {
			release()
			return "", nil, fmt.Errorf("exec: state dir: %w", err)
		}
		undo = append(undo, func() { os.RemoveAll(dir) })
		f.stateDir = dir
	}
	return notice, release, nil
}

// execTorFiles are what a Tor DataDirectory keeps worth sharing: the
// state file (entry guards) and the directory caches (a bootstrap with
// them skips the consensus download).
var execTorFiles = []string{"state", "cached-certs", "cached-microdesc-consensus", "cached-microdescs", "cached-microdescs.new"}

// execTorDir returns the managed Tor's DataDirectory for one exec, and
// release, to call once that Tor has stopped.
//
// Every exec's Tor uses one persistent DataDirectory, BASE/exec-tor, so
// that it keeps its entry guards (Tor's guard design assumes they
// persist; new guards at every run would expose the user to many more
// relays) and its consensus cache (a bootstrap from scratch on the real
// network takes tens of seconds). An exclusive lock (flock on
// BASE/exec-tor.lock) makes one exec at a time its owner.
//
// A second exec running at the same time gets a private temporary
// DataDirectory seeded with a copy of the persistent state, and a notice;
// what its Tor learns is discarded. It does not attach to the first
// exec's Tor instead: that Tor stops when the first exec ends (it is owned
// by it), which would cut the second off mid-run, and two Tors are cheap
// for a client. Isolation does not depend on the choice: each exec is its
// own router, whose isolation secret is drawn at random per run, so two
// runs never share SOCKS credentials, let alone circuits (and here not
// even a Tor process).
func execTorDir(base string) (dir, notice string, release func(), err error) {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", "", nil, fmt.Errorf("exec: state dir: %w", err)
	}
	persistent := filepath.Join(base, "exec-tor")
	lock, err := os.OpenFile(persistent+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", "", nil, fmt.Errorf("exec: tor state lock: %w", err)
	}
	err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return persistent, "", func() { lock.Close() }, nil
	}
	lock.Close()
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return "", "", nil, fmt.Errorf("exec: tor state lock: %w", err)
	}
	tmp, err := os.MkdirTemp("", "torgate-exec-tor-")
	if err != nil {
		return "", "", nil, fmt.Errorf("exec: tor data directory: %w", err)
	}
	dir = filepath.Join(tmp, "tor")
	if err := os.Mkdir(dir, 0o700); err != nil {
		os.RemoveAll(tmp)
		return "", "", nil, fmt.Errorf("exec: tor data directory: %w", err)
	}
	// Tor replaces these files by rename, so each read is one version.
	for _, name := range execTorFiles {
		if b, err := os.ReadFile(filepath.Join(persistent, name)); err == nil {
			os.WriteFile(filepath.Join(dir, name), b, 0o600)
		}
	}
	notice = "another torgate exec holds the persistent tor state (" + persistent + "); this run's tor uses a private copy of it, discarded at exit"
	return dir, notice, func() { os.RemoveAll(tmp) }, nil
}
