package torctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cretz/bine/process"

	"github.com/torgate/torgate/internal/reach"
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

// FindTor is the tor binary a managed Tor would run for path (the
// --tor-path flag, "" for the default search), or ErrTorNotFound.
func FindTor(path string) (string, error) { return findTor(path) }

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

// runSuffix names the directory beside DataDir that torgate and tor
// share: the sockets, the cookie and the generated torrc. It is not inside
// DataDir because DataDir must be 0700 and owned by the tor user, and
// torgate, after dropping CAP_DAC_OVERRIDE, could not reach into it.
const runSuffix = "-run"

// torrcPath is the generated torrc; defaultsPath an empty defaults file,
// so that a system /etc/tor/torrc-defaults does not leak in.
func (t *Tor) torrcPath() string    { return filepath.Join(t.runDir, "torrc") }
func (t *Tor) defaultsPath() string { return filepath.Join(t.runDir, "torrc-defaults") }

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
	// IsolateSOCKSAuth keeps each source's credentials on its own circuits
	// (also Tor's default; stated so that a torrc cannot drop it),
	// KeepAliveIsolateSOCKSAuth keeps a source's circuit alive while it
	// has streams, ExtendedErrors gives onion-service reply codes.
	socksFlags := " IsolateSOCKSAuth KeepAliveIsolateSOCKSAuth ExtendedErrors"
	ctlFlags := ""
	groupRead := "0"
	if t.runAs != nil {
		// tor runs as another user: torgate reaches the sockets and the
		// cookie through their group (see prepareDirs), not as root.
		socksFlags += " GroupWritable"
		ctlFlags = " GroupWritable"
		groupRead = "1"
	}
	return []string{
		"-f", t.torrcPath(),
		"--defaults-torrc", t.defaultsPath(),
		"--DataDirectory", t.cfg.DataDir,
		"--SocksPort", "unix:" + sock.Address + socksFlags,
		"--ControlSocket", "unix:" + t.control.Address + ctlFlags,
		"--CookieAuthentication", "1",
		"--CookieAuthFile", filepath.Join(t.runDir, "control.authcookie"),
		"--CookieAuthFileGroupReadable", groupRead,
		// A safety net behind TAKEOWNERSHIP for the moments before it:
		// tor exits when this process is gone. tor polls kill(pid, 0) and
		// counts only ESRCH as gone, so the EPERM it gets as another user
		// reads as alive (tor src/lib/evloop/procmon.c).
		"--__OwningControllerProcess", strconv.Itoa(os.Getpid()),
		"--Log", "notice stdout",
		"--RunAsDaemon", "0",
	}
}

// runAs is the user the managed tor runs as when it is not torgate's own.
type runAs struct {
	name     string
	uid, gid int
}

// lookupRunAs resolves Config.User. It returns nil when that is torgate's
// own user: nothing changes.
func lookupRunAs(name string) (*runAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("torctl: User: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("torctl: User %q: uid %q or gid %q is not a number", name, u.Uid, u.Gid)
	}
	if uid == os.Geteuid() {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("torctl: User %q: starting tor as another user needs root, and torgate runs as uid %d", name, os.Geteuid())
	}
	return &runAs{name: name, uid: uid, gid: gid}, nil
}

// owner returns the uid and gid tor runs as.
func (t *Tor) owner() (uid, gid int) {
	if t.runAs != nil {
		return t.runAs.uid, t.runAs.gid
	}
	return os.Geteuid(), os.Getegid()
}

