//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/torgate/torgate"
)

// cmdRouter runs torgate in-process with a pprof endpoint on a unix
// socket, for profiling under the system benchmark:
//
//	tgbench run -router '{tgbench} router -tun {tun} -socks {socks} -mtu {mtu} -pprof /tmp/tg.sock'
//	curl --unix-socket /tmp/tg.sock -o cpu.pprof 'http://x/debug/pprof/profile?seconds=5'
//
// A unix socket path is shared by all network namespaces, so the profile
// can be fetched from the host while the router runs in the gateway's.
func cmdRouter(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tun := fs.String("tun", "", "TUN device to create")
	socksAddr := fs.String("socks", "", "SOCKS5 host:port")
	mtu := fs.Int("mtu", 1500, "MTU")
	pprofPath := fs.String("pprof", "", "serve net/http/pprof on this unix socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tun == "" || *socksAddr == "" {
		return errors.New("-tun and -socks are required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *pprofPath != "" {
		stop, err := servePprof(*pprofPath)
		if err != nil {
			return err
		}
		defer stop()
	}
	r, err := torgate.New(torgate.Config{TUNName: *tun, MTU: *mtu, SocksAddr: *socksAddr, Logger: log})
	if err != nil {
		return err
	}
	err = r.Run(ctx)
	st := r.Stats()
	log.Info("router stats", "packets_in", st.PacketsIn, "packets_out", st.PacketsOut,
		"time_wait_reclaimed", st.TimeWaitReclaimed, "drops", st.Drops)
	return err
}

// servePprof serves net/http/pprof on a unix socket until stop is called.
func servePprof(path string) (stop func(), err error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return func() { srv.Close(); os.Remove(path) }, nil
}
