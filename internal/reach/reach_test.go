package reach

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/torgate/torgate/internal/nstest/gate"
)

func TestSearchable(t *testing.T) {
	for _, c := range []struct {
		mode             os.FileMode
		duid, dgid, u, g int
		want             bool
	}{
		{0o700, 1, 1, 1, 2, true},  // owner
		{0o600, 1, 1, 1, 1, false}, // owner without x, group ignored
		{0o750, 0, 5, 7, 5, true},  // group
		{0o701, 0, 5, 7, 5, false}, // group without x, others ignored
		{0o701, 0, 0, 7, 7, true},  // others
		{0o700, 0, 0, 7, 7, false},
	} {
		if got := Searchable(c.mode, c.duid, c.dgid, c.u, c.g); got != c.want {
			t.Errorf("Searchable(%v, %d, %d, %d, %d) = %v", c.mode, c.duid, c.dgid, c.u, c.g, got)
		}
	}
}

// TestEnsure: the directory itself is opened for others when torgate owns
// it; a directory above that the account cannot search is an *Error naming
// it, and is left as it was.
func TestEnsure(t *testing.T) {
	if os.Geteuid() != 0 {
		if gate.CI() {
			t.Fatal("needs root (another account's view of the tree), and CI runs as root")
		}
		t.Skip("needs root: another account's view of the tree")
	}
	top := t.TempDir()
	os.Chmod(filepath.Dir(top), 0o755) // t.TempDir's parent is 0700
	os.Chmod(top, 0o755)
	dir := filepath.Join(top, "a")
	os.Mkdir(dir, 0o700)
	other := Account{Name: "nobody", UID: 65534, GID: 65534}
	made, err := Ensure(dir, other)
	if err != nil || !made {
		t.Fatalf("Ensure = %v, %v; want made", made, err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o701 {
		t.Errorf("mode %v, want 0701", fi.Mode().Perm())
	}
	os.Chmod(top, 0o700)
	inner := filepath.Join(dir, "b")
	os.Mkdir(inner, 0o700)
	_, err = Ensure(inner, other)
	var re *Error
	if !errors.As(err, &re) || re.Dir != dir && re.Dir != top {
		t.Fatalf("Ensure below a closed directory: %v, want an *Error naming it", err)
	}
}
