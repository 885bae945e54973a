package lan

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
)

// lanNet is three namespaces the test owns: ws (a workstation, veth to
// gw's eth1), gw (the gateway, forwarding on, a route to far) and far (a
// host beyond the gateway that the LAN must never reach).
type lanNet struct {
	ws, gw, far string
	lan         string // the LAN namespace Open makes for the gateway's eth1
}

func ipc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLANNet(t *testing.T) *lanNet {
	t.Helper()
	nstest.RequireRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	n := &lanNet{ws: "tglws-" + id, gw: "tglgw-" + id, far: "tglfar-" + id}
	for _, ns := range []string{n.ws, n.gw, n.far} {
		ipc(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
		ipc(t, "-n", ns, "link", "set", "lo", "up")
	}
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+n.gw, &st); err != nil {
		t.Fatal(err)
	}
	n.lan = fmt.Sprintf("tg-eth1-%d", st.Ino)
	// Every LAN namespace Open made for this gateway, whatever the
	// interface.
	t.Cleanup(func() {
		pins, _ := filepath.Glob(fmt.Sprintf("/run/netns/tg-*-%d", st.Ino))
		for _, p := range pins {
			exec.Command("ip", "netns", "delete", filepath.Base(p)).Run()
		}
	})
	ipc(t, "link", "add", "veth-ws", "netns", n.ws, "type", "veth", "peer", "name", "eth1", "netns", n.gw)
	ipc(t, "link", "add", "veth-far", "netns", n.far, "type", "veth", "peer", "name", "eth2", "netns", n.gw)
	for _, c := range [][]string{
		{"-n", n.ws, "addr", "add", "10.152.152.11/18", "dev", "veth-ws"},
		{"-n", n.ws, "addr", "add", "fd19:7a2b::11/64", "dev", "veth-ws", "nodad"},
		{"-n", n.ws, "link", "set", "veth-ws", "up"},
		{"-n", n.ws, "route", "add", "default", "via", "10.152.152.10"},
		{"-n", n.ws, "-6", "route", "add", "default", "via", "fd19:7a2b::1"},
		{"-n", n.gw, "addr", "add", "10.152.152.10/18", "dev", "eth1"},
		{"-n", n.gw, "addr", "add", "fd19:7a2b::1/64", "dev", "eth1", "nodad"},
		{"-n", n.gw, "link", "set", "eth1", "up"},
		{"-n", n.gw, "addr", "add", "10.200.0.1/24", "dev", "eth2"},
		{"-n", n.gw, "link", "set", "eth2", "up"},
		{"-n", n.far, "addr", "add", "10.200.0.2/24", "dev", "veth-far"},
		{"-n", n.far, "link", "set", "veth-far", "up"},
		{"-n", n.far, "route", "add", "10.152.128.0/18", "via", "10.200.0.1"},
	} {
		ipc(t, c...)
	}
	// /proc/sys/net belongs to the network namespace of the thread that
	// opens it.
	if err := netns.Do(n.gw, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); err != nil {
		t.Fatalf("ip_forward: %v", err)
	}
	return n
}

// inGateway runs fn on a thread inside the gateway's network namespace
// with a sysfs of that namespace mounted (as "ip netns exec" does), which
// Open needs to find the macvtap's device number. The thread stays locked
// and dies with its goroutine: its mount namespace is private.
func inGateway(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make / private: %w", err)
			return
		}
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
			errc <- fmt.Errorf("mount sysfs: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func openIn(t *testing.T, ns string, ifaces ...string) (*Device, error) {
	t.Helper()
	var d *Device
	err := inGateway(ns, func() error {
		var err error
		d, err = Open(Config{Interfaces: ifaces})
		return err
	})
	if d != nil {
		t.Cleanup(func() { d.Close() })
	}
	return d, err
}

// rules returns "ip rule" (or "ip -6 rule") of ns, one rule a line.
func rules(t *testing.T, ns string, six bool) []string {
	t.Helper()
	args := []string{"-n", ns}
	if six {
		args = append(args, "-6")
	}
	out := ipc(t, append(args, "rule")...)
	var lines []string
	for l := range strings.Lines(out) {
		// An iif rule for an interface that does not exist (yet) shows
		// as "iif NAME [detached]".
		lines = append(lines, strings.ReplaceAll(strings.Join(strings.Fields(l), " "), " [detached]", ""))
	}
	return lines
}

