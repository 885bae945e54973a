package torctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cretz/bine/process"
)

// Managed Tor timing.
const (
	// stopGrace is how long a managed tor has to exit after SIGTERM before
	// it is killed. A client tor exits at once on SIGTERM.
	stopGrace = 10 * time.Second
	// socketPoll is how often the control socket is tried while tor
	// starts; it appears within about 100 ms of exec.
	socketPoll = 50 * time.Millisecond
	// verifyTimeout bounds tor --verify-config, which only parses.
	verifyTimeout = time.Minute
)

// proc is a started tor process.
type proc interface {
	// Wait waits for the process to exit.
	Wait() error
	// Pid is the process ID.
	Pid() int
}

// findTor locates the tor binary: path if given, else $PATH, then the
// directories Debian and others install it in.
func findTor(path string) (string, error) {
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrTorNotFound, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("tor"); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, "tor")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrTorNotFound
}

// torrcPath is the generated torrc; defaultsPath an empty defaults file,
// so that a system /etc/tor/torrc-defaults does not leak in.
func (t *Tor) torrcPath() string    { return filepath.Join(t.cfg.DataDir, "torrc") }
func (t *Tor) defaultsPath() string { return filepath.Join(t.cfg.DataDir, "torrc-defaults") }

// torrc returns the generated torrc: the operator's file and lines.
// torctl's own settings go on the command line, which overrides them.
func (t *Tor) torrc() string {
	var b strings.Builder
	b.WriteString("# Written by torgate at every start; do not edit.\n")
	b.WriteString("# Put your own lines (bridges, pluggable transports) in the file given\n")
	b.WriteString("# to torgate with --torrc. SocksPort, ControlSocket, DataDirectory and\n")
	b.WriteString("# CookieAuthentication are torgate's and set on tor's command line.\n")
	if t.cfg.TorrcFile != "" {
		fmt.Fprintf(&b, "%%include %s\n", t.cfg.TorrcFile)
	}
	for _, l := range t.cfg.TorrcLines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// args returns tor's command line. Options given on the command line
// replace every line of the same option in the torrc.
func (t *Tor) args() []string {
	sock := t.socks.Load()
	return []string{
		"-f", t.torrcPath(),
		"--defaults-torrc", t.defaultsPath(),
		"--DataDirectory", t.cfg.DataDir,
		// IsolateSOCKSAuth keeps each source's credentials on its own
		// circuits (also Tor's default; stated so that a torrc cannot
		// drop it), KeepAliveIsolateSOCKSAuth keeps a source's circuit
		// alive while it has streams, ExtendedErrors gives onion-service
		// reply codes.
		"--SocksPort", "unix:" + sock.address + " IsolateSOCKSAuth KeepAliveIsolateSOCKSAuth ExtendedErrors",
		"--ControlSocket", t.control.address,
		"--CookieAuthentication", "1",
		// A safety net behind TAKEOWNERSHIP for the moments before it:
		// tor exits when this process is gone.
		"--__OwningControllerProcess", strconv.Itoa(os.Getpid()),
		"--Log", "notice stdout",
		"--RunAsDaemon", "0",
	}
}

// prepareManaged creates the data directory, writes the torrc and checks
// the configuration with tor --verify-config.
func (t *Tor) prepareManaged(ctx context.Context) ([]string, error) {
	if err := os.MkdirAll(t.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("tor data directory: %w", err)
	}
	// Tor refuses a DataDirectory others can read.
	if err := os.Chmod(t.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("tor data directory: %w", err)
	}
	if err := os.WriteFile(t.torrcPath(), []byte(t.torrc()), 0o600); err != nil {
		return nil, fmt.Errorf("write torrc: %w", err)
	}
	if err := os.WriteFile(t.defaultsPath(), nil, 0o600); err != nil {
		return nil, fmt.Errorf("write torrc: %w", err)
	}
	args := t.args()
	if t.cfg.start != nil {
		return args, nil
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, t.torPath, append([]string{"--verify-config"}, args...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w (%s --verify-config: %v):\n%s", ErrBadTorrc, t.torPath, err, problemLines(string(out)))
	}
	return args, nil
}

// problemLines keeps tor's [warn] and [err] lines, or the whole output
// when there are none.
func problemLines(out string) string {
	var keep []string
	for l := range strings.Lines(out) {
		if strings.Contains(l, "[warn]") || strings.Contains(l, "[err]") {
			keep = append(keep, strings.TrimRight(l, "\n"))
		}
	}
	if len(keep) == 0 {
		return strings.TrimSpace(out)
	}
	return strings.Join(keep, "\n")
}

// startTor starts tor through bine's process package. Cancelling ctx
// sends SIGTERM, then SIGKILL after stopGrace.
func startTor(ctx context.Context, path string, args []string, out io.Writer) (proc, error) {
	var cmd *exec.Cmd
	creator := process.CmdCreatorFunc(func(ctx context.Context, args ...string) (*exec.Cmd, error) {
		cmd = exec.CommandContext(ctx, path, args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = stopGrace
		cmd.SysProcAttr = sysProcAttr()
		return cmd, nil
	})
	p, err := creator.New(ctx, args...)
	if err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return exeProc{p, cmd}, nil
}

type exeProc struct {
	process.Process
	cmd *exec.Cmd
}

func (p exeProc) Pid() int { return p.cmd.Process.Pid }

// superviseLoop runs tor until ctx is done, restarting it with backoff.
func (t *Tor) superviseLoop(ctx context.Context, args []string) {
	bo := backoff{base: t.cfg.RestartBackoff, max: t.cfg.MaxRestartBackoff, stable: t.cfg.StableAfter}
	tlog := newTorLog(t.log.With("component", "tor"))
	t.tlog.Store(tlog)
	for {
		began := time.Now()
		err := t.runOnce(ctx, args, tlog)
		if ctx.Err() != nil {
			return
		}
		wait := bo.next(time.Since(began))
		t.log.Warn("tor exited; restarting", "err", err, "uptime", time.Since(began).Round(time.Millisecond), "restart_in", wait, "last_log", tlog.tail())
		if !sleep(ctx, wait) {
			return
		}
	}
}

// runOnce starts tor, serves its control connection, and returns once the
// process has exited.
func (t *Tor) runOnce(ctx context.Context, args []string, out io.Writer) error {
	start := t.cfg.start
	if start == nil {
		start = startTor
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	p, err := start(pctx, t.torPath, args, out)
	if err != nil {
		return fmt.Errorf("start tor: %w", err)
	}
	t.pid.Store(int64(p.Pid()))
	defer t.pid.Store(0)
	t.log.Info("tor started", "pid", p.Pid(), "data_dir", t.cfg.DataDir)
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()

	c, err := t.connectManaged(pctx, exited)
	if err != nil {
		if ee := (*earlyExit)(nil); errors.As(err, &ee) {
			return err
		}
		stop()
		return errors.Join(err, exitErr(<-exited))
	}
	served := make(chan error, 1)
	go func() { served <- t.serve(pctx, c) }()
	select {
	case werr := <-exited:
		// Fail closed at once; serve notices the closed socket and
		// calls OnDown.
		t.update(func(st *Status) { st.Connected = false })
		stop()
		<-served
		return exitErr(werr)
	case err := <-served:
		// The control connection is gone; with TAKEOWNERSHIP tor exits by
		// itself, and SIGTERM makes sure.
		stop()
		return errors.Join(exitErr(<-exited), err)
	}
}

// exitErr describes how tor exited.
func exitErr(err error) error {
	if err == nil {
		return errors.New("tor exited with status 0")
	}
	return fmt.Errorf("tor exited: %w", err)
}

// connectManaged waits for the control socket of the tor just started and
// opens it.
func (t *Tor) connectManaged(ctx context.Context, exited <-chan error) (*ctlConn, error) {
	deadline := time.NewTimer(t.cfg.CommandTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(socketPoll)
	defer tick.Stop()
	for {
		c, err := t.open(ctx)
		if err == nil {
			return c, nil
		}
		select {
		case werr := <-exited:
			return nil, &earlyExit{exitErr(werr), err}
		case <-deadline.C:
			return nil, fmt.Errorf("tor control socket: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// earlyExit: tor exited before its control socket was usable.
type earlyExit struct{ exit, dial error }

func (e *earlyExit) Error() string {
	return fmt.Sprintf("%v during startup; last control error: %v", e.exit, e.dial)
}
