package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/admin"
)

// TestNewnymUnknownWorkstation: "torgate newnym ADDR" of an address the
// router knows no workstation by is a one-line error and exit status 1,
// not a success (issue 22).
func TestNewnymUnknownWorkstation(t *testing.T) {
	known := netip.MustParseAddr("10.152.152.11")
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := admin.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.Handler(admin.Config{
		NewIdentity: func(a netip.Addr) error {
			if a != known {
				return fmt.Errorf("%w: %s has opened no connection through torgate in the last hour", torgate.ErrUnknownWorkstation, a)
			}
			return nil
		},
		NewIdentityAll: func() error { return nil },
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var out, errw bytes.Buffer
	err = run(context.Background(), []string{"newnym", "--admin", sock, "1.2.3.4"}, &out, &errw)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "unknown workstation: 1.2.3.4") || strings.Contains(err.Error(), "\n") || out.Len() != 0 {
		t.Errorf("newnym 1.2.3.4: %v (exit %d), stdout %q; want a one-line unknown workstation error, exit 1", err, exitCode(err), out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"newnym", "--admin", sock, known.String()}, &out, &errw); err != nil || !strings.Contains(out.String(), "new identity for "+known.String()) {
		t.Errorf("newnym %s: %v, %q", known, err, out.String())
	}
}