func checkGuardOrder(t *testing.T, ns string) {
	t.Helper()
	for _, six := range []bool{false, true} {
		got := rules(t, ns, six)
		want := []string{"0: from all iif eth1 blackhole", "0: from all iif tg-eth1 blackhole", "1: from all lookup local"}
		if len(got) < 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Fatalf("ip -6=%v rule:\n%s\nwant it to begin with\n%s", six, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, l := range got[3:] {
			if strings.Contains(l, "lookup local") || strings.Contains(l, "blackhole") {
				t.Fatalf("extra rule %q", l)
			}
		}
	}
}

// reader collects the Device's packets for the test.
func reader(d *Device) <-chan []byte {
	ch := make(chan []byte, 64)
	go func() {
		bufs := [][]byte{make([]byte, 16+2000)}
		sizes := []int{0}
		for {
			n, err := d.Read(bufs, sizes, 16)
			if err != nil {
				close(ch)
				return
			}
			if n == 1 {
				select {
				case ch <- append([]byte(nil), bufs[0][16:16+sizes[0]]...):
				default:
				}
			}
		}
	}()
	return ch
}

// sendUDP sends one datagram from the workstation (its kernel resolves
// the gateway through our ARP/NDP answers).
func sendUDP(t *testing.T, ns, network, to string, payload []byte) {
	t.Helper()
	err := netns.Do(ns, func() error {
		c, err := net.Dial(network, to)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// awaitPayload waits for an L3 packet carrying payload.
func awaitPayload(t *testing.T, ch <-chan []byte, payload []byte) []byte {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatal("device closed")
			}
			if bytes.HasSuffix(p, payload) {
				return p
			}
		case <-deadline:
			t.Fatalf("no packet carrying %q arrived through Read", payload)
		}
	}
}

func udp4(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: 17, SrcAddr: taddr(src.Addr()), DstAddr: taddr(dst.Addr())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	x := header.PseudoHeaderChecksum(17, taddr(src.Addr()), taddr(dst.Addr()), uint16(len(u)))
	u.SetChecksum(^u.CalculateChecksum(checksumOf(u.Payload(), x)))
	return b
}

func checksumOf(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// listen opens a TCP listener inside ns that accepts and closes.
func listen(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// connect tries a TCP connection from ns.
func connect(ns, addr string) error {
	return netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func TestOpenLinux(t *testing.T) {
	n := newLANNet(t)
	listen(t, n.gw, "10.152.152.10:2222")
	listen(t, n.gw, "[fd19:7a2b::1]:2222")
	listen(t, n.far, "10.200.0.2:7777")
	// Controls: before torgate, the gateway's kernel answers and routes
	// (the leak this package exists to close).
	for _, a := range []string{"10.152.152.10:2222", "[fd19:7a2b::1]:2222", "10.200.0.2:7777"} {
		if err := connect(n.ws, a); err != nil {
			t.Fatalf("control: ws cannot reach %s before torgate: %v", a, err)
		}
	}
	ipc(t, "-n", n.ws, "neigh", "flush", "all")

	d, err := openIn(t, n.gw, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	checkGuardOrder(t, n.gw)
	if err := d.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	// The gateway's namespace routes nothing to the LAN any more, and
	// drops it without an ICMP error.
	for _, want := range []string{"blackhole 10.152.128.0/18", "blackhole fd19:7a2b::/64"} {
		if out := ipc(t, "-n", n.gw, "route", "show", "table", "main", "proto", "116") + ipc(t, "-n", n.gw, "-6", "route", "show", "proto", "116"); !strings.Contains(out, want) {
			t.Fatalf("no %q in the gateway's routes:\n%s", want, out)
		}
	}
	pkts := reader(d)

	// IPv4 and IPv6 from the workstation arrive through Read.
	sendUDP(t, n.ws, "udp4", "198.18.0.1:9", []byte("hello4"))
	p := awaitPayload(t, pkts, []byte("hello4"))
	if src := netip.AddrFrom4([4]byte(p[12:16])); src != ws4 {
		t.Fatalf("IPv4 source %v", src)
	}
	sendUDP(t, n.ws, "udp6", "[fd20::1]:9", []byte("hello6"))
	p = awaitPayload(t, pkts, []byte("hello6"))
	if src := netip.AddrFrom16([16]byte(p[8:24])); src != ws6 {
		t.Fatalf("IPv6 source %v", src)
	}
	gwMACs := ipc(t, "-n", n.lan, "link", "show", "eth1")
	for _, six := range []string{"-4", "-6"} {
		out := ipc(t, "-n", n.ws, six, "neigh", "show", "dev", "veth-ws")
		if !strings.Contains(out, "lladdr") || !strings.Contains(gwMACs, strings.Fields(out[strings.Index(out, "lladdr"):])[1]) {
			t.Fatalf("workstation %s neighbours: %s", six, out)
		}
	}

	// A packet written by the Device reaches the workstation.
	var uc *net.UDPConn
	if err := netns.Do(n.ws, func() error {
		var err error
		uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.152.152.11:5555")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	msg := []byte("from the gateway")
	write(t, d, udp4(netip.MustParseAddrPort("198.18.0.1:9"), netip.MustParseAddrPort("10.152.152.11:5555"), msg))
	uc.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 100)
	k, from, err := uc.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:k], msg) || from.Addr().String() != "198.18.0.1" {
		t.Fatalf("workstation got %q from %v: %v", buf[:k], from, err)
	}

	// A second torgate on the same LAN is refused.
	if _, err := openIn(t, n.gw, "eth1"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Open: %v, want ErrBusy", err)
	}

	// Restart: same rules, same macvtap, traffic again.
	before4, before6 := rules(t, n.gw, false), rules(t, n.gw, true)
	d.Close()
	d, err = openIn(t, n.gw, "eth1")
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if a, b := rules(t, n.gw, false), rules(t, n.gw, true); strings.Join(a, "\n") != strings.Join(before4, "\n") || strings.Join(b, "\n") != strings.Join(before6, "\n") {
		t.Fatalf("rules changed on restart:\n%v\n%v", a, b)
	}
	pkts = reader(d)
	ipc(t, "-n", n.ws, "neigh", "flush", "all")
	sendUDP(t, n.ws, "udp4", "198.18.0.1:9", []byte("again"))
	awaitPayload(t, pkts, []byte("again"))

	// The LAN link goes down: writes are counted drops, Ready says so;
	// back up, traffic flows again without a restart.
	ipc(t, "-n", n.lan, "link", "set", "eth1", "down")
	write(t, d, udp4(netip.MustParseAddrPort("198.18.0.1:9"), netip.MustParseAddrPort("10.152.152.11:5555"), []byte("lost")))
	if err := d.Ready(); err == nil || !strings.Contains(err.Error(), "down") {
		t.Fatalf("Ready with eth1 down: %v", err)
	}
	ipc(t, "-n", n.lan, "link", "set", "eth1", "up")
	deadline := time.Now().Add(15 * time.Second)
	for d.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Ready after eth1 up: %v", d.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ipc(t, "-n", n.ws, "neigh", "flush", "all")
	for i := 0; ; i++ {
		// The veth may take a moment to carry again; resend until seen.
		sendUDP(t, n.ws, "udp4", "198.18.0.1:9", []byte("after flap"))
		select {
		case p := <-pkts:
			if bytes.HasSuffix(p, []byte("after flap")) {
				i = -1
			}
		case <-time.After(time.Second):
		}
		if i < 0 {
			break
		}
		if i > 15 {
			t.Fatal("no traffic after the link came back")
		}
	}
	write(t, d, udp4(netip.MustParseAddrPort("198.18.0.1:9"), netip.MustParseAddrPort("10.152.152.11:5555"), msg))
	uc.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		k, _, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("workstation after flap: %v", err)
		}
		if bytes.Equal(buf[:k], msg) {
			break
		}
	}
	t.Logf("drops after the flap: write_error=%d no_neighbour=%d", d.Stats().Drop("write_error"), d.Stats().Drop("no_neighbour"))

	// torgate gone (descriptor closed, macvtap up, kernel would take
	// over): the gateway's own services and the route beyond stay shut.
	// Static neighbours make sure the frames reach the gateway.
	mac := strings.Fields(gwMACs[strings.Index(gwMACs, "link/ether"):])[1]
	ipc(t, "-n", n.ws, "neigh", "replace", "10.152.152.10", "lladdr", mac, "dev", "veth-ws", "nud", "permanent")
	ipc(t, "-n", n.ws, "neigh", "replace", "fd19:7a2b::1", "lladdr", mac, "dev", "veth-ws", "nud", "permanent")
	d.Close()
	for _, a := range []string{"10.152.152.10:2222", "[fd19:7a2b::1]:2222", "10.200.0.2:7777"} {
		if err := connect(n.ws, a); err == nil {
			t.Errorf("after torgate stopped, ws reached %s", a)
		}
	}
	checkGuardOrder(t, n.gw)
	if !strings.Contains(ipc(t, "-n", n.lan, "-d", "link", "show", "tg-eth1"), "passthru") {
		t.Fatal("macvtap gone after Close")
	}

	// lan down: everything goes, local@0 is back, the kernel routes again.
	if err := inGateway(n.gw, func() error { return Down("eth1") }); err != nil {
		t.Fatal(err)
	}
	for _, six := range []bool{false, true} {
		r := rules(t, n.gw, six)
		if r[0] != "0: from all lookup local" || strings.Contains(strings.Join(r, "\n"), "blackhole") || strings.Contains(strings.Join(r[1:], "\n"), "lookup local") {
			t.Fatalf("rules after down:\n%s", strings.Join(r, "\n"))
		}
	}
	if out, err := exec.Command("ip", "-n", n.lan, "link").CombinedOutput(); err == nil {
		t.Fatalf("LAN namespace %s still there: %s", n.lan, out)
	}
	if out := ipc(t, "-n", n.gw, "route", "show", "proto", "116") + ipc(t, "-n", n.gw, "-6", "route", "show", "proto", "116"); out != "" {
		t.Fatalf("blackhole routes left after down:\n%s", out)
	}
	if out := ipc(t, "-n", n.gw, "addr", "show", "eth1"); !strings.Contains(out, "10.152.152.10/18") || !strings.Contains(out, "fd19:7a2b::1/64") || strings.Contains(out, "torgate") {
		t.Fatalf("eth1 after down:\n%s", out)
	}
	if err := connect(n.ws, "10.152.152.10:2222"); err != nil {
		t.Fatalf("after down the gateway's kernel should answer again: %v", err)
	}
}

// TestOpenErrors: bad input is one clear error and changes nothing.
func TestOpenErrors(t *testing.T) {
	n := newLANNet(t)
	for _, c := range [][]string{
		{"-n", n.gw, "link", "add", "dummy0", "type", "veth", "peer", "name", "peer0"},
		{"-n", n.gw, "link", "add", "dummy1", "type", "veth", "peer", "name", "peer1"},
		{"-n", n.gw, "addr", "add", "10.9.0.1/24", "dev", "dummy1"},
		{"-n", n.gw, "link", "add", "tg-dummy1", "type", "veth", "peer", "name", "peer9"},
		{"-n", n.gw, "link", "add", "br0", "type", "bridge"},
		{"-n", n.gw, "link", "add", "dummy2", "type", "veth", "peer", "name", "peer2"},
		{"-n", n.gw, "addr", "add", "10.9.1.1/24", "dev", "dummy2"},
		{"-n", n.gw, "link", "set", "dummy2", "master", "br0"},
		{"-n", n.gw, "link", "add", "dummy3", "type", "veth", "peer", "name", "peer3"},
		{"-n", n.gw, "addr", "add", "10.9.2.1/24", "dev", "dummy3"},
		{"-n", n.gw, "link", "add", "link", "dummy3", "name", "mv0", "type", "macvlan", "mode", "bridge"},
	} {
		ipc(t, c...)
	}
	linkNames := func() string {
		var names []string
		for l := range strings.Lines(ipc(t, "-n", n.gw, "-o", "link")) {
			names = append(names, strings.Fields(l)[1])
		}
		return strings.Join(names, " ")
	}
	links := linkNames()
	r4, r6 := rules(t, n.gw, false), rules(t, n.gw, true)
	tests := []struct {
		iface []string
		want  string
	}{
		{iface: []string{"nosuch0"}, want: "no such interface nosuch0"},
		{iface: []string{"dummy0"}, want: "ip addr add 10.152.152.10/18 dev dummy0"},
		{iface: []string{"dummy1"}, want: "not torgate's passthru macvtap"},
		{iface: []string{"dummy2"}, want: "is a port of another interface"},
		{iface: []string{"dummy3"}, want: "already carries macvlan mv0"},
		{iface: []string{"eth1", "nosuch0"}, want: "no such interface nosuch0"},
		{iface: []string{"eth1", "eth1"}, want: "given twice"},
	}
	for _, tt := range tests {
		_, err := openIn(t, n.gw, tt.iface...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%v) = %v, want an error containing %q", tt.iface, err, tt.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(%v): error spans lines: %q", tt.iface, err)
		}
		if l := linkNames(); l != links {
			t.Fatalf("Open(%v) changed links:\n%s\nwas:\n%s", tt.iface, l, links)
		}
		if a, b := rules(t, n.gw, false), rules(t, n.gw, true); strings.Join(a, "\n") != strings.Join(r4, "\n") || strings.Join(b, "\n") != strings.Join(r6, "\n") {
			t.Fatalf("Open(%v) left rules:\n%v\n%v", tt.iface, a, b)
		}
	}
}

