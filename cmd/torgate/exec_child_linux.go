package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The command exec runs is started as a re-executed torgate, the child
// (__exec-child), inside the namespace: the child bind-mounts exec's
// resolv.conf over the system's in a private mount namespace, takes the
// target user's credentials and execs the command. Both die with torgate.

// execCommand prepares the command of o to start in the namespace: the
// user it runs as, its path, the resolv.conf naming torgate, and the
// child that will exec it. cleanup removes the resolv.conf once the
// command is done.
func execCommand(o execFlags, stdout, stderr io.Writer) (child *exec.Cmd, cleanup func(), err error) {
	cred, err := targetCredential(o.user)
	if err != nil {
		return nil, nil, err
	}
	path, err := exec.LookPath(o.argv[0])
	if err != nil {
		return nil, nil, fmt.Errorf("exec: %w", err)
	}
	resolv, err := writeResolvConf()
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() { os.Remove(resolv) }
	self, err := os.Executable()
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("exec: find own binary: %w", err)
	}
	return childCommand(self, resolv, path, o.argv[1:], cred, stdout, stderr), cleanup, nil
}

// writeResolvConf writes the resolv.conf the command sees: torgate's
// address as the only nameserver.
func writeResolvConf() (string, error) {
	resolv, err := os.CreateTemp("", "torgate-resolv-*.conf")
	if err != nil {
		return "", fmt.Errorf("exec: resolv.conf: %w", err)
	}
	fmt.Fprintf(resolv, "# written by torgate exec: every DNS query is answered through Tor\nnameserver %s\noptions edns0\n", execGateway4)
	resolv.Close()
	os.Chmod(resolv.Name(), 0o644)
	return resolv.Name(), nil
}

// childCommand is the re-executed torgate (self) that runs path with
// args as cred, with resolv as its resolv.conf. Its environment is
// torgate's, plus the credentials for the child (childEnv*, which the
// child removes).
func childCommand(self, resolv, path string, args []string, cred *syscall.Credential, stdout, stderr io.Writer) *exec.Cmd {
	child := exec.Command(self, append([]string{"__exec-child", resolv, path}, args...)...)
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
	return child
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
	if err := bindResolvConf(resolv); err != nil {
		return err
	}
	uid, _ := strconv.Atoi(os.Getenv(childEnv + "_UID"))
	gid, _ := strconv.Atoi(os.Getenv(childEnv + "_GID"))
	env := withoutChildEnv(os.Environ())
	if err := becomeUser(uid, gid); err != nil {
		return err
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

// bindResolvConf mounts resolv over the system's resolv.conf (or what its
// symlink points to), in the child's private mount namespace.
func bindResolvConf(resolv string) error {
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
	return nil
}

// withoutChildEnv is the command's environment: torgate's, without the
// variables that start with childEnv.
func withoutChildEnv(environ []string) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		if strings.HasPrefix(kv, childEnv) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// becomeUser drops root for uid and gid, with gid as the only group;
// root (0, 0) stays as it is.
func becomeUser(uid, gid int) error {
	if uid == 0 && gid == 0 {
		return nil
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("exec child: setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("exec child: setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("exec child: setuid: %w", err)
	}
	return nil
}
