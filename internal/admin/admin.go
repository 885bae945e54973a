// Package admin serves torgate's local control surface over HTTP:
// Prometheus metrics, health and readiness probes, and new-identity
// requests. It listens only on loopback or a unix socket: anyone who can
// reach it can rotate identities and read traffic volumes.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/torgate/torgate/internal/endpoint"
)

// Config wires the endpoints to the router. Nil funcs disable their
// endpoint (404).
type Config struct {
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Healthy backs /healthz: nil error when the process works (the TUN
	// is up and the packet loop runs).
	Healthy func() error
	// Ready backs /readyz: nil error when traffic can flow (Tor
	// bootstrapped and the TUN up).
	Ready func() error
	// Mode describes how torgate reaches Tor ("managed", "attach",
	// "socks: torgate cannot see Tor's bootstrap"); /readyz names it in
	// both answers, so an operator knows what "ready" rests on. Optional.
	Mode string
	// Details, if set, are lines /readyz adds after its verdict, ready or
	// not: the state of parts that do not decide readiness (an onion
	// service not yet published does not stop the workstations' traffic).
	Details func() []string
	// NewIdentity rotates one source's circuits (POST /newnym?source=ADDR).
	NewIdentity func(src netip.Addr) error
	// NewIdentityAll rotates every circuit (POST /newnym).
	NewIdentityAll func() error
	// Logger; nil discards.
	Logger *slog.Logger
}

// Handler returns the admin HTTP handler.
func Handler(cfg Config) http.Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	probe := func(f func() error, mode string, details func() []string) http.HandlerFunc {
		if mode != "" {
			mode = " (mode " + mode + ")"
		}
		return func(w http.ResponseWriter, r *http.Request) {
			var more string
			if details != nil {
				for _, l := range details() {
					more += l + "\n"
				}
			}
			if err := f(); err != nil {
				msg := "not ok" + mode + ": " + err.Error()
				if more != "" {
					msg += "\n" + strings.TrimSuffix(more, "\n")
				}
				http.Error(w, msg, http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "ok"+mode+"\n"+more)
		}
	}
	if cfg.Healthy != nil {
		mux.HandleFunc("GET /healthz", probe(cfg.Healthy, "", nil))
	}
	if cfg.Ready != nil {
		mux.HandleFunc("GET /readyz", probe(cfg.Ready, cfg.Mode, cfg.Details))
	}
	mux.HandleFunc("POST /newnym", func(w http.ResponseWriter, r *http.Request) {
		src := r.URL.Query().Get("source")
		var err error
		switch {
		case src == "" && cfg.NewIdentityAll != nil:
			err = cfg.NewIdentityAll()
		case src != "" && cfg.NewIdentity != nil:
			a, perr := netip.ParseAddr(src)
			if perr != nil {
				http.Error(w, "bad source address", http.StatusBadRequest)
				return
			}
			err = cfg.NewIdentity(a.Unmap())
		default:
			http.NotFound(w, r)
			return
		}
		var nf notFound
		switch {
		case errors.As(err, &nf):
			// No such workstation: the request is wrong, not torgate.
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case err != nil:
			log.Warn("new identity failed", "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		log.Info("new identity", "scope", scope(src))
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// NotFound marks err as naming something that does not exist (a
// workstation no one is): the endpoint answers 404, not 503.
func NotFound(err error) error { return notFound{err} }

type notFound struct{ error }

func (e notFound) Unwrap() error { return e.error }

func scope(src string) string {
	if src == "" {
		return "all"
	}
	return "source"
}

// ErrNotLocal is returned by Listen for an address that is neither
// loopback nor a unix socket.
var ErrNotLocal = errors.New("admin: address must be loopback (127.0.0.0/8, ::1, localhost) or a unix socket path")

// Check reports whether Listen would accept addr, without listening or
// touching the file system: the syntax, a loopback address, and for a
// unix socket an existing parent directory.
func Check(addr string) error {
	ep, err := parse(addr)
	if err != nil {
		return err
	}
	if ep.Network == "unix" {
		dir := filepath.Dir(ep.Address)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("admin: directory %s of the socket does not exist", dir)
		}
		return nil
	}
	if !netip.MustParseAddrPort(ep.Address).Addr().IsLoopback() {
		return ErrNotLocal
	}
	return nil
}

// Listen opens the admin listener: "host:port" on loopback, or a unix
// socket given as an absolute path or "unix:PATH" (a stale socket file is
// replaced; the socket is made 0600).
func Listen(addr string) (net.Listener, error) {
	ep, err := parse(addr)
	if err != nil {
		return nil, err
	}
	if ep.Network == "unix" {
		os.Remove(ep.Address)
		ln, err := net.Listen("unix", ep.Address)
		if err != nil {
			return nil, fmt.Errorf("admin: listen %s: %w", ep.Address, err)
		}
		if err := os.Chmod(ep.Address, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("admin: chmod %s: %w", ep.Address, err)
		}
		return ln, nil
	}
	if !netip.MustParseAddrPort(ep.Address).Addr().IsLoopback() {
		return nil, ErrNotLocal
	}
	ln, err := net.Listen("tcp", ep.Address)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", ep.Address, err)
	}
	return ln, nil
}

// parse reads addr in torgate's endpoint syntax, where "localhost:PORT"
// stands for 127.0.0.1:PORT (without a name lookup).
func parse(addr string) (endpoint.Endpoint, error) {
	if port, ok := strings.CutPrefix(addr, "localhost:"); ok {
		addr = "127.0.0.1:" + port
	}
	ep, err := endpoint.Parse(addr)
	if err != nil {
		return ep, fmt.Errorf("admin: %w", err)
	}
	return ep, nil
}

// Client talks to a running torgate's admin endpoint (for "torgate
// newnym").
func Client(addr string) (*http.Client, string, error) {
	ep, err := parse(addr)
	if err != nil {
		return nil, "", err
	}
	if ep.Network == "unix" {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", ep.Address)
		}}
		return &http.Client{Transport: tr}, "http://torgate", nil
	}
	return &http.Client{}, "http://" + ep.Address, nil
}
