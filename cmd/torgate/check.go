package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/torgate/torgate/internal/admin"
)

// outsideProbe is where check sends traffic that must never get an answer
// from outside: TEST-NET-2 (RFC 5737), which exists nowhere. Behind
// torgate the packets enter the TUN and stop there.
const outsideProbe = "198.51.100.53"

// cmdCheck is a self-test run from a workstation (inside "torgate exec",
// a namespace, a VM behind the gateway), as root or as a normal user. It
// prints one PASS/FAIL/SKIP line per check and fails if any check fails; a
// check skips (with the reason) only when this user lacks a privilege the
// check needs, never because of what it found.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "http://check.torproject.org/", "URL fetched through Tor (an .onion URL works: its name is resolved by the nameserver in /etc/resolv.conf, which must be torgate)")
	adminAddr := fs.String("admin", "", "torgate's admin endpoint (loopback or unix socket) to ask whether Tor is bootstrapped; optional")
	timeout := fs.Duration("timeout", 60*time.Second, "time limit for the fetch (Tor circuits take seconds)")
	gateway := fs.String("gateway", "", "the gateway's address for the SOCKS and control port checks (default: the nameserver in /etc/resolv.conf)")
	socksPort := fs.Int("socks-port", 9150, "the gateway's SOCKS port to check (Tor Browser's); 0 skips")
	controlPort := fs.Int("control-port", 9051, "the gateway's filtered control port to check; 0 skips")
	dnsName := fs.String("dns-name", "", "name to look up (default: the URL's host, or check.torproject.org when that is an address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check: unexpected argument %q (-h lists the flags)", fs.Arg(0))
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--url: %q is not an absolute URL", *target)
	}
	c := &checker{out: stdout}

	c.run("route", checkRoute)
	if *adminAddr != "" {
		c.run("tor", func() (string, error) { return checkReady(ctx, *adminAddr) })
	}
	name := *dnsName
	if name == "" {
		name = u.Hostname()
		if _, err := netip.ParseAddr(name); err == nil {
			name = "check.torproject.org"
		}
	}
	ns := resolvConfServer()
	gw := *gateway
	if gw == "" {
		gw = ns
	}
	nsAnswered := false
	c.run("dns", func() (string, error) {
		rcode, _, msg, err := checkDNS(ns, name)
		nsAnswered = rcode >= 0
		return msg, err
	})
	// A gateway that is down (torgate stopped, the LAN closed) answers
	// nothing at all: say so, rather than let the intercept check's
	// silence read as a leak.
	reachable := true
	c.run("gateway", func() (string, error) {
		var msg string
		var err error
		var d net.Dialer
		reachable, msg, err = checkGateway(ctx, gw, nsAnswered, d.DialContext)
		return msg, err
	})
	c.run("dns-intercept", func() (string, error) {
		if !reachable {
			return "", fmt.Errorf("gateway unreachable: cannot tell whether port 53 is intercepted")
		}
		// Any answer at all from an address where no resolver exists
		// (SERVFAIL included) can only come from torgate.
		rcode, _, _, err := checkDNS(outsideProbe, name)
		if rcode < 0 {
			return "", fmt.Errorf("query to %s (a resolver that does not exist) got no answer, while the gateway %s answers: port 53 is not intercepted: %w", outsideProbe, gw, err)
		}
		return fmt.Sprintf("a query to %s, where no resolver exists, was answered (%s): port 53 is intercepted", outsideProbe, dnsmessage.RCode(rcode)), nil
	})
	c.run("fetch", func() (string, error) { return checkFetch(ctx, *target, ns, *timeout) })
	if *socksPort != 0 {
		c.run("socks-port", func() (string, error) { return checkSOCKSPort(ctx, gw, *socksPort, u, *timeout) })
	}
	if *controlPort != 0 {
		c.run("control-port", func() (string, error) { return checkControlPort(gw, *controlPort) })
	}
	c.run("udp-blocked", checkUDPBlocked)
	c.run("icmp-blocked", checkICMPBlocked)

	switch {
	case c.failed > 0:
		fmt.Fprintf(stdout, "%d of %d checks failed\n", c.failed, c.total)
		return exitError{code: 1}
	case c.skipped > 0:
		fmt.Fprintf(stdout, "%d of %d checks passed, %d skipped, none failed\n", c.total-c.skipped, c.total, c.skipped)
		return nil
	}
	fmt.Fprintf(stdout, "all %d checks passed\n", c.total)
	return nil
}

