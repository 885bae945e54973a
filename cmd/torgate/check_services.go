package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/torgate/torgate/socks"
)

// checkSOCKSPort connects to target's host and port through the
// gateway's SOCKS port for workstations, as Tor Browser does (SOCKS5 with
// a username and password, the name resolved by the exit).
func checkSOCKSPort(ctx context.Context, gateway string, port int, target *url.URL, timeout time.Duration) (string, error) {
	if gateway == "" {
		return "", skipError{reason: "no gateway address: give --gateway (or a nameserver in /etc/resolv.conf)"}
	}
	addr := net.JoinHostPort(gateway, strconv.Itoa(port))
	d, err := socks.NewDialer("tcp", addr)
	if err != nil {
		return "", err
	}
	host, p := target.Hostname(), target.Port()
	if p == "" {
		p = "80"
		if target.Scheme == "https" {
			p = "443"
		}
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", fmt.Errorf("--url port %q: %w", p, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.Connect(ctx, socks.HostPort(host, uint16(n)), socks.Auth{Username: "torgate-check", Password: "1"})
	if err != nil {
		var re *socks.ReplyError
		switch {
		case errors.As(err, &re):
			return "", fmt.Errorf("SOCKS port %s answered but the connection to %s failed (%v): Tor down, not bootstrapped, or the site unreachable", addr, target.Host, re.Reply)
		case strings.Contains(err.Error(), "connection refused"):
			return "", fmt.Errorf("no SOCKS port at %s (connection refused): the gateway is not torgate, or its --socks-ports leave %d out", addr, port)
		}
		return "", fmt.Errorf("SOCKS port %s: %w", addr, err)
	}
	c.Close()
	return fmt.Sprintf("SOCKS5 at %s connected to %s:%d through Tor", addr, host, n), nil
}

// checkControlPort talks to the gateway's filtered control port as Tor
// Browser does, and checks that it is filtered: GETINFO address (the
// gateway's public address) must be refused.
func checkControlPort(gateway string, port int) (string, error) {
	if gateway == "" {
		return "", skipError{reason: "no gateway address: give --gateway (or a nameserver in /etc/resolv.conf)"}
	}
	addr := net.JoinHostPort(gateway, strconv.Itoa(port))
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		if strings.Contains(err.Error(), "connection refused") {
			return "", fmt.Errorf("no control port at %s (connection refused): the gateway is not torgate, or its --control-port is off", addr)
		}
		return "", fmt.Errorf("control port %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	ask := func(cmd string) (string, []string, error) {
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			return "", nil, err
		}
		var lines []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", lines, fmt.Errorf("%s: %w", cmd, err)
			}
			l = strings.TrimRight(l, "\r\n")
			lines = append(lines, l)
			if len(l) >= 4 && l[3] == ' ' {
				return l[:3], lines, nil
			}
		}
	}
	if code, lines, err := ask("AUTHENTICATE"); err != nil || code != "250" {
		return "", fmt.Errorf("control port %s refused AUTHENTICATE: %v %v", addr, lines, err)
	}
	code, lines, err := ask("GETINFO status/circuit-established")
	if err != nil || code != "250" {
		return "", fmt.Errorf("control port %s: GETINFO status/circuit-established: %v %v", addr, lines, err)
	}
	established := "?"
	for _, l := range lines {
		if _, v, ok := strings.Cut(l, "status/circuit-established="); ok {
			established = v
		}
	}
	if code, lines, err := ask("GETINFO address"); err != nil || code == "250" {
		return "", fmt.Errorf("control port %s is not filtered: GETINFO address answered %v %v", addr, lines, err)
	}
	return fmt.Sprintf("control port at %s answers (circuit-established=%s) and refuses GETINFO address", addr, established), nil
}
