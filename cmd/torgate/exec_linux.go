package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/torgate/torgate/internal/privs"
	"github.com/torgate/torgate/internal/torctl"
)

// cmdExec runs a program in a fresh network namespace whose only way out
// is torgate's TUN. What exec sets up is in its own files: the flags and
// their defaults (exec_flags_linux.go), Tor's and the router's state
// (exec_state_linux.go), the namespace and its TUN (exec_netns_linux.go),
// the command's user, environment and resolv.conf
// (exec_child_linux.go); which privileges each side keeps is in privs.go.
func cmdExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f runFlags
	o, err := parseExecFlags(args, stderr, &f)
	if err != nil {
		return err
	}
	// Everything is checked before anything is touched.
	if _, err := f.validate(true); err != nil {
		return err
	}
	if err := f.checkPrivileges(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("exec: needs root to create a network namespace and a TUN (try sudo)")
	}
	notice, release, err := execState(&f)
	if err != nil {
		return err
	}
	defer release()
	child, cleanup, err := execCommand(o, stdout, stderr)
	if err != nil {
		return err
	}
	defer cleanup()

	ns, err := newExecNetns(f.mtu)
	if err != nil {
		return err
	}
	defer ns.release()
	f.serviceAddrs = execServices
	a, err := startApp(ctx, &f, stderr, ns.dev)
	if err != nil {
		ns.dev.Close()
		return err
	}
	defer a.close()
	if notice != "" {
		a.log.Warn(notice)
	}
	a.router.Start()
	// Start the command once Tor can carry its traffic, so its first
	// connections do not meet a RST; give up after --wait with what is
	// known of why.
	if err := a.waitReady(ctx, o.wait); err != nil {
		return err
	}
	if err := ns.start(child); err != nil {
		return err
	}
	// The command runs: from now on exec only signals it and Tor (privs.go).
	if err := dropPrivileges(a.log, f.tor.keepPrivileges, privs.SetOf(privs.CapKill)|torctl.Keeps(a.router.TorSwitchesUser())); err != nil {
		child.Process.Kill()
		child.Wait()
		return err
	}

	return superviseCommand(ctx, a, child, o.argv[0])
}

// superviseCommand runs the router beside the started command until the
// command exits (its exit status is exec's), ctx is done (the command
// gets SIGTERM) or the router fails (the command is killed: it must not
// run on cut off and unaware).
func superviseCommand(ctx context.Context, a *app, child *exec.Cmd, name string) error {
	gctx, stopGroup := context.WithCancel(ctx)
	defer stopGroup()
	groupErr := make(chan error, 1)
	go func() { groupErr <- a.run(gctx) }()
	waitErr := make(chan error, 1)
	go func() { waitErr <- child.Wait() }()
	var err error
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		child.Process.Signal(syscall.SIGTERM)
		err = <-waitErr
	case gerr := <-groupErr:
		// torgate cannot forward any more: the command must not run on
		// cut off and unaware.
		child.Process.Kill()
		<-waitErr
		return fmt.Errorf("exec: %s killed: %w", name, gerr)
	}
	stopGroup()
	<-groupErr
	a.close()
	return exitStatus(err)
}

// exitStatus is exec's result for the command's: its exit code, or 128
// plus the signal that ended it, as a shell reports it.
func exitStatus(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())}
		}
		return exitError{code: ee.ExitCode()}
	}
	return err
}