// gatewayTimeout bounds the TCP connect that tells whether the gateway
// is there: torgate accepts at once, and a host on the link that is not
// torgate resets at once; only an absent host (no ARP/ND answer) makes
// the connect wait. The kernel gives up on the neighbour after about 3 s.
const gatewayTimeout = 4 * time.Second

// checkGateway tells a gateway that is there from one that is not:
// reachable if its nameserver answered a DNS query (nsAnswered) or a TCP
// connect to its port 53 is accepted or reset (either is an answer from
// a host on the link). No answer at all (a time-out, no route or no
// neighbour) is a gateway that is down: torgate stopped, its LAN closed.
// dial is a net.Dialer's DialContext (a test's fake).
func checkGateway(ctx context.Context, gw string, nsAnswered bool, dial func(context.Context, string, string) (net.Conn, error)) (reachable bool, msg string, err error) {
	if gw == "" {
		return false, "", errors.New("no gateway: no nameserver in /etc/resolv.conf and no --gateway")
	}
	if nsAnswered {
		return true, gw + " answered DNS", nil
	}
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	c, err := dial(ctx, "tcp", net.JoinHostPort(gw, "53"))
	switch {
	case err == nil:
		c.Close()
		return true, gw + " accepted a TCP connection to port 53", nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return true, gw + " reset a TCP connection to port 53: a host is there (is it torgate?)", nil
	}
	return false, "", fmt.Errorf("gateway %s unreachable: no DNS answer, and a TCP connection to its port 53 was neither accepted nor reset (%v): is torgate running, and is this machine on its LAN?", gw, err)
}

// skipError is returned by a check that cannot run as this user; the
// reason says what would let it run.
type skipError struct{ reason string }

func (e skipError) Error() string { return e.reason }

type checker struct {
	out                    io.Writer
	total, failed, skipped int
}

func (c *checker) run(name string, f func() (string, error)) {
	c.total++
	msg, err := f()
	var skip skipError
	switch {
	case errors.As(err, &skip):
		c.skipped++
		fmt.Fprintf(c.out, "SKIP %-13s %s\n", name, skip.reason)
	case err != nil:
		c.failed++
		fmt.Fprintf(c.out, "FAIL %-13s %v\n", name, err)
	default:
		fmt.Fprintf(c.out, "PASS %-13s %s\n", name, msg)
	}
}

func checkReady(ctx context.Context, addr string) (string, error) {
	client, base, err := admin.Client(addr)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/readyz", nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("admin endpoint %s unreachable: %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("torgate not ready: %s", strings.TrimSpace(string(body)))
	}
	// The body names the mode: in plain SOCKS mode "ready" means only
	// that the SOCKS port answers, not that Tor bootstrapped.
	return "torgate ready: " + strings.TrimSpace(string(body)), nil
}

func resolvConfServer() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			return f[1]
		}
	}
	return ""
}

