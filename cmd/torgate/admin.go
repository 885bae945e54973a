package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/admin"
)

// adminTimeout bounds one admin request (NEWNYM waits for Tor).
const adminTimeout = 30 * time.Second

// serveAdmin starts the admin endpoint for r on addr; stop shuts it down
// and wait returns the server's failure (nil once ctx is done), for the
// app's group.
func serveAdmin(addr string, r *torgate.Router, gatherer prometheus.Gatherer, log *slog.Logger) (stop func(), wait func(context.Context) error, err error) {
	ln, err := admin.Listen(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--admin: %w", err)
	}
	h := admin.Handler(admin.Config{
		Gatherer: gatherer,
		Ready:    r.Ready,
		Healthy:  r.Healthy,
		Mode:     modeText(r),
		Details:  func() []string { return append(instanceDetails(r), onionDetails(r)...) },
		NewIdentity: func(src netip.Addr) error {
			err := r.NewIdentity(src)
			if errors.Is(err, torgate.ErrUnknownWorkstation) {
				return admin.NotFound(err)
			}
			return err
		},
		NewIdentityAll: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			return r.NewIdentityAll(ctx)
		},
		Logger: log.With("component", "admin"),
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("admin endpoint", "addr", ln.Addr().String())
	wait = func(ctx context.Context) error {
		select {
		case err := <-served:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("admin endpoint: %w", err)
		case <-ctx.Done():
			return nil
		}
	}
	return func() { srv.Close() }, wait, nil
}

// instanceDetails are /readyz's lines on each Tor instance, with several:
// /readyz is 200 only while every instance is ready; these say which
// instance's workstations are served.
func instanceDetails(r *torgate.Router) []string {
	n := r.TorInstances()
	if n == 1 {
		return nil
	}
	out := make([]string, 0, n)
	for k := range n {
		state := "ready"
		if err := r.TorInstanceErr(k); err != nil {
			state = "not ready: " + err.Error()
		}
		out = append(out, fmt.Sprintf("tor instance %d: %s", k, state))
	}
	return out
}

// onionDetails are /readyz's lines on the onion services.
func onionDetails(r *torgate.Router) []string {
	var out []string
	for _, s := range r.OnionServices() {
		state := "live"
		if !s.Live {
			state = "not published"
		}
		out = append(out, fmt.Sprintf("onion %s ports %v: %s", s.Address, s.Ports, state))
	}
	return out
}

// modeText names the router's mode for /readyz and logs.
func modeText(r *torgate.Router) string {
	if m := r.Mode(); m != torgate.ModeSocks {
		return m
	}
	return torgate.ModeSocks + ": plain SOCKS upstream, torgate cannot see Tor's bootstrap"
}

// newnymUsage is printed by "torgate newnym -h".
const newnymUsage = `usage: torgate newnym [--admin ADDR] [SOURCE]

Asks a running torgate for a new identity. With SOURCE (a workstation's
address), only that workstation's next connections get new circuits;
other workstations keep theirs. Without SOURCE, every workstation's
connections get new circuits and Tor is sent NEWNYM (at most once per 10
seconds, Tor's limit).

`

// cmdNewnym is "torgate newnym [SOURCE]": a client of the admin endpoint.
func cmdNewnym(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate newnym", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, newnymUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("admin", defaultAdmin, "torgate's admin endpoint: loopback IP:port, /path or unix:/path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Let flags follow the source too: "torgate newnym 10.0.0.5 --admin X".
	var pos []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		pos = append(pos, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
	}
	if len(pos) > 1 {
		fs.Usage()
		return fmt.Errorf("newnym: one SOURCE at most, got %d", len(pos))
	}
	q := ""
	if len(pos) == 1 {
		a, err := netip.ParseAddr(pos[0])
		if err != nil {
			return fmt.Errorf("newnym: SOURCE %q is not an IP address", pos[0])
		}
		q = "?source=" + a.String()
	}
	client, base, err := admin.Client(*addr)
	if err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/newnym"+q, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("newnym: torgate's admin endpoint %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("newnym: %s", strings.TrimSpace(string(body)))
	}
	if len(pos) == 1 {
		fmt.Fprintf(stdout, "new identity for %s: its next connections use new circuits\n", pos[0])
	} else {
		fmt.Fprintln(stdout, "new identity for every source")
	}
	return nil
}
