package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/internal/netconf"
	"github.com/torgate/torgate/internal/privs"
)

// Addresses inside an exec namespace. The gateway address is only what
// resolv.conf names: torgate answers port 53 on any address.
var (
	execAddr4    = netip.MustParsePrefix("10.152.152.11/18")
	execAddr6    = netip.MustParsePrefix("fd19:7a2b::11/64")
	execGateway4 = "10.152.152.10"
)

// childEnv marks the re-executed helper that sets up the mount namespace
// and drops privileges before exec'ing the user's command.
const childEnv = "TORGATE_EXEC_CHILD"

// cmdExec runs a program in a fresh network namespace whose only way out
// is torgate's TUN.
func cmdExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: torgate exec [flags] [--] CMD [ARGS...]")
		fs.PrintDefaults()
	}
	var f runFlags
	f.register(fs)
	userName := fs.String("user", "", "run CMD as this user (default: the sudo caller from SUDO_UID/SUDO_GID, else root)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for Tor to bootstrap before giving up with a diagnosis (exit status 1)")
	if err := parseRunFlags(fs, &f, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return errors.New("exec: no command given")
	}
	if os.Geteuid() != 0 {
		return errors.New("exec: needs root to create a network namespace and a TUN (try sudo)")
	}
	explicit := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { explicit[fl.Name] = true })
	if !explicit["admin"] {
		// Each exec is its own router; it must not fight "torgate run"
		// (or another exec) for the default admin address.
		f.tor.admin = ""
	}
	var notice string
	if f.socks == "" && f.tor.control == "" {
		// A managed Tor of its own, never a running torgate's, but with
		// the state of the execs before it (guards, consensus): see
		// execTorDir.
		base := f.stateDir
		if base == "" {
			base = defaultStateDir
		}
		dir, note, release, err := execTorDir(base)
		if err != nil {
			return err
		}
		defer release()
		f.tor.dataDir, notice = dir, note
	}
	if f.stateDir == "" && f.socks == "" && f.tor.control == "" {
		// The router's own state (the automap table) stays per run.
		dir, err := os.MkdirTemp("", "torgate-exec-")
		if err != nil {
			return fmt.Errorf("exec: state dir: %w", err)
		}
		defer os.RemoveAll(dir)
		f.stateDir = dir
	}
	cred, err := targetCredential(*userName)
	if err != nil {
		return err
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}

	resolv, err := os.CreateTemp("", "torgate-resolv-*.conf")
	if err != nil {
		return fmt.Errorf("exec: resolv.conf: %w", err)
	}
	defer os.Remove(resolv.Name())
	fmt.Fprintf(resolv, "# written by torgate exec: every DNS query is answered through Tor\nnameserver %s\noptions edns0\n", execGateway4)
	resolv.Close()
	os.Chmod(resolv.Name(), 0o644)

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("exec: find own binary: %w", err)
	}
	child := exec.Command(self, append([]string{"__exec-child", resolv.Name(), path}, argv[1:]...)...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, stdout, stderr
	child.Env = append(os.Environ(), childEnv+"=1",
		fmt.Sprintf("%s_UID=%d", childEnv, cred.Uid), fmt.Sprintf("%s_GID=%d", childEnv, cred.Gid))
	child.SysProcAttr = &syscall.SysProcAttr{
		// A private mount namespace for the resolv.conf bind mount.
		Cloneflags: syscall.CLONE_NEWNS,
		// If torgate dies the command dies with it: cut off from the
		// network it would otherwise run on unaware (its namespace loses
		// the TUN and every route: fail closed, but silently). The
		// kernel clears this at the setuid in execChild, which sets it
		// again. It fires when the forking thread exits: that is the
		// namespace's thread, which lives until release.
		Pdeathsig: syscall.SIGKILL,
	}

	ns, err := newExecNetns(f.mtu)
	if err != nil {
		return err
	}
	defer ns.release()
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
	if err := a.waitReady(ctx, *wait); err != nil {
		return err
	}
	if err := ns.start(child); err != nil {
		return err
	}
	// The command runs: from now on exec only signals it and Tor (privs.go).
	if err := dropPrivileges(a.log, f.tor.keepPrivileges, privs.SetOf(privs.CapKill)|a.router.Tor().Privileges()); err != nil {
		child.Process.Kill()
		child.Wait()
		return err
	}

	gctx, stopGroup := context.WithCancel(ctx)
	defer stopGroup()
	groupErr := make(chan error, 1)
	go func() { groupErr <- a.run(gctx) }()
	waitErr := make(chan error, 1)
	go func() { waitErr <- child.Wait() }()
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
		return fmt.Errorf("exec: %s killed: %w", argv[0], gerr)
	}
	stopGroup()
	<-groupErr
	a.close()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())}
		}
		return exitError{code: ee.ExitCode()}
	}
	return err
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