// TestGuardBeforeInterface: "torgate lan guard" works for an interface
// that does not exist yet, and is idempotent.
func TestGuardBeforeInterface(t *testing.T) {
	n := newLANNet(t)
	for range 2 {
		if err := inGateway(n.gw, func() error { return Guard("eth7") }); err != nil {
			t.Fatal(err)
		}
	}
	for _, six := range []bool{false, true} {
		got := strings.Join(rules(t, n.gw, six), "\n")
		want := "0: from all iif eth7 blackhole\n0: from all iif tg-eth7 blackhole\n1: from all lookup local\n"
		if !strings.HasPrefix(got, strings.TrimSuffix(want, "\n")) || strings.Count(got, "blackhole") != 2 {
			t.Fatalf("rules:\n%s", got)
		}
	}
	if err := inGateway(n.gw, func() error { return Down("eth7") }); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, n.gw, false); got[0] != "0: from all lookup local" || len(got) != 3 {
		t.Fatalf("rules after down: %v", got)
	}
}

// TestOpenTapPrivateNode: when /dev has no node with the macvtap's device
// number (ifindexes repeat across namespaces), openTap makes a private
// node, opens it and leaves nothing behind.
func TestOpenTapPrivateNode(t *testing.T) {
	n := newLANNet(t)
	emptyDev := t.TempDir()
	err := inGateway(n.gw, func() error {
		ipcErr := exec.Command("ip", "link", "add", "link", "eth1", "name", "tg-eth1", "type", "macvtap", "mode", "passthru").Run()
		if ipcErr != nil {
			return ipcErr
		}
		l, err := net.InterfaceByName("tg-eth1")
		if err != nil {
			return err
		}
		sys, err := os.Open(sysClassNet)
		if err != nil {
			return err
		}
		defer sys.Close()
		f, err := openTap(sys, "tg-eth1", l.Index, emptyDev)
		if err != nil {
			return err
		}
		defer f.Close()
		target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if err != nil {
			return err
		}
		if !strings.HasSuffix(target, "(deleted)") {
			return fmt.Errorf("descriptor points at %q, want a deleted private node", target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(emptyDev); len(ents) != 0 {
		t.Fatalf("left %v in the device directory", ents)
	}
	if m, _ := filepath.Glob(os.TempDir() + "/torgate-tap*"); len(m) != 0 {
		t.Fatalf("left %v behind", m)
	}
}

// TestReattach: the LAN interface disappears (USB NIC unplugged, which
// takes the macvtap with it) and comes back with the same MAC: the guards
// hold meanwhile, Ready says gone, then the Device re-attaches by itself
// and traffic flows again without a restart.
func TestReattach(t *testing.T) {
	n := newLANNet(t)
	d, err := openIn(t, n.gw, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	pkts := reader(d)
	sendUDP(t, n.ws, "udp4", "198.18.0.1:9", []byte("before"))
	awaitPayload(t, pkts, []byte("before"))

	gwLink := ipc(t, "-n", n.lan, "link", "show", "eth1")
	mac := strings.Fields(gwLink[strings.Index(gwLink, "link/ether"):])[1]
	ipc(t, "-n", n.lan, "link", "del", "eth1") // takes veth-ws and tg-eth1 too
	deadline := time.Now().Add(10 * time.Second)
	for err := d.Ready(); !errors.Is(err, ErrGone); err = d.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("Ready after unplug: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkGuardOrder(t, n.gw)

	ipc(t, "link", "add", "veth-ws", "netns", n.ws, "type", "veth", "peer", "name", "eth1", "netns", n.gw)
	for _, c := range [][]string{
		{"-n", n.gw, "link", "set", "eth1", "address", mac},
		{"-n", n.gw, "link", "set", "eth1", "up"},
		{"-n", n.ws, "addr", "add", "10.152.152.11/18", "dev", "veth-ws"},
		{"-n", n.ws, "link", "set", "veth-ws", "up"},
		{"-n", n.ws, "route", "add", "default", "via", "10.152.152.10"},
	} {
		ipc(t, c...)
	}
	deadline = time.Now().Add(30 * time.Second)
	for d.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no re-attach: %v", d.Ready())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(ipc(t, "-n", n.lan, "-d", "link", "show", "tg-eth1"), "passthru") {
		t.Fatal("no new macvtap")
	}
	for i := 0; ; i++ {
		sendUDP(t, n.ws, "udp4", "198.18.0.1:9", []byte("after replug"))
		select {
		case p := <-pkts:
			if bytes.HasSuffix(p, []byte("after replug")) {
				checkGuardOrder(t, n.gw)
				return
			}
		case <-time.After(time.Second):
		}
		if i > 15 {
			t.Fatal("no traffic after the re-attach")
		}
	}
}