// prepareDirs creates DataDir and the run directory beside it, owned and
// moded as tor checks them when it runs as User:
//
//   - DataDir: 0700, owned by User (tor refuses anything else). One left
//     by an earlier version, where tor ran as root, is handed over
//     (chown -R), so guards and the consensus cache survive the upgrade.
//   - DataDir+"-run": owned by User, group torgate's (root's, 0), mode
//     2750. tor creates its sockets and cookie there; the setgid bit gives
//     them torgate's group, and GroupWritable / CookieAuthFileGroupReadable
//     make them 0660 / 0640, so torgate reaches them as a group member and
//     needs no CAP_DAC_OVERRIDE. tor accepts a socket directory whose group
//     is its own or 0 (measured with tor 0.4.9.11, 2026-12-02).
//   - Every directory above must be searchable by User. The parent (the
//     state directory, which torgate creates 0700) gets o+x if torgate
//     owns it: others may then pass through but not list it.
func (t *Tor) prepareDirs() error {
	data := t.cfg.DataDir
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("tor data directory: %w", err)
	}
	// Tor refuses a DataDirectory others can read.
	if err := os.Chmod(data, 0o700); err != nil {
		return fmt.Errorf("tor data directory: %w", err)
	}
	if err := os.MkdirAll(t.runDir, 0o700); err != nil {
		return fmt.Errorf("tor run directory: %w", err)
	}
	// The layout before the run directory kept these in DataDir.
	for _, name := range []string{"torrc", "torrc-defaults", "control.sock", "socks.sock"} {
		os.Remove(filepath.Join(data, name))
	}
	uid, gid := t.owner()
	if os.Geteuid() == 0 {
		n, err := chownTree(data, uid, gid)
		if err != nil {
			return fmt.Errorf("tor data directory: give it to uid %d: %w", uid, err)
		}
		if n > 0 {
			t.log.Info("tor data directory handed to tor's user", "dir", data, "uid", uid, "files", n)
		}
	}
	if t.runAs == nil {
		if os.Geteuid() == 0 {
			if err := os.Lchown(t.runDir, uid, gid); err != nil {
				return fmt.Errorf("tor run directory: %w", err)
			}
		}
		if err := os.Chmod(t.runDir, 0o700); err != nil {
			return fmt.Errorf("tor run directory: %w", err)
		}
		return nil
	}
	if err := t.reachable(filepath.Dir(data)); err != nil {
		return err
	}
	if err := os.Lchown(t.runDir, uid, os.Getegid()); err != nil {
		return fmt.Errorf("tor run directory: %w", err)
	}
	if err := os.Chmod(t.runDir, 0o750|os.ModeSetgid); err != nil {
		return fmt.Errorf("tor run directory: %w", err)
	}
	return nil
}

// reachable checks that tor's user can search dir and every directory
// above it (internal/reach); dir itself, if torgate owns it, is made
// searchable (o+x).
func (t *Tor) reachable(dir string) error {
	uid, gid := t.owner()
	made, err := reach.Ensure(dir, reach.Account{Name: t.runAs.name, UID: uid, GID: gid})
	if made {
		t.log.Info("state directory made searchable for tor's user (o+x, not listable)", "dir", dir)
	}
	var re *reach.Error
	if errors.As(err, &re) {
		return fmt.Errorf("tor data directory: %w, or choose another state directory", err)
	}
	if err != nil {
		return fmt.Errorf("tor data directory: %w", err)
	}
	return nil
}

// chownTree gives root and everything below it to uid:gid, counting the
// entries it changed.
func chownTree(root string, uid, gid int) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fu, fg := reach.Owner(fi); fu == uid && fg == gid {
			return nil
		}
		n++
		return os.Lchown(p, uid, gid)
	})
	return n, err
}

// writeFile writes a file and sets its mode, also when it existed.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// prepareManaged creates the directories, writes the torrc and checks
// the configuration with tor --verify-config, as the user tor runs as (so
// that an operator's torrc tor cannot read fails here).
func (t *Tor) prepareManaged(ctx context.Context) ([]string, error) {
	if err := t.prepareDirs(); err != nil {
		return nil, err
	}
	// tor reads these as its user; in the run directory (2750) no one
	// else reaches them.
	mode := os.FileMode(0o600)
	if t.runAs != nil {
		mode = 0o644
	}
	if err := writeFile(t.torrcPath(), []byte(t.torrc()), mode); err != nil {
		return nil, fmt.Errorf("write torrc: %w", err)
	}
	if err := writeFile(t.defaultsPath(), nil, mode); err != nil {
		return nil, fmt.Errorf("write torrc: %w", err)
	}
	args := t.args()
	if t.cfg.start != nil {
		return args, nil
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.torPath, append([]string{"--verify-config"}, args...)...)
	cmd.SysProcAttr = sysProcAttr(t.runAs)
	out, err := cmd.CombinedOutput()
	if err != nil {
		user := ""
		if t.runAs != nil {
			user = " as " + t.runAs.name
		}
		return nil, fmt.Errorf("%w (%s --verify-config%s: %v):\n%s", ErrBadTorrc, t.torPath, user, err, problemLines(string(out)))
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
func startTor(ctx context.Context, path string, args []string, out io.Writer, ra *runAs) (proc, error) {
	var cmd *exec.Cmd
	creator := process.CmdCreatorFunc(func(ctx context.Context, args ...string) (*exec.Cmd, error) {
		cmd = exec.CommandContext(ctx, path, args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = stopGrace
		cmd.SysProcAttr = sysProcAttr(ra)
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
		start = func(ctx context.Context, path string, args []string, out io.Writer) (proc, error) {
			return startTor(ctx, path, args, out, t.runAs)
		}
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	p, err := start(pctx, t.torPath, args, out)
	if err != nil {
		return fmt.Errorf("start tor: %w", err)
	}
	t.pid.Store(int64(p.Pid()))
	defer t.pid.Store(0)
	uid, _ := t.owner()
	t.log.Info("tor started", "pid", p.Pid(), "uid", uid, "data_dir", t.cfg.DataDir)
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
func (t *Tor) connectManaged(ctx context.Context, exited <-chan error) (*Conn, error) {
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
