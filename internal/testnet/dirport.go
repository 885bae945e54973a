package testnet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxDirDocument caps a DirPort document; a consensus of a few relays is
// a few kB, all server descriptors of 40 relays well under 1 MB.
const maxDirDocument = 8 << 20

// newDirTransport returns the transport for the authorities' DirPorts: no
// proxy, whatever the environment says, and no compression (tor could pick
// one Go can't read).
func newDirTransport() *http.Transport {
	return &http.Transport{
		Proxy:              nil,
		DisableCompression: true,
		DisableKeepAlives:  true,
	}
}

// dirGet fetches path from an authority. A 404 (no consensus yet) returns
// found=false and no error.
func (n *Network) dirGet(ctx context.Context, nd *node, path string) (body string, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.dirAddr()+path, nil)
	if err != nil {
		return "", false, err
	}
	resp, err := n.dirTr.RoundTrip(req)
	if err != nil {
		// Transient: the authority may be restarting its listener.
		return "", false, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDirDocument))
	if err != nil {
		return "", false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, nil
	}
	return string(b), true, nil
}

// waitDescriptors waits until every authority has every relay's server
// descriptor, or descriptorWait passes. Meanwhile it keeps the first vote
// held through ctls.
func (n *Network) waitDescriptors(ctx context.Context, ctls []*Control) error {
	ctx, cancel := context.WithTimeout(ctx, descriptorWait)
	defer cancel()
	start := time.Now()
	lastLog, lastHold := start, start
	for _, a := range n.auths {
		err := n.poll(ctx, pollDir, func(ctx context.Context) (bool, error) {
			if time.Since(lastHold) > reholdEvery {
				lastHold = time.Now()
				if err := n.setVotingOffset(ctx, ctls, holdOffset(lastHold)); err != nil {
					return false, err
				}
			}
			body, ok, err := n.dirGet(ctx, a, "/tor/server/all")
			if err != nil {
				return false, err
			}
			have := map[string]bool{}
			if ok {
				have = routerNicknames(body)
			}
			var missing []string
			for _, r := range n.relays {
				if !have[r.name] {
					missing = append(missing, r.name)
				}
			}
			if len(missing) > 0 && time.Since(lastLog) > 3*time.Second {
				lastLog = time.Now()
				n.log.Debug("testnet waiting for descriptors", "authority", a.name, "missing", missing, "after", time.Since(start))
			}
			return len(missing) == 0, nil
		})
		if err != nil {
			return fmt.Errorf("descriptors at %s: %w", a.name, err)
		}
	}
	return nil
}

// routerNicknames returns the nicknames of the "router NICK ..." lines of
// server descriptors.
func routerNicknames(doc string) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(doc))
	sc.Buffer(make([]byte, 0, 4096), maxDirDocument)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "router "); ok {
			if nick, _, ok := strings.Cut(rest, " "); ok {
				out[nick] = true
			}
		}
	}
	return out
}

// consensusFlags parses a consensus into nickname -> set of flags ("r" and
// "s" lines).
func consensusFlags(doc string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(doc))
	sc.Buffer(make([]byte, 0, 4096), maxDirDocument)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "r "):
			f := strings.Fields(line)
			if len(f) < 2 {
				cur = ""
				continue
			}
			cur = f[1]
			out[cur] = map[string]bool{}
		case strings.HasPrefix(line, "s ") && cur != "":
			for _, flag := range strings.Fields(line)[1:] {
				out[cur][flag] = true
			}
		}
	}
	return out
}

// consensusComplete reports whether nd serves a consensus that lists every
// relay as Running, the exits as Exit and the authorities as Guard and
// HSDir. A client started on an incomplete one waits for the next
// consensus plus a randomised refetch delay: 10-20 s more.
func (n *Network) consensusComplete(ctx context.Context, nd *node) (bool, error) {
	body, ok, err := n.dirGet(ctx, nd, "/tor/status-vote/current/consensus")
	if err != nil || !ok {
		return false, err
	}
	flags := consensusFlags(body)
	for _, r := range n.relays {
		f := flags[r.name]
		if !f["Running"] {
			return false, nil
		}
		switch r.role {
		case roleExit:
			if !f["Exit"] {
				return false, nil
			}
		case roleAuthority:
			if !f["Guard"] || !f["HSDir"] {
				return false, nil
			}
		}
	}
	return true, nil
}
