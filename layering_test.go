package torgate

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/torgate/torgate"

// imports returns the module-local imports of every non-test Go file in
// the module, by package directory.
func imports(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		if out[dir] == nil {
			out[dir] = map[string]bool{}
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if p == module || strings.HasPrefix(p, module+"/") {
				out[dir][strings.TrimPrefix(strings.TrimPrefix(p, module), "/")] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLayering: the flow path goes down the layers, never back up (issue
// 20). No component imports the root package (only the commands on top
// of it, cmd and bench, do); netstack hands DNS to a hook and does not
// import dns; tunnel and dns need nothing of each other.
func TestLayering(t *testing.T) {
	for dir, ims := range imports(t) {
		if ims[""] && !strings.HasPrefix(dir, "cmd/") && !strings.HasPrefix(dir, "bench") {
			t.Errorf("%s imports the root package", dir)
		}
		for _, bad := range [][2]string{{"netstack", "dns"}, {"tunnel", "dns"}, {"dns", "tunnel"}, {"dns", "netstack"}, {"tunnel", "netstack"}} {
			if dir == bad[0] && ims[bad[1]] {
				t.Errorf("%s imports %s", bad[0], bad[1])
			}
		}
	}
}

// TestLifecycleDoesNotPoll: the Router's lifecycle waits on events (the
// gate's changes, Stack.Done, Tor's Done), never on a clock (issue 20).
// The upstream watch's ticker gathers evidence about a peer that reports
// nothing, and the state saver is a timer; both live elsewhere or say so.
func TestLifecycleDoesNotPoll(t *testing.T) {
	for _, f := range []string{"router.go", "tor.go", "config.go", "metrics.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"time.NewTicker", "time.Tick(", "time.Sleep("} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s uses %s", f, bad)
			}
		}
	}
}
