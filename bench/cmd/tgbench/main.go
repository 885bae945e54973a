//go:build linux

// Command tgbench is torgate's system benchmark: it measures a TUN-to-SOCKS
// router against the kernel's own forwarding path, in network namespaces
// built for the run, and prints a Markdown table of ratios plus a JSON
// file.
//
// Usage (as root; bench/run.sh builds the binaries and runs this):
//
//	tgbench run --torgate ./torgate [flags]
//
// The other subcommands are the pieces the harness starts inside the
// namespaces: "socks" (a SOCKS5 server that dials real destinations and
// relays with splice), "serve" (the short-connection target) and "load"
// (the short-connection load generator: closed loop, open loop and
// reconnect). See bench/README.md for the tests, the router contract and
// how to measure another router.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/torgate/torgate/bench/socksd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tgbench:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: tgbench <command> [flags]

commands:
  run      the system benchmark (root): kernel path vs router, Markdown + JSON
  socks    a SOCKS5 server that connects to real destinations
  serve    the short-connection target server
  load     the short-connection load generator
  router   torgate in-process with a pprof endpoint, for profiling
  tor      the path through Tor (root): Whonix's TransPort vs torgate, on the private Tor network
  torload  the client of tgbench tor, run in a workstation namespace
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "socks":
		return cmdSocks(ctx, args[1:], stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "load":
		return cmdLoad(ctx, args[1:], stdout, stderr)
	case "router":
		return cmdRouter(ctx, args[1:], stderr)
	case "tor":
		return cmdTor(ctx, args[1:], stdout, stderr)
	case "torload":
		return cmdTorLoad(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func cmdSocks(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench socks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:1080", "address to listen on")
	unixPath := fs.String("unix", "", "also serve on a unix socket at this path (created here, removed on exit)")
	pprofPath := fs.String("pprof", "", "serve net/http/pprof on this unix socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pprofPath != "" {
		stop, err := servePprof(*pprofPath)
		if err != nil {
			return err
		}
		defer stop()
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := socksd.ListenAndServe(*listen, true, log)
	if err != nil {
		return err
	}
	// The unix endpoint is a second server in the same process, so that
	// the harness measures one SOCKS process whichever endpoint a router
	// uses. Relaying between a unix and a TCP socket splices both ways as
	// between two TCP sockets.
	var usrv *socksd.Server
	if *unixPath != "" {
		ln, err := net.Listen("unix", *unixPath)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listen %s: %w", *unixPath, err)
		}
		if usrv, err = socksd.New(socksd.Config{Listener: ln, Dial: true, Logger: log}); err != nil {
			ln.Close()
			srv.Close()
			return err
		}
	}
	<-ctx.Done()
	err = srv.Close()
	if usrv != nil {
		err = errors.Join(err, usrv.Close()) // removes the socket file
	}
	return err
}
