package main

import (
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/internal/netconf"
)

// Addresses inside an exec namespace. The gateway address is only what
// resolv.conf names: torgate answers port 53 on any address.
var (
	execAddr4    = netip.MustParsePrefix("10.152.152.11/18")
	execAddr6    = netip.MustParsePrefix("fd19:7a2b::11/64")
	execGateway4 = "10.152.152.10"
	// execServices are the gateway's addresses as the namespace reaches
	// the workstation services (SOCKS ports, control port): addresses
	// the namespace routes into the TUN, answered by torgate's stack.
	execServices = []netip.Addr{netip.MustParseAddr(execGateway4), netip.MustParseAddr("fd19:7a2b::10")}
)

// execNetns is a fresh network namespace held by one locked OS thread,
// with a TUN inside carrying the workstation addresses and default routes.
// The namespace is anonymous: it disappears when the command exits and the
// TUN closes, so nothing outlives torgate.
type execNetns struct {
	dev   tun.Device
	req   chan *exec.Cmd
	res   chan error
	freed chan struct{}
}

func newExecNetns(mtu int) (*execNetns, error) {
	ns := &execNetns{req: make(chan *exec.Cmd), res: make(chan error), freed: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and never leaves it: it is
		// never unlocked, so Go discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("exec: new network namespace: %w", err)
			return
		}
		dev, err := tun.CreateTUN("tg0", mtu)
		if err != nil {
			ready <- fmt.Errorf("exec: create tun: %w", err)
			return
		}
		if err := configureNamespace(dev); err != nil {
			dev.Close()
			ready <- err
			return
		}
		ns.dev = dev
		ready <- nil
		// fork happens on this locked thread, so the child inherits the
		// namespace.
		select {
		case cmd := <-ns.req:
			ns.res <- cmd.Start()
			// The child's Pdeathsig watches this thread: keep it until
			// the command is done.
			<-ns.freed
		case <-ns.freed:
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return ns, nil
}

// start runs cmd inside the namespace.
func (ns *execNetns) start(cmd *exec.Cmd) error {
	ns.req <- cmd
	if err := <-ns.res; err != nil {
		return fmt.Errorf("exec: start %s: %w", cmd.Args[2], err)
	}
	return nil
}

// release lets the namespace's thread go, once the command has exited
// (or if start was never called).
func (ns *execNetns) release() {
	select {
	case <-ns.freed:
	default:
		close(ns.freed)
	}
}

func configureNamespace(dev tun.Device) error {
	if err := netconf.Configure("lo", netconf.Link{}); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	name, err := dev.Name()
	if err != nil {
		return err
	}
	err = netconf.Configure(name, netconf.Link{
		Addrs:  []netip.Prefix{execAddr4, execAddr6},
		Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}
