package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate"
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
	if err := fs.Parse(args); err != nil {
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
	cred, err := targetCredential(*userName)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log, err := newLogger(stderr, level, f.logFormat)
	if err != nil {
		return fmt.Errorf("--log-format: %w", err)
	}
	cfg, err := f.config()
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
		// A private mount namespace for the resolv.conf bind mount. No
		// Pdeathsig: if torgate dies the command lives on, but its
		// namespace loses the TUN and with it every route (fail closed).
		Cloneflags: syscall.CLONE_NEWNS,
	}

	dev, err := startInNewNetns(cfg.MTU, child)
	if err != nil {
		return err
	}
	cfg.TUNName, cfg.TUNFD, cfg.Device = "", 0, dev
	cfg.Logger = log
	r, err := torgate.New(cfg)
	if err != nil {
		child.Process.Kill()
		child.Wait()
		return err
	}
	r.Start()
	defer r.Close()

	waitErr := make(chan error, 1)
	go func() { waitErr <- child.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		child.Process.Signal(syscall.SIGTERM)
		err = <-waitErr
	}
	r.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())}
		}
		return exitError{code: ee.ExitCode()}
	}
	return err
}

// startInNewNetns creates a network namespace, a TUN inside it with the
// workstation addresses and default routes, and starts child in it. The
// namespace is anonymous: it disappears when the child exits and the TUN
// closes, so nothing outlives torgate.
func startInNewNetns(mtu int, child *exec.Cmd) (tun.Device, error) {
	type result struct {
		dev tun.Device
		err error
	}
	res := make(chan result, 1)
	go func() {
		// This thread enters the new namespace and never leaves it: it is
		// never unlocked, so Go discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("exec: new network namespace: %w", err)}
			return
		}
		dev, err := tun.CreateTUN("tg0", mtu)
		if err != nil {
			res <- result{err: fmt.Errorf("exec: create tun: %w", err)}
			return
		}
		if err := configureNamespace(dev); err != nil {
			dev.Close()
			res <- result{err: err}
			return
		}
		// fork happens on this locked thread, so the child inherits the
		// namespace.
		if err := child.Start(); err != nil {
			dev.Close()
			res <- result{err: fmt.Errorf("exec: start %s: %w", child.Args[2], err)}
			return
		}
		res <- result{dev: dev}
	}()
	r := <-res
	return r.dev, r.err
}

func configureNamespace(dev tun.Device) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("exec: lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("exec: lo up: %w", err)
	}
	name, err := dev.Name()
	if err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("exec: find %s: %w", name, err)
	}
	for _, p := range []netip.Prefix{execAddr4, execAddr6} {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("exec: address %s: %w", p, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("exec: %s up: %w", name, err)
	}
	for _, dst := range []*net.IPNet{
		{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	} {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("exec: default route %s: %w", dst, err)
		}
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
	return syscall.Exec(path, append([]string{path}, args[2:]...), env)
}
