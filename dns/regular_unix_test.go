//go:build unix

package dns

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newWithin runs New(cfg) and fails the test if it has not returned
// within a bound: a FIFO opened for reading blocks until a writer comes,
// which is what hung start-up in issue 19.
func newWithin(t *testing.T, cfg Config) (*Server, error) {
	t.Helper()
	type result struct {
		s   *Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := New(cfg)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.s != nil {
			t.Cleanup(func() { r.s.Close() })
		}
		return r.s, r.err
	case <-time.After(2 * time.Second):
		t.Fatalf("New(%+v) still blocked after 2s", cfg)
		return nil, nil
	}
}

// TestStateDirNotRegular (issue 19: a FIFO at automap.epoch hung start-up,
// silently, deaf to SIGTERM): what is not a regular file at the epoch path
// makes New fail at once with a *NotRegularError naming the path, and
// leaves it in place; at the state path, it is logged, naming the path,
// and the table starts empty, as for any unreadable state file.
func TestStateDirNotRegular(t *testing.T) {
	kinds := []struct {
		name string
		make func(t *testing.T, path string)
		mode fs.FileMode // type of what the path resolves to
	}{
		{name: "fifo", mode: fs.ModeNamedPipe, make: func(t *testing.T, path string) {
			must(t, syscall.Mkfifo(path, 0o600))
		}},
		{name: "symlink to a fifo", mode: fs.ModeNamedPipe, make: func(t *testing.T, path string) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			must(t, syscall.Mkfifo(fifo, 0o600))
			must(t, os.Symlink(fifo, path))
		}},
		{name: "device", mode: fs.ModeDevice | fs.ModeCharDevice, make: func(t *testing.T, path string) {
			// Making a device node needs root; a link to one is the
			// same thing to open.
			if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
				t.Skip("no /dev/null character device")
			}
			must(t, os.Symlink("/dev/null", path))
		}},
		{name: "directory", mode: fs.ModeDir, make: func(t *testing.T, path string) {
			must(t, os.Mkdir(path, 0o700))
		}},
	}
	for _, k := range kinds {
		t.Run(k.name+" at the epoch path", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "automap.epoch")
			k.make(t, path)
			before, err := os.Lstat(path)
			must(t, err)
			_, err = newWithin(t, Config{EpochFile: path})
			nr, ok := errors.AsType[*NotRegularError](err)
			if !ok || nr.Path != path || nr.Mode != k.mode {
				t.Fatalf("New: %v; want a *NotRegularError for %s, mode %v", err, path, k.mode)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("error %q does not name the path", err)
			}
			after, err := os.Lstat(path)
			if err != nil || after.Mode() != before.Mode() {
				t.Errorf("%s replaced: %v, %v", path, after, err)
			}
		})
		t.Run(k.name+" at the state path", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "automap.state")
			k.make(t, path)
			log, lb := debugLogger()
			s, err := newWithin(t, Config{StateFile: path, Logger: log})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if s.Len() != 0 {
				t.Errorf("loaded %d entries", s.Len())
			}
			if out := lb.String(); !strings.Contains(out, "dns state file ignored") ||
				!strings.Contains(out, path) || !strings.Contains(out, "not a regular file") {
				t.Errorf("not logged with the path:\n%s", out)
			}
		})
	}
	t.Run("symlink to a regular file", func(t *testing.T) {
		dir := t.TempDir()
		real := filepath.Join(dir, "real.epoch")
		must(t, os.WriteFile(real, nil, 0o600))
		path := filepath.Join(dir, "automap.epoch")
		must(t, os.Symlink(real, path))
		if _, err := newWithin(t, Config{EpochFile: path}); err != nil {
			t.Errorf("New: %v", err)
		}
	})
}

// TestWithin: a read that does not return is abandoned after the bound.
func TestWithin(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	start := time.Now()
	data, err := within(20*time.Millisecond, func() ([]byte, error) {
		<-stuck
		return []byte("late"), nil
	})
	if !errors.Is(err, ErrReadTimeout) || data != nil {
		t.Errorf("within = %q, %v; want ErrReadTimeout", data, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("within took %v", d)
	}
	data, err = within(time.Minute, func() ([]byte, error) { return []byte("ok"), nil })
	if string(data) != "ok" || err != nil {
		t.Errorf("within = %q, %v", data, err)
	}
}
