package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/privs"
	"github.com/torgate/torgate/internal/torctl"
)

// runtimeDir holds state that must outlive a torgate process but not a
// reboot (the automap address epoch when there is no --state-dir).
const runtimeDir = "/run/torgate"

// parseRunFlags parses args, then fills every flag the command line left
// unset from --config, if given.
func parseRunFlags(fs *flag.FlagSet, f *runFlags, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.configFile != "" {
		if err := applyConfigFile(fs, f.configFile); err != nil {
			return err
		}
	}
	f.changed = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.changed[fl.Name] = fl.Value.String() != fl.DefValue })
	return nil
}

// app is what "torgate run" and "torgate exec" share: logging, the
// router (with its Tor), metrics and the admin endpoint.
type app struct {
	log    *slog.Logger
	view   *progressView
	router *torgate.Router
	reg    *prometheus.Registry
	stop   []func()
	// tasks run beside the router under run's group: each returns nil
	// once ctx is done, or its failure.
	tasks []func(context.Context) error
}

// startApp brings torgate up as the flags say. dev, if not nil, replaces
// the TUN the flags describe (exec creates its own). warnings are logged
// first (validation's). The router is built but not started.
func startApp(ctx context.Context, f *runFlags, stderr io.Writer, dev tun.Device, warnings ...string) (*app, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	// Logs go through the progress view, which keeps a bootstrap progress
	// bar below them on a terminal.
	view := newProgressView(stderr, f.logFormat)
	log, err := newLogger(view, level, f.logFormat)
	if err != nil {
		return nil, fmt.Errorf("--log-format: %w", err)
	}
	view.log = log
	for _, w := range warnings {
		log.Warn("configuration", "warning", w)
	}
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	if dev != nil {
		cfg.TUNName, cfg.TUNFD, cfg.Device = "", 0, dev
		cfg.ServiceAddrs = f.serviceAddrs
	}
	if cfg.ManagedTor != nil && cfg.StateDir == "" {
		cfg.StateDir = defaultStateDir
	}
	if cfg.StateDir == "" {
		// Without a state dir the automap epoch still has to outlive the
		// process, or a restart could hand a workstation's cached virtual
		// address to another name: /run survives restarts, not reboots
		// (and after a reboot every cached answer's TTL has long run out).
		if err := os.MkdirAll(runtimeDir, 0o700); err == nil {
			cfg.DNSEpochFile = filepath.Join(runtimeDir, "dns-epoch")
		} else {
			log.Warn("no --state-dir and no runtime dir: virtual addresses start at a random epoch after a restart", "dir", runtimeDir, "err", err)
		}
	}
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("--state-dir: %w", err)
		}
	}
	cfg.Logger = log
	a := &app{log: log, view: view, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Registerer = prometheus.WrapRegistererWithPrefix("torgate_", a.reg)
	if f.logDest {
		log.Warn("destination logging is on: logs will name the sites workstations visit")
	}
	cfg.OnTorProgress = view.update
	r, err := torgate.NewContext(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.router = r
	a.stop = append(a.stop, func() { r.Close() })
	if f.tor.admin != "" {
		stop, wait, err := serveAdmin(f.tor.admin, r, a.reg, log)
		if err != nil {
			a.close()
			return nil, err
		}
		a.stop = append(a.stop, stop)
		a.tasks = append(a.tasks, wait)
	}
	log.Info("tor mode", "mode", modeText(r))
	if dev == nil { // run: set-up is done; exec drops once its command runs (privs.go)
		if err := dropPrivileges(log, f.tor.keepPrivileges, privs.SetOf(privs.CapNetAdmin)|torctl.Keeps(r.TorSwitchesUser())); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// run forwards until ctx is done or a part fails: the router (its packet
// loop and Tor supervisor) and the admin endpoint. The first failure ends
// them all and is returned, so the process exits non-zero rather than
// stay up unable to forward. The router is started if it was not.
func (a *app) run(ctx context.Context) error {
	return runTasks(ctx, a.log, append([]func(context.Context) error{a.router.Run}, a.tasks...))
}

// runTasks runs tasks until one returns, then ends the others (their
// context is cancelled) and returns the first failure, if any.
func runTasks(ctx context.Context, log *slog.Logger, tasks []func(context.Context) error) error {
	// Not errgroup.WithContext, which cancels at the first failure only: a
	// task returns nil only once ctx is done, so one that does ends the
	// rest too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g errgroup.Group
	for _, f := range tasks {
		g.Go(func() error {
			defer cancel()
			return f(ctx)
		})
	}
	err := g.Wait()
	if err != nil {
		log.Error("torgate stops", "err", err)
	}
	return err
}

// logStopped logs the end of a run once the app is closed: why it
// stopped (the signal, or the failure), how many flows the stop ended,
// how long torgate ran and how long the stop took.
func (a *app) logStopped(ctx context.Context, err error, began time.Time) {
	reason := "stopped"
	switch {
	case err != nil:
		reason = "failure: " + err.Error()
	case context.Cause(ctx) != nil:
		reason = context.Cause(ctx).Error() // "terminated signal received"
	}
	st := a.router.CloseStats()
	a.log.Info("torgate stopped", "reason", reason, "flows_ended", st.FlowsEnded,
		"uptime", time.Since(began).Round(time.Millisecond).String(), "shutdown", st.Took.Round(time.Millisecond).String())
}

// close tears down in reverse order of setup.
func (a *app) close() {
	for i := len(a.stop) - 1; i >= 0; i-- {
		a.stop[i]()
	}
	a.stop = nil
}

// waitReady blocks until Tor can carry traffic, at most wait. It fails
// with the diagnosis (Tor's last problem, likely causes, next step) when
// the time is up. In plain SOCKS mode it waits for the upstream to
// answer.
func (a *app) waitReady(ctx context.Context, wait time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := a.router.WaitReady(wctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		what := "tor"
		if a.router.Mode() == torgate.ModeSocks {
			what = "the SOCKS upstream"
		}
		return fmt.Errorf("%s not ready after %v: %s", what, wait, a.router.Diagnosis())
	}
	return nil
}
