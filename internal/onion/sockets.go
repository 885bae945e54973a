package onion

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/torgate/torgate/internal/reach"
)

// sockOwner is the user Tor runs as when it is not torgate's own: the
// sockets are shared with it through its primary group.
type sockOwner struct {
	name     string
	uid, gid int
}

// lookupOwner resolves Config.TorUser; nil when it is empty or torgate's
// own user.
func lookupOwner(name string) (*sockOwner, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, configErr("TorUser: %v", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, configErr("TorUser %q: uid %q or gid %q is not a number", name, u.Uid, u.Gid)
	}
	if uid == os.Geteuid() {
		return nil, nil
	}
	return &sockOwner{name: name, uid: uid, gid: gid}, nil
}

// prepareSocketDir creates SocketDir, clears sockets a crashed torgate
// left, and gives it its owner and mode (Config.TorUser).
func (s *Server) prepareSocketDir() error {
	dir := s.cfg.SocketDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("onion: socket directory: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("onion: socket directory: %w", err)
	}
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".sock") && de.Type()&os.ModeSocket != 0 {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	if s.own == nil {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("onion: socket directory: %w", err)
		}
		return nil
	}
	if err := s.reachable(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Lchown(dir, -1, s.own.gid); err != nil {
		return fmt.Errorf("onion: give the socket directory %s to tor's group (gid %d of %s; needs CAP_CHOWN): %w", dir, s.own.gid, s.own.name, err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("onion: socket directory: %w", err)
	}
	return nil
}

// listen opens one entry's socket and gives it Tor's group (0660), or
// keeps it torgate's (0600). The directory already keeps others out
// while the mode is set.
func (s *Server) listen(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("onion: listen: %w", err)
	}
	mode := os.FileMode(0o600)
	if s.own != nil {
		mode = 0o660
		if err := os.Lchown(path, -1, s.own.gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("onion: socket %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("onion: socket %s: %w", path, err)
	}
	return ln, nil
}

// errUnreachable: Tor's user cannot reach the socket directory. Fatal
// until the operator changes a directory's mode or SocketDir.
var errUnreachable = errors.New("onion: tor cannot reach the socket directory")

// reachable checks that Tor's user can search dir and every directory
// above it (internal/reach); dir itself, if torgate owns it, is made
// searchable (o+x), as torctl does for a managed Tor's data directory.
func (s *Server) reachable(dir string) error {
	made, err := reach.Ensure(dir, reach.Account{Name: s.own.name, UID: s.own.uid, GID: s.own.gid})
	if made {
		s.log.Info("directory made searchable for tor's user (o+x, not listable)", "dir", dir)
	}
	var re *reach.Error
	if errors.As(err, &re) {
		return fmt.Errorf("%w: %w, or choose another SocketDir", errUnreachable, err)
	}
	if err != nil {
		return fmt.Errorf("onion: socket directory: %w", err)
	}
	return nil
}
