package torctl

import (
	"os"
	"os/user"
	"testing"

	"github.com/torgate/torgate/internal/privs"
)

// TestPrivileges: only a managed tor of another user makes torgate keep
// capabilities (CAP_SETUID, CAP_SETGID, CAP_KILL); the end-to-end check
// that they suffice is cmd/torgate's TestRunManagedTorAfterDrop.
func TestPrivileges(t *testing.T) {
	if got := Keeps(false); got != 0 {
		t.Errorf("no Tor of torgate's: %v, want none", got)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	type privCase struct {
		name string
		cfg  Config
		want privs.Set
	}
	tests := []privCase{
		{name: "attach", cfg: Config{ControlAddr: "127.0.0.1:9051"}},
		{name: "managed as torgate's user", cfg: Config{DataDir: t.TempDir(), TorPath: "/bin/true", User: me.Username}},
		{name: "managed, no user", cfg: Config{DataDir: t.TempDir(), TorPath: "/bin/true"}},
	}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("debian-tor"); err == nil && u.Uid != "0" {
			tests = append(tests, privCase{name: "managed as debian-tor", cfg: Config{DataDir: t.TempDir(), TorPath: "/bin/true", User: "debian-tor"},
				want: privs.SetOf(privs.CapSetUID, privs.CapSetGID, privs.CapKill)})
		} else {
			t.Log("no debian-tor user: the user-switch case is not checked")
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tor, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := Keeps(tor.SwitchesUser()); got != tt.want {
				t.Errorf("Keeps = %v, want %v", got, tt.want)
			}
		})
	}
}