// checkDNS sends one A query over UDP to server and describes the answer.
// rcode is -1 when no valid answer arrived; addr is the first address.
func checkDNS(server, name string) (rcode int, addr netip.Addr, msg string, err error) {
	rcode = -1
	if server == "" {
		return rcode, addr, "", errors.New("no nameserver in /etc/resolv.conf")
	}
	q, err := dnsmessage.NewName(strings.TrimSuffix(name, ".") + ".")
	if err != nil {
		return rcode, addr, "", err
	}
	query := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x7467, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := query.Pack()
	if err != nil {
		return rcode, addr, "", err
	}
	conn, err := net.Dial("udp", net.JoinHostPort(server, "53"))
	if err != nil {
		return rcode, addr, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return rcode, addr, "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return rcode, addr, "", fmt.Errorf("no answer from %s: %w", server, err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:n]); err != nil {
		return rcode, addr, "", fmt.Errorf("bad answer from %s: %w", server, err)
	}
	rcode = int(resp.RCode)
	switch resp.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeServerFailure:
		return rcode, addr, "", fmt.Errorf("SERVFAIL from %s: torgate answers SERVFAIL while Tor is down or not bootstrapped", server)
	default:
		return rcode, addr, "", fmt.Errorf("%s answered %s", server, resp.RCode)
	}
	for _, a := range resp.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			addr = netip.AddrFrom4(r.A)
			return rcode, addr, fmt.Sprintf("%s -> %s (from %s)", name, addr, server), nil
		}
	}
	return rcode, addr, "", fmt.Errorf("%s gave no address for %s", server, name)
}

// checkFetch fetches target through the system's route. Go's resolver
// refuses .onion names (RFC 7686, golang.org/issue/13705), so an .onion
// host is looked up at nameserver ns, which behind torgate answers with a
// virtual address that torgate turns back into the name for Tor.
func checkFetch(ctx context.Context, target, ns string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return "", err
	}
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || !isOnion(host) {
			return d.DialContext(ctx, network, addr)
		}
		_, ip, _, err := checkDNS(ns, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: dial}}
	resp, err := client.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "connection refused") {
			return "", fmt.Errorf("connection refused: torgate refuses flows while Tor is down or not bootstrapped, or Tor could not reach the site: %w", err)
		}
		return "", err
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 500 {
		return "", fmt.Errorf("%s answered %s", target, resp.Status)
	}
	return fmt.Sprintf("%s: %s, %d bytes", target, resp.Status, n), nil
}

func isOnion(host string) bool {
	return strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".onion")
}

// checkUDPBlocked sends a datagram to a non-DNS port and expects silence.
func checkUDPBlocked() (string, error) {
	conn, err := net.Dial("udp", net.JoinHostPort(outsideProbe, "443"))
	if err != nil {
		return "dropped (no route at all)", nil
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	conn.Write([]byte("torgate check"))
	if _, err := conn.Read(make([]byte, 64)); err == nil {
		return "", fmt.Errorf("UDP to %s:443 got an answer: UDP leaves this machine", outsideProbe)
	}
	return "UDP to " + outsideProbe + ":443 got no answer", nil
}

// checkICMPBlocked pings and expects silence (no fake replies either). It
// uses a raw ICMP socket when it may (root, CAP_NET_RAW), else an
// unprivileged ICMP datagram socket, which Linux allows to the groups in
// net.ipv4.ping_group_range; with neither it skips.
func checkICMPBlocked() (string, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	raw := err == nil
	if !raw {
		c, err = icmp.ListenPacket("udp4", "0.0.0.0")
	}
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return "", skipError{reason: noICMPReason()}
		}
		return "", fmt.Errorf("open ICMP socket: %w", err)
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: 1, Data: []byte("torgate check")}}
	b, _ := msg.Marshal(nil)
	var dst net.Addr = &net.UDPAddr{IP: net.ParseIP(outsideProbe)}
	if raw {
		dst = &net.IPAddr{IP: net.ParseIP(outsideProbe)}
	}
	if _, err := c.WriteTo(b, dst); err != nil {
		return "dropped (no route at all)", nil
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return "ping " + outsideProbe + " got no reply", nil
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err == nil && m.Type == ipv4.ICMPTypeEchoReply && strings.HasPrefix(from.String(), outsideProbe) {
			return "", fmt.Errorf("ping %s got a reply: ICMP leaves this machine (or is faked)", outsideProbe)
		}
	}
}

// noICMPReason says why neither ICMP socket opened and what would allow one.
func noICMPReason() string {
	r, _ := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	return fmt.Sprintf("no ICMP socket for uid %d gid %d: not root, and net.ipv4.ping_group_range (%s) does not include gid %d (run as root, or widen ping_group_range)",
		os.Getuid(), os.Getgid(), strings.Join(strings.Fields(string(r)), " "), os.Getgid())
}
