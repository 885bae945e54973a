//go:build unix

package reach

import (
	"os"
	"syscall"
)

// Owner returns a file's uid and gid.
func Owner(fi os.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}
