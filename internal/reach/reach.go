// Package reach is the one rule by which torgate makes a directory
// reachable for another account (Tor's user, which runs with no
// supplementary groups): every directory from it up to / must be
// searchable by that account; the first one, if torgate owns it, is made
// searchable for others (o+x: they may pass through, not list); any other
// that is not searchable is an error naming it, for the operator to fix.
// torctl uses it for a managed Tor's data directory, onion for the
// sockets Tor connects to.
package reach

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Account is the user that must reach the directory.
type Account struct {
	Name     string
	UID, GID int
}

// Error is a directory above the target that Account cannot search and
// torgate may not change.
type Error struct {
	Account string
	Dir     string
	Mode    fs.FileMode
	Owner   int
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s cannot search %s (mode %v, owner %d): make it searchable (chmod o+x %s)",
		e.Account, e.Dir, e.Mode, e.Owner, e.Dir)
}

// Ensure checks that a can search dir and every directory above it, and
// makes dir itself searchable (o+x) if it is not and torgate owns it;
// made reports that change, for the caller to log. A missing directory is
// the error os.Stat gives.
func Ensure(dir string, a Account) (made bool, err error) {
	for d, first := dir, true; ; d, first = filepath.Dir(d), false {
		fi, err := os.Stat(d)
		if err != nil {
			return made, err
		}
		duid, dgid := Owner(fi)
		if !Searchable(fi.Mode(), duid, dgid, a.UID, a.GID) {
			if !first || duid != os.Geteuid() {
				return made, &Error{Account: a.Name, Dir: d, Mode: fi.Mode().Perm(), Owner: duid}
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return made, fmt.Errorf("make %s searchable: %w", d, err)
			}
			made = true
		}
		if d == filepath.Dir(d) {
			return made, nil
		}
	}
}

// Searchable reports whether uid/gid, with no supplementary groups, may
// search a directory with mode m owned by duid/dgid.
func Searchable(m os.FileMode, duid, dgid, uid, gid int) bool {
	switch {
	case duid == uid:
		return m&0o100 != 0
	case dgid == gid:
		return m&0o010 != 0
	}
	return m&0o001 != 0
}
