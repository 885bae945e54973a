//go:build linux

package main

import (
	"errors"
	"fmt"
	"strings"
)

// Named peers: routers the harness knows how to run, so that a sitting
// against them is one command,
//
//	bench/run.sh -router torgate -router hev=/tmp/peers/hev-socks5-tunnel -router tun2socks=/tmp/peers/tun2socks
//
// "-router NAME=PATH" (PATH a binary, no {…} placeholders) expands to the
// peer's template with PATH as its binary; "-router NAME" alone uses the
// binary's usual name from PATH ({torgate}, the binary run.sh built, for
// torgate). NAME may carry a suffix, "torgate-old=/tmp/torgate.old", to
// compare builds of one peer. A value with placeholders is a full template
// and is used as given. How to build each peer: bench/README.md, "Peers:
// building and naming them".
type peer struct {
	name string
	// bin is the binary when none is given.
	bin string
	// template is the router command, with {bin} for the binary.
	template string
	// config, if any, is a file the harness writes for each start of the
	// router (expanded like the template) and names as {config}.
	config string
	// what is a line for the usage text and the README.
	what string
}

// peers are the known peers, in the order usage lists them.
var peers = []peer{
	{
		name: "torgate",
		bin:  "{torgate}",
		// The reference row: SOCKS over a unix socket as torgate reaches
		// its managed Tor in production, metrics served so that the
		// harness records its Go heap and goroutines during each run.
		template: "{bin} run --tun {tun} --addr '' --admin {metrics} --socks unix:{socksunix} --mtu {mtu}",
		what:     "torgate (this repository), SOCKS over the unix socket, /metrics scraped",
	},
	{
		name: "tun2socks",
		bin:  "tun2socks",
		// xjasonlyu/tun2socks v2 creates its TUN by name; warn keeps its
		// per-connection info lines out of the measurement. Double dashes:
		// v2.7.0 parses flags with pflag, which reads "-device" as the
		// shorthands -d -e -v ... (older releases take either).
		template: "{bin} --device tun://{tun} --proxy socks5://{socks} --mtu {mtu} --loglevel warn",
		what:     "xjasonlyu/tun2socks v2 (Go, gVisor)",
	},
	{
		name: "hev",
		bin:  "hev-socks5-tunnel",
		// heiher/hev-socks5-tunnel (C, lwIP) reads everything from a YAML
		// file. No tunnel address: the harness configures the TUN in the
		// workstation namespace (a move flushes addresses anyway). Other
		// settings are upstream's defaults (misc: task stack, TCP buffer,
		// timeouts).
		template: "{bin} {config}",
		config: `tunnel:
  name: {tun}
  mtu: {mtu}
socks5:
  address: {sockshost}
  port: {socksport}
misc:
  log-file: stderr
  log-level: warn
`,
		what: "heiher/hev-socks5-tunnel (C, lwIP), YAML config written per run",
	},
}

// errUnknownPeer is returned for "-router NAME=PATH" when NAME is no known
// peer (and PATH, having no placeholders, is no template).
var errUnknownPeer = errors.New("unknown peer")

// findPeer returns the peer for a router name: the peer's own name, or
// the name with a "-suffix".
func findPeer(name string) (peer, bool) {
	for _, p := range peers {
		if name == p.name || strings.HasPrefix(name, p.name+"-") {
			return p, true
		}
	}
	return peer{}, false
}

// peerNames lists the known peers for messages.
func peerNames() string {
	var n []string
	for _, p := range peers {
		n = append(n, p.name)
	}
	return strings.Join(n, ", ")
}

// parseRouterSpec reads one -router value: "NAME=TEMPLATE", "NAME=PATH"
// or "NAME" for a known peer, or a bare TEMPLATE, which gets the name
// "router<i>" ("torgate" for the first). A NAME has no blank, '{' or '/'
// (so that "env X=1 {torgate} …" stays a template).
func parseRouterSpec(v string, i int) (routerSpec, error) {
	name, value, named := "", v, false
	if eq := strings.IndexByte(v, '='); eq > 0 && !strings.ContainsAny(v[:eq], " \t{/") {
		name, value, named = v[:eq], v[eq+1:], true
	}
	if !named {
		if p, ok := findPeer(v); ok && !strings.ContainsAny(v, " \t{/") {
			return p.spec(v, ""), nil
		}
		name = fmt.Sprintf("router%d", i)
		if i == 0 {
			name = "torgate"
		}
		return routerSpec{Name: name, Template: v}, nil
	}
	if strings.Contains(value, "{") {
		return routerSpec{Name: name, Template: value}, nil
	}
	p, ok := findPeer(name)
	if !ok {
		return routerSpec{}, fmt.Errorf("-router %q: %w %q (known: %s); or give a template with {tun} or {tunfd}", v, errUnknownPeer, name, peerNames())
	}
	return p.spec(name, value), nil
}

// spec is the peer under name with binary bin ("" for the default).
func (p peer) spec(name, bin string) routerSpec {
	if bin == "" {
		bin = p.bin
	} else {
		bin = shellQuote(bin)
	}
	return routerSpec{
		Name:     name,
		Peer:     p.name,
		Template: strings.ReplaceAll(p.template, "{bin}", bin),
		Config:   p.config,
	}
}

// shellQuote quotes s for sh unless it is made only of characters sh
// takes literally (so that templates in reports stay readable).
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%=", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// peersUsage is the -router flag's list of peers.
func peersUsage() string {
	var b strings.Builder
	for _, p := range peers {
		fmt.Fprintf(&b, "\n  %s=PATH: %s", p.name, p.what)
	}
	return b.String()
}
