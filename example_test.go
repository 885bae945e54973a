package torgate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	wgnet "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/torgate/torgate"
)

// Example embeds torgate with a TUN device the caller supplies. Here it is
// wireguard's in-memory TUN whose other end is a simulated workstation; in
// production it is TUNName, TUNFD or any golang.zx2c4.com/wireguard/tun
// Device. The upstream is a tiny SOCKS5 echo server standing in for Tor's
// SocksPort.
func Example() {
	upstream := startEchoSOCKS()
	defer upstream.Close()

	// The workstation: its own TCP/IP stack; dev is its network cable.
	dev, workstation, err := wgnet.CreateNetTUN([]netip.Addr{netip.MustParseAddr("10.152.152.11")}, nil, 1500)
	if err != nil {
		fmt.Println(err)
		return
	}

	r, err := torgate.New(torgate.Config{
		Device:    dev,                      // or TUNName: "torgate0", or TUNFD: 3
		SocksAddr: upstream.Addr().String(), // e.g. "127.0.0.1:9050" or "unix:/run/tor/socks"
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Until the router has evidence that its upstream answers, new flows
	// get a RST: wait for it, as a workstation's first connection would
	// otherwise be refused.
	if err := r.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	conn, err := workstation.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("192.0.2.1:7"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Fprint(conn, "hello")
	buf := make([]byte, 5)
	io.ReadFull(conn, buf)
	conn.Close()
	fmt.Println(string(buf))

	stop()
	fmt.Println(<-done)
	// Output:
	// hello
	// <nil>
}

// Example_managedTor is a router image's gateway: torgate creates the
// TUN, starts its own tor (as Debian's tor user), refuses flows and DNS
// until tor has bootstrapped, ends every flow when tor goes away and
// restarts it. It needs root and tor; the test TestTorIntegration/Example
// runs runGateway against a private Tor network.
func Example_managedTor() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runGateway(ctx, torgate.Config{
		TUNName:    "torgate0",
		Addr4:      netip.MustParsePrefix("10.152.152.10/18"),
		ManagedTor: &torgate.ManagedTor{DataDir: "/var/lib/torgate/tor", User: "debian-tor"},
		StateDir:   "/var/lib/torgate",
		Logger:     slog.Default(),
	})
	if err != nil {
		slog.Error("torgate stopped", "err", err)
		os.Exit(1)
	}
}

// runGateway is the embedder's whole gateway: build, announce readiness,
// run until ctx is done or a part (the TUN, tor's supervisor) fails.
func runGateway(ctx context.Context, cfg torgate.Config) error {
	r, err := torgate.NewContext(ctx, cfg) // starts tor, checks its torrc
	if err != nil {
		return err
	}
	go func() {
		if r.WaitReady(ctx) == nil {
			cfg.Logger.Info("tor bootstrapped: forwarding", "mode", r.Mode())
		}
	}()
	return r.Run(ctx) // closes r, and stops tor, at the end
}

// startEchoSOCKS serves SOCKS5 on loopback: any auth, CONNECT to anything
// succeeds and echoes.
func startEchoSOCKS() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 512)
				io.ReadFull(c, b[:2]) // version, nmethods
				io.ReadFull(c, b[:b[1]])
				c.Write([]byte{5, 2}) // username/password
				io.ReadFull(c, b[:2])
				io.ReadFull(c, b[:b[1]])
				io.ReadFull(c, b[:1])
				io.ReadFull(c, b[:b[0]])
				c.Write([]byte{1, 0})
				io.ReadFull(c, b[:4]) // request header
				switch b[3] {
				case 1:
					io.ReadFull(c, b[:4+2])
				case 4:
					io.ReadFull(c, b[:16+2])
				case 3:
					io.ReadFull(c, b[:1])
					io.ReadFull(c, b[:b[0]+2])
				}
				c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}
