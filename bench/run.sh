#!/usr/bin/env bash
# System benchmark, one command (as root):
#
#   bench/run.sh [tgbench run flags]
#
# Builds torgate and tgbench, then measures the kernel path and the router
# back to back in namespaces it creates (see bench/README.md). Everything it
# creates is removed on exit, interrupts included. Examples:
#
#   bench/run.sh                                  # full run, torgate alone, ~15 min
#   bench/run.sh -repeat 1 -iperf-time 3s -load-time 3s -mtus 1500
#   # the comparison table: torgate against the peers, by name (build them
#   # as bench/README.md says, "Peers: building and naming them")
#   bench/run.sh -router torgate -router hev=/tmp/peers/hev-socks5-tunnel -router tun2socks=/tmp/peers/tun2socks
#   # any other router: a command template (the contract in bench/README.md)
#   bench/run.sh -router 'other=/path/to/router --tun-fd {tunfd} --socks {socks}'
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run.sh: needs root (network namespaces, TUN)" >&2; exit 1; fi

id="tgb-$$"
bin=$(mktemp -d /tmp/tgbench-bin.XXXXXX)
cleanup() {
	# tgbench tears down on SIGINT/SIGTERM itself; this catches a hard kill
	# of it. Only namespaces of this run (prefix $id) are touched, and only
	# processes inside them.
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$id-" || true); do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# torgate is built as released (docs/operations.md, "Platforms and release builds"):
# without cgo, stripped. Its idle RSS is 17 MiB that way against 21 MiB
# for a plain go build (the symbol tables and libc are not mapped;
# measured 2026-12-02), and the peers are measured as released too.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/torgate" ./cmd/torgate
go build -o "$bin/tgbench" ./bench/cmd/tgbench
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- . 2>/dev/null; then commit="$commit+dirty"; fi
# Not exec: the EXIT trap must run after tgbench.
"$bin/tgbench" run -id "$id" -torgate "$bin/torgate" -commit "$commit" "$@"
