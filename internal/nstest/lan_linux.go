package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// RemoveLANNamespaces registers a Cleanup that deletes every LAN
// namespace torgate pinned for a gateway running in namespace gw
// (lan.NamespaceName: /run/netns/tg-IFACE-INODE), with what is inside,
// and returns the name the one for iface has.
func RemoveLANNamespaces(tb testing.TB, gw, iface string) string {
	tb.Helper()
	fi, err := os.Stat("/run/netns/" + gw)
	if err != nil {
		tb.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	tb.Cleanup(func() {
		pins, _ := filepath.Glob(fmt.Sprintf("/run/netns/tg-*-%d", ino))
		for _, p := range pins {
			exec.Command("ip", "netns", "delete", filepath.Base(p)).Run()
		}
	})
	return fmt.Sprintf("tg-%s-%d", iface, ino)
}
