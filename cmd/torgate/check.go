package main

import (
	"bufio"
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
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/torgate/torgate/admin"
)

// outsideProbe is where check sends traffic that must never get an answer
// from outside: TEST-NET-2 (RFC 5737), which exists nowhere. Behind
// torgate the packets enter the TUN and stop there.
const outsideProbe = "198.51.100.53"

// cmdCheck is a self-test run from a workstation (inside "torgate exec",
// a namespace, a VM behind the gateway). It prints one PASS/FAIL line per
// check and fails if any check fails.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("torgate check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "http://check.torproject.org/", "URL fetched through Tor")
	adminAddr := fs.String("admin", "", "torgate's admin endpoint (loopback or unix socket) to ask whether Tor is bootstrapped; optional")
	timeout := fs.Duration("timeout", 60*time.Second, "time limit for the fetch (Tor circuits take seconds)")
	dnsName := fs.String("dns-name", "", "name to look up (default: the URL's host, or check.torproject.org when that is an address)")
	if err := fs.Parse(args); err != nil {
		return err
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
	c.run("dns", func() (string, error) {
		_, msg, err := checkDNS(ns, name)
		return msg, err
	})
	c.run("dns-intercept", func() (string, error) {
		// Any answer at all from an address where no resolver exists
		// (SERVFAIL included) can only come from torgate.
		rcode, _, err := checkDNS(outsideProbe, name)
		if rcode < 0 {
			return "", fmt.Errorf("query to %s (a resolver that does not exist) got no answer: port 53 is not intercepted: %w", outsideProbe, err)
		}
		return fmt.Sprintf("a query to %s, where no resolver exists, was answered (%s): port 53 is intercepted", outsideProbe, dnsmessage.RCode(rcode)), nil
	})
	c.run("fetch", func() (string, error) { return checkFetch(ctx, *target, *timeout) })
	c.run("udp-blocked", checkUDPBlocked)
	c.run("icmp-blocked", checkICMPBlocked)

	if c.failed > 0 {
		fmt.Fprintf(stdout, "%d of %d checks failed\n", c.failed, c.total)
		return exitError{code: 1}
	}
	fmt.Fprintf(stdout, "all %d checks passed\n", c.total)
	return nil
}

type checker struct {
	out           io.Writer
	total, failed int
}

func (c *checker) run(name string, f func() (string, error)) {
	c.total++
	msg, err := f()
	if err != nil {
		c.failed++
		fmt.Fprintf(c.out, "FAIL %-13s %v\n", name, err)
		return
	}
	fmt.Fprintf(c.out, "PASS %-13s %s\n", name, msg)
}

// checkRoute looks for an IPv4 default route through a TUN device.
func checkRoute() (string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] != "00000000" || fields[7] != "00000000" {
			continue
		}
		dev := fields[0]
		// Ask netlink, not /sys: sysfs may belong to another namespace.
		if link, err := netlink.LinkByName(dev); err != nil || link.Type() != "tuntap" {
			return "", fmt.Errorf("default route via %s, which is not a TUN device: traffic may bypass torgate", dev)
		}
		return "default route via TUN " + dev, nil
	}
	return "", errors.New("no IPv4 default route (is this a workstation behind torgate?)")
}

// checkReady asks the admin endpoint's /readyz.
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
// rcode is -1 when no valid answer arrived.
func checkDNS(server, name string) (rcode int, msg string, err error) {
	rcode = -1
	if server == "" {
		return rcode, "", errors.New("no nameserver in /etc/resolv.conf")
	}
	q, err := dnsmessage.NewName(strings.TrimSuffix(name, ".") + ".")
	if err != nil {
		return rcode, "", err
	}
	query := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x7467, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := query.Pack()
	if err != nil {
		return rcode, "", err
	}
	conn, err := net.Dial("udp", net.JoinHostPort(server, "53"))
	if err != nil {
		return rcode, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return rcode, "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return rcode, "", fmt.Errorf("no answer from %s: %w", server, err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:n]); err != nil {
		return rcode, "", fmt.Errorf("bad answer from %s: %w", server, err)
	}
	rcode = int(resp.RCode)
	switch resp.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeServerFailure:
		return rcode, "", fmt.Errorf("SERVFAIL from %s: torgate answers SERVFAIL while Tor is down or not bootstrapped", server)
	default:
		return rcode, "", fmt.Errorf("%s answered %s", server, resp.RCode)
	}
	for _, a := range resp.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return rcode, fmt.Sprintf("%s -> %s (from %s)", name, netip.AddrFrom4(r.A), server), nil
		}
	}
	return rcode, "", fmt.Errorf("%s gave no address for %s", server, name)
}

func checkFetch(ctx context.Context, target string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
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

// checkICMPBlocked pings and expects silence (no fake replies either).
func checkICMPBlocked() (string, error) {
	network, laddr := "udp4", "0.0.0.0"
	if os.Geteuid() == 0 {
		network = "ip4:icmp"
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return "", fmt.Errorf("open ICMP socket: %w", err)
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: 1, Data: []byte("torgate check")}}
	b, _ := msg.Marshal(nil)
	var dst net.Addr = &net.IPAddr{IP: net.ParseIP(outsideProbe)}
	if network == "udp4" {
		dst = &net.UDPAddr{IP: net.ParseIP(outsideProbe)}
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