// execNetns is a fresh network namespace held by one locked OS thread,
// with a TUN inside carrying the workstation addresses and default routes.
// The namespace is anonymous: it disappears when the command exits and the
// TUN closes, so nothing outlives torgate.
type execNetns struct {
	dev   tun.Device
	req   chan *exec.Cmd
	res   chan error
	freed chan struct{}
}

func newExecNetns(mtu int) (*execNetns, error) {
	ns := &execNetns{req: make(chan *exec.Cmd), res: make(chan error), freed: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and never leaves it: it is
		// never unlocked, so Go discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("exec: new network namespace: %w", err)
			return
		}
		dev, err := tun.CreateTUN("tg0", mtu)
		if err != nil {
			ready <- fmt.Errorf("exec: create tun: %w", err)
			return
		}
		if err := configureNamespace(dev); err != nil {
			dev.Close()
			ready <- err
			return
		}
		ns.dev = dev
		ready <- nil
		// fork happens on this locked thread, so the child inherits the
		// namespace.
		select {
		case cmd := <-ns.req:
			ns.res <- cmd.Start()
			// The child's Pdeathsig watches this thread: keep it until
			// the command is done.
			<-ns.freed
		case <-ns.freed:
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return ns, nil
}

// start runs cmd inside the namespace.
func (ns *execNetns) start(cmd *exec.Cmd) error {
	ns.req <- cmd
	if err := <-ns.res; err != nil {
		return fmt.Errorf("exec: start %s: %w", cmd.Args[2], err)
	}
	return nil
}

// release lets the namespace's thread go, once the command has exited
// (or if start was never called).
func (ns *execNetns) release() {
	select {
	case <-ns.freed:
	default:
		close(ns.freed)
	}
}

func configureNamespace(dev tun.Device) error {
	if err := netconf.Configure("lo", netconf.Link{}); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	name, err := dev.Name()
	if err != nil {
		return err
	}
	err = netconf.Configure(name, netconf.Link{
		Addrs:  []netip.Prefix{execAddr4, execAddr6},
		Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}

// targetCredential picks the user CMD runs as.
func targetCredential(name string) (*syscall.Credential, error) {
	if name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("exec: --user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	if su, sg := os.Getenv("SUDO_UID"), os.Getenv("SUDO_GID"); su != "" && sg != "" {
		uid, err1 := strconv.Atoi(su)
		gid, err2 := strconv.Atoi(sg)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
		}
	}
	return &syscall.Credential{Uid: 0, Gid: 0}, nil
}

// execChild runs inside the new namespaces: bind-mount the resolv.conf,
// drop privileges, exec the command. It never returns on success.
func execChild(args []string) error {
	if len(args) < 2 {
		return errors.New("exec child: missing arguments")
	}
	resolv, path := args[0], args[1]
	parent := os.Getppid()
	// Make our mounts private first so the bind mount does not propagate
	// back to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("exec child: private mounts: %w", err)
	}
	target := "/etc/resolv.conf"
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		// systemd-resolved style symlink: mount over what it points to.
		if real, err := os.Readlink(target); err == nil {
			if real[0] != '/' {
				real = "/etc/" + real
			}
			target = real
		}
	}
	if err := unix.Mount(resolv, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("exec child: bind resolv.conf: %w", err)
	}
	uid, _ := strconv.Atoi(os.Getenv(childEnv + "_UID"))
	gid, _ := strconv.Atoi(os.Getenv(childEnv + "_GID"))
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if len(kv) >= len(childEnv) && kv[:len(childEnv)] == childEnv {
			continue
		}
		env = append(env, kv)
	}
	if uid != 0 || gid != 0 {
		if err := syscall.Setgroups([]int{gid}); err != nil {
			return fmt.Errorf("exec child: setgroups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("exec child: setgid: %w", err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("exec child: setuid: %w", err)
		}
	}
	// The change of credentials cleared the parent-death signal: set it
	// again, then make sure torgate did not die in between.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("exec child: pdeathsig: %w", err)
	}
	if os.Getppid() != parent {
		return errors.New("exec child: torgate exited")
	}
	return syscall.Exec(path, append([]string{path}, args[2:]...), env)
}
